"""Dockerfile and Dockerfile.gpu: what can be checked without a Docker engine.

Parsed with dockerfile-parse: the files they COPY exist and survive .dockerignore, the
entry point is the lumenserve CLI, the user is not root, the server binds 0.0.0.0 only by
explicit flag, telemetry is off, the writable places are volumes, and the CPU and GPU
images each install exactly one ONNX Runtime build.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = ("Dockerfile", "Dockerfile.gpu")
HOME = "/var/lib/lumenserve"  # LUMENSERVE_HOME; k8s/base/deployment.yaml mounts an emptyDir there

Instruction = dict[str, Any]


@cache
def stages(name: str) -> tuple[tuple[Instruction, ...], ...]:
    """The Dockerfile's instructions, split into build stages (comments dropped)."""
    with (ROOT / name).open("rb") as fileobj:
        structure = DockerfileParser(fileobj=fileobj).structure
    result: list[list[Instruction]] = []
    for instr in structure:
        if instr["instruction"] == "FROM":
            result.append([])
        if instr["instruction"] != "COMMENT" and result:
            result[-1].append(instr)
    return tuple(tuple(stage) for stage in result)


def final(name: str) -> tuple[Instruction, ...]:
    return stages(name)[-1]


def values(instructions: tuple[Instruction, ...], kind: str) -> list[str]:
    return [i["value"] for i in instructions if i["instruction"] == kind]


def run_commands(name: str) -> str:
    return "\n".join(values(tuple(i for stage in stages(name) for i in stage), "RUN"))


def env_of(instructions: tuple[Instruction, ...]) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in values(instructions, "ENV"):
        for token in shlex.split(value):
            key, _, val = token.partition("=")
            env[key] = val
    return env


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore matching: `**` spans directories, `*` and `?` do not."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + "$")


