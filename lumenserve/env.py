"""Process environment every lumenserve entry point sets before heavy imports.

- ``ORT_DISABLE_TELEMETRY=1``: onnxruntime's PyPI wheel otherwise phones home about a
  minute into a process. It must be set before onnxruntime is imported, so this module is
  imported by the ``__init__`` of every lumenserve package.
- Scratch files (TMPDIR, matplotlib, torch inductor, Hugging Face caches) go under
  ``$LUMENSERVE_HOME`` (default ``./.lumenserve``) instead of ``/tmp`` and ``~/.cache``,
  unless the user already set those variables.
- Hugging Face libraries run offline: models come from local folders only.
"""

from __future__ import annotations

import os
from pathlib import Path


def lumenserve_home() -> Path:
    """The folder for lumenserve's caches and scratch files."""
    return Path(os.environ.get("LUMENSERVE_HOME") or Path.cwd() / ".lumenserve").resolve()


def configure_process_env() -> None:
    """Set the variables above (idempotent; never overrides what the user set)."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    home = lumenserve_home()
    dirs = {
        "TMPDIR": home / "tmp",
        "TEMP": home / "tmp",
        "TMP": home / "tmp",
        "MPLCONFIGDIR": home / "matplotlib",
        "TORCHINDUCTOR_CACHE_DIR": home / "inductor",
        "TORCH_HOME": home / "torch",
        "HF_HOME": home / "huggingface",
    }
    for var, path in dirs.items():
        if not os.environ.get(var):
            os.environ[var] = str(path)
    for var in ("TMPDIR", "MPLCONFIGDIR"):
        Path(os.environ[var]).mkdir(parents=True, exist_ok=True)


configure_process_env()
