"""Child processes that do not outlive the process that started them."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the parent dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen`` (Linux only; None elsewhere): a server child
    drains and exits when its parent (the demo, the benchmark) dies, instead of lingering."""
    return _die_with_parent if sys.platform == "linux" else None