def ignored(path: str) -> bool:
    """Whether `docker build` leaves `path` out of the context (the last matching rule wins)."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]  # the path or a parent
    result = False
    for raw in dockerignore_patterns():
        negate = raw.startswith("!")
        regex = _pattern_regex(raw.lstrip("!").strip("/"))
        if any(regex.match(c) for c in candidates):
            result = not negate
    return result


def test_dockerignore_matcher_follows_docker_rules() -> None:
    assert _pattern_regex("**/*.pyc").match("serving/protogen/x.pyc")
    assert _pattern_regex("**/*.pyc").match("x.pyc")
    assert not _pattern_regex("*.pyc").match("serving/x.pyc")
    assert not _pattern_regex("runs").match("training/runs.py")


def test_dockerignore_keeps_heavy_and_private_things_out() -> None:
    for path in (
        ".venv/bin/python",
        ".lumenserve/tmp/x",
        "runs/exp1/checkpoint.pt",
        "model_repository/tiny-image/1/model.onnx",
        "model_store/resnet.mar",
        ".git/config",
        ".pytest_cache/v/x",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/x",
        "serving/__pycache__/app.cpython-311.pyc",
        "lumenserve/bundle/__pycache__/reader.cpython-311.pyc",
        "tests/conftest.py",
        "lumenserve.egg-info/PKG-INFO",
    ):
        assert ignored(path), path
    for path in (
        "pyproject.toml",
        "README.md",
        "lumenserve/cli/__init__.py",
        "bench/runner.py",
        "serving/protogen/__init__.py",
    ):
        assert not ignored(path), path


@pytest.mark.parametrize("name", DOCKERFILES)
def test_copied_files_exist_and_reach_the_build(name: str) -> None:
    copies = [v for stage in stages(name) for v in values(stage, "COPY") if not v.startswith("--from=")]
    assert copies, "the image copies the project in"
    sources = [src for value in copies for src in shlex.split(value)[:-1]]
    for src in sources:
        assert (ROOT / src).exists(), f"{name}: COPY {src}: no such file in the repository"
        assert not ignored(src), f"{name}: COPY {src}: excluded by .dockerignore"
    # Every package pyproject installs is copied (or pip install . would miss it).
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    assert packages <= set(sources), packages - set(sources)
    assert {"pyproject.toml", "README.md"} <= set(sources)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_entrypoint_is_the_cli_and_user_is_not_root(name: str) -> None:
    last = final(name)
    assert [json.loads(v) for v in values(last, "ENTRYPOINT")] == [["lumenserve"]]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["lumenserve"] == "lumenserve.cli:main"
    users = values(last, "USER")
    assert users, f"{name}: the final stage sets no USER (it would run as root)"
    user, _, group = users[-1].partition(":")
    assert user not in {"0", "root"} and group not in {"0", "root"}
    assert int(user) == 10001  # the uid k8s/base/deployment.yaml runs as
    # The default command serves, and binds all interfaces only through the explicit flag.
    cmd = json.loads(values(last, "CMD")[-1])
    assert cmd[0] == "serve"
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert cmd[cmd.index("--repository") + 1] == "/models"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_runtime_environment_is_read_only_friendly(name: str) -> None:
    last = final(name)
    env = env_of(last)
    assert env["ORT_DISABLE_TELEMETRY"] == "1"
    assert env["LUMENSERVE_HOME"] == HOME
    assert env["TMPDIR"] == "/tmp"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert (env["LUMENSERVE_HTTP_PORT"], env["LUMENSERVE_GRPC_PORT"]) == ("8080", "8081")
    volumes = [path for v in values(last, "VOLUME") for path in json.loads(v)]
    assert set(volumes) == {"/tmp", HOME}
    assert values(last, "EXPOSE") == ["8080 8081"]
    healthcheck = values(last, "HEALTHCHECK")
    assert len(healthcheck) == 1 and "/v2/health/ready" in healthcheck[0] and "LUMENSERVE_HTTP_PORT" in healthcheck[0]


def test_cpu_image_installs_serve_and_the_cpu_extra_only() -> None:
    assert stages("Dockerfile")[0][0]["value"].startswith("${PYTHON_IMAGE}")
    with (ROOT / "Dockerfile").open("rb") as fileobj:
        assert all(image.startswith("python:3.11-slim") for image in DockerfileParser(fileobj=fileobj).parent_images)
    runs = run_commands("Dockerfile")
    assert 'pip install -c constraints/serve-cpu.txt ".[serve,cpu]"' in runs
    assert "[gpu]" not in runs and "onnxruntime-gpu" not in runs


def test_gpu_image_takes_cuda_from_the_wheels_and_never_cpu_onnxruntime() -> None:
    with (ROOT / "Dockerfile.gpu").open("rb") as fileobj:
        parents = DockerfileParser(fileobj=fileobj).parent_images
    # No CUDA base image: torch's CUDA wheels bring the libraries, the host brings the driver.
    assert all(image.startswith("python:3.11-slim") for image in parents), parents
    runs = run_commands("Dockerfile.gpu")
    assert 'pip install -c constraints/serve-gpu.txt ".[serve,gpu]"' in runs
    assert "[cpu]" not in runs and "cpu.txt" not in runs
    assert not re.search(r"onnxruntime(?!-gpu)[=<>~ \"']", runs), "the CPU onnxruntime must not be installed"
    assert "--index-url" not in runs, "the default index's torch is the CUDA build"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(dep.startswith("onnxruntime-gpu") for dep in extras["gpu"])
    assert all(dep.startswith("onnxruntime") and "gpu" not in dep for dep in extras["cpu"])
    text = (ROOT / "Dockerfile.gpu").read_text()
    assert ">= 580" in text and "7.5" in text  # driver and GPU generation are stated


def constraints(name: str) -> dict[str, str]:
    """``name==version`` lines of constraints/NAME (lower-case names, '_' as '-')."""
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints" / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pkg, _, version = line.partition("==")
            assert version, f"constraints/{name}: {line!r} is not an exact pin"
            pins[pkg.lower().replace("_", "-")] = version
    return pins


@pytest.mark.parametrize(("name", "runtime"), [("Dockerfile", "onnxruntime"), ("Dockerfile.gpu", "onnxruntime-gpu")])
def test_images_install_from_the_constraints_file_and_pin_what_the_project_pins(name: str, runtime: str) -> None:
    """torch/torchvision match pyproject.toml; every pip install uses the image's constraints."""
    runs = run_commands(name)
    file = "serve-gpu.txt" if name.endswith(".gpu") else "serve-cpu.txt"
    pins = constraints(file)
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for pkg in ("torch", "torchvision"):
        pin = next(d for d in deps if re.match(rf"{pkg}==", d))
        assert f'"{pin}"' in runs, f"{name} must install {pin}"
        assert pins[pkg] == pin.split("==")[1]
    installs = [
        cmd for cmd in re.split(r"&&|\n", runs) if re.search(r"\bpip install\b", cmd) and "--upgrade" not in cmd
    ]
    assert installs and all(f"-c constraints/{file}" in cmd for cmd in installs), installs
    # The serving stack is pinned; the training stack, TorchServe and the other ONNX Runtime are not there.
    assert {"grpcio", "protobuf", "captum", "starlette", "uvicorn", "prometheus-client", runtime} <= set(pins)
    other = "onnxruntime" if runtime == "onnxruntime-gpu" else "onnxruntime-gpu"
    assert not set(pins) & {"tensorboard", "scikit-learn", "torchserve", "torch-model-archiver", "peft", other}


@pytest.mark.parametrize("name", DOCKERFILES)
def test_images_carry_no_demo_assets(name: str) -> None:
    """The offline asset packages scripts/setup.sh installs for the demo stay out of the images."""
    runs = run_commands(name)
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assets = set(re.findall(r"[\w-]+==[\d.]+", setup.split("--no-deps", 1)[1].split("2>&1", 1)[0]))
    assert assets, "scripts/setup.sh lists the offline asset packages after --no-deps"
    assert not {a.split("==")[0] for a in assets} & set(re.findall(r"[\w-]+", runs))
    assert "seed_torch_hub" not in runs
