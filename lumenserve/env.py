"""Process environment every lumenserve entry point sets before heavy imports.

- ``ORT_DISABLE_TELEMETRY=1``: onnxruntime's PyPI wheel otherwise phones home about a
  minute into a process. It must be set before onnxruntime is imported, so this module is
  imported by the ``__init__`` of every lumenserve package.
- Scratch files (TMPDIR, matplotlib, torch inductor, Hugging Face caches) go under
  ``$LUMENSERVE_HOME`` (default ``./.lumenserve``) instead of ``/tmp`` and ``~/.cache``,
  unless the user already set those variables.
- Hugging Face libraries run offline: models come from local folders only.

:func:`apply_omp_policy` is the one place that decides how torch's idle OpenMP threads wait;
every entry point (``lumenserve serve``, ``train``, ``export``, ``bench``, the test suite)
calls it before torch loads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

OmpRole = Literal["serve", "train"]
DEFAULT_GOMP_SPINCOUNT = 10000
"""libgomp spins this many times between parallel regions in a server, then sleeps."""


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


def apply_omp_policy(role: OmpRole, *, wait_policy: str = "", spincount: int = DEFAULT_GOMP_SPINCOUNT) -> None:
    """Set how torch's idle OpenMP threads wait, before torch loads; never overrides the user.

    - ``"train"`` (training, export, the test suite): ``OMP_WAIT_POLICY=PASSIVE``. On a shared
      2-core machine spinning threads of several processes slowed a fine-tuning step about
      10x; sleeping ones cost nothing measurable when the machine is otherwise idle.
    - ``"serve"`` (the server, and the benchmark's in-process contenders, which measure what
      the server does): ``OMP_WAIT_POLICY=wait_policy`` when one is given (the server's
      ``omp_wait_policy`` setting), else ``GOMP_SPINCOUNT=spincount`` unless the environment
      sets ``OMP_WAIT_POLICY``. A short spin keeps explanations as fast as ACTIVE (PASSIVE made
      Saliency 2.2x slower) while idle threads stop competing with ONNX Runtime at once.

    Setting these after torch has loaded changes nothing in this process (libgomp reads them
    once), only in the children it starts.
    """
    if role == "train":
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    elif wait_policy:
        os.environ.setdefault("OMP_WAIT_POLICY", wait_policy)
    elif "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", str(spincount))


M_ARENA_MAX = -8
"""glibc's mallopt parameter number for the arena limit (malloc.h)."""


def limit_malloc_arenas(arenas: int) -> bool:
    """glibc's ``mallopt(M_ARENA_MAX, arenas)`` for this process, unless ``MALLOC_ARENA_MAX``
    is set or ``arenas`` is 0. Takes effect only before a second thread first allocates (glibc
    fixes its arena limit then), so servers call it first thing. False where it did not apply
    (not glibc, or left to the environment)."""
    if arenas <= 0 or "MALLOC_ARENA_MAX" in os.environ:
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))


configure_process_env()
