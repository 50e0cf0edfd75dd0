"""Helpers for the demo tests: report bundles, renamed bundle copies, the demo child's environment."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

from PIL import Image, ImageDraw

from lumenserve.bundle import finish_bundle, load_bundle, new_staging_dir
from tests.support.server import ROOT

REPORT_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>Training report</title></head>
<body><h1>Training report: tiny-image</h1><p id="accuracy">test accuracy 0.91</p>
<img src="curves.png" alt="curves"></body></html>
"""


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
