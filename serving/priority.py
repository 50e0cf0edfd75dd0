"""Thread priorities: the event loop answers first, the heavy threads yield to it.

Predictions' compute threads (with the ONNX Runtime and torch threads they start) and the
preprocessing threads run ``compute_nice`` below the event loop, explanations another
``explain_nice`` below those. On a saturated machine the event loop then still takes every
arrival at once: a refused request is answered in milliseconds, an accepted one is queued
while the model works. Linux nice values are per thread and inherited by the threads a
thread starts.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("lumenserve.serving")

MAX_NICE = 19


def lower_priority(nice: int) -> None:
    """Lower the calling thread's CPU priority by ``nice`` from what it inherited (a server
    started under ``nice`` keeps its offsets; capped at 19; 0: unchanged)."""
    if nice <= 0:
        return
    try:
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(os.getpriority(os.PRIO_PROCESS, thread) + nice, MAX_NICE))
    except (OSError, AttributeError):  # pragma: no cover - not Linux, or not permitted
        log.debug("could not lower a thread's priority")


def thread_pool(workers: int, prefix: str, nice: int) -> ThreadPoolExecutor:
    """Threads ``nice`` below the priority of the thread that starts them (the event loop's
    for the serving pools: they start on their first task)."""
    return ThreadPoolExecutor(
        max_workers=workers, thread_name_prefix=prefix, initializer=lower_priority, initargs=(nice,)
    )
