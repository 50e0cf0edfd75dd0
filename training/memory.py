"""Peak memory of a stretch of training: CUDA's max allocated bytes, or the process's peak RSS on CPU.

On Linux the kernel's RSS high-water mark (VmHWM) is reset by writing ``5`` to
``/proc/self/clear_refs``, so the CPU figure covers only the measured stretch (it still
includes what was resident when it began: model, optimizer, data). Elsewhere the figure
falls back to the process's lifetime peak (``ru_maxrss``).
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


@dataclass
class PeakMemory:
    megabytes: float
    source: str
    """cuda_max_allocated, cpu_peak_rss (reset at the start) or cpu_peak_rss_lifetime."""


def _hwm_kib() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemoryMeter:
    """``start()`` resets the peak; ``read()`` returns it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset_ok = False

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            _CLEAR_REFS.write_text("5")
            self.reset_ok = _hwm_kib() is not None
        except OSError:
            self.reset_ok = False

    def read(self) -> PeakMemory:
        if self.device.type == "cuda":
            return PeakMemory(torch.cuda.max_memory_allocated(self.device) / 2**20, "cuda_max_allocated")
        hwm = _hwm_kib() if self.reset_ok else None
        if hwm is not None:
            return PeakMemory(hwm / 1024, "cpu_peak_rss")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return PeakMemory(peak / (2**20 if sys.platform == "darwin" else 1024), "cpu_peak_rss_lifetime")
