"""Helpers for the demo tests (no tests here): free ports, a real `lumenserve serve` child, report bundles."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

from lumenserve.bundle import finish_bundle, load_bundle, new_staging_dir

ROOT = Path(__file__).resolve().parent.parent
REPORT_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>Training report</title></head>
<body><h1>Training report: tiny-image</h1><p id="accuracy">test accuracy 0.91</p>
<img src="curves.png" alt="curves"></body></html>
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def add_report_version(repo: Path, name: str) -> int:
    """Publish the next version of ``name`` with the same model plus a ``report`` (html + png)."""
    source = load_bundle(max((p for p in (repo / name).iterdir() if p.name.isdigit()), key=lambda p: int(p.name)))
    staging = new_staging_dir(repo, name)
    artifacts = []
    for artifact in source.manifest.artifacts:
        dest = staging / artifact.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.root / artifact.path, dest)
        artifacts.append((artifact.path, artifact.kind))
    (staging / "report").mkdir()
    (staging / "report" / "report.html").write_text(REPORT_HTML)
    curves = Image.new("RGB", (160, 90), "white")
    ImageDraw.Draw(curves).line([(0, 80), (60, 30), (160, 10)], fill="purple", width=3)
    curves.save(staging / "report" / "curves.png")
    artifacts += [("report/report.html", "report"), ("report/curves.png", "report")]
    fields = source.manifest.model_dump(mode="json", exclude={"format_version", "version", "created_at", "artifacts"})
    return finish_bundle(staging, artifacts, **fields).manifest.version


def copy_bundle_as(repo: Path, source: Path, name: str) -> None:
    """Copy a bundle folder to ``repo/name/1`` under a new model name (the manifest's name too)."""
    dest = repo / name / "1"
    shutil.copytree(source, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["name"] = name
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2))


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("LUMENSERVE_HOME", str(ROOT / ".lumenserve"))
    env["ORT_DISABLE_TELEMETRY"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_http(url: str, timeout: float, child: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            raise RuntimeError(f"process exited with {child.returncode} before {url} answered")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within {timeout} s")


def stop(child: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20) -> int:
    if child.poll() is None:
        child.send_signal(sig)
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            raise
    return int(child.returncode)


@contextlib.contextmanager
def running_server(repo: Path, log: Path) -> Iterator[str]:
    """``lumenserve serve`` on free ports until every model is ready; yields the HTTP base URL."""
    http_port, grpc_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "lumenserve", "serve", "--repository", str(repo)]
    cmd += ["--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    with log.open("wb") as fh:
        child = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=fh, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http_port}"
    try:
        wait_http(f"{base}/v2/health/ready", 90, child)
        yield base
    finally:
        stop(child)
