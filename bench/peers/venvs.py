"""One virtual environment per peer, built on first use under ``$LUMENSERVE_HOME/peers/<name>``.

The peers pin versions that differ from ours (grpcio, protobuf, fastapi...), so each gets its
own venv. ``requirements.txt`` inside it is the stamp: a venv whose stamp equals the pinned
list is reused; any other is rebuilt. ONNX Runtime, Pillow and NumPy take the versions
lumenserve runs with, so the comparison is between servers, not between library versions.
"""

from __future__ import annotations

import shutil
import subprocess
import venv
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from lumenserve.env import lumenserve_home

STAMP = "requirements.txt"


def _same_libraries() -> list[str]:
    return [f"onnxruntime=={version('onnxruntime')}", f"pillow=={version('pillow')}", f"numpy=={version('numpy')}"]


def requirements(name: str) -> list[str]:
    """The pinned requirements of peer ``name`` (``kserve`` or ``mlserver``)."""
    if name == "kserve":
        return ["kserve==0.21.0", *_same_libraries()]
    if name == "mlserver":
        # MLServer 1.7.1's worker processes crash at start with uvloop 0.22.
        return ["mlserver==1.7.1", "uvloop<0.22", *_same_libraries()]
    raise ValueError(f"unknown peer {name!r}: expected 'kserve' or 'mlserver'")


def venv_dir(name: str) -> Path:
    return lumenserve_home() / "peers" / name


def venv_python(name: str) -> Path:
    return venv_dir(name) / "bin" / "python"


def is_ready(name: str) -> bool:
    stamp = venv_dir(name) / STAMP
    return venv_python(name).exists() and stamp.is_file() and stamp.read_text() == _stamp_text(name)


def _stamp_text(name: str) -> str:
    return "\n".join(requirements(name)) + "\n"


def ensure_venv(name: str, log: Callable[[str], None] = print, timeout_s: float = 1200.0) -> Path:
    """The venv's python, installing the pinned requirements first when the stamp differs
    (a few minutes per peer; needs the package index once)."""
    if is_ready(name):
        return venv_python(name)
    root = venv_dir(name)
    log(f"[bench] installing {name} into {root} ({', '.join(requirements(name))}) ...")
    shutil.rmtree(root, ignore_errors=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    cmd = [str(venv_python(name)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           *requirements(name)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"installing {name} failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    (root / STAMP).write_text(_stamp_text(name))  # written last: a half-built venv has no stamp
    return venv_python(name)
