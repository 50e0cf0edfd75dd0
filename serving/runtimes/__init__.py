"""Runtimes: the same small interface over ONNX Runtime and TorchScript, chosen per model.

A runtime is built from a verified bundle and answers ``predict(feed) -> outputs`` with
numpy arrays keyed by the manifest's tensor names. ``predict`` blocks (it runs in the
model's compute thread, never on the event loop).
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from lumenserve.bundle import Bundle
from serving.settings import RuntimeName, ServingSettings


class Runtime(ABC):
    kind: RuntimeName
    platform: str
    device: str
    parallel: int = 1
    """Calls of ``predict`` that may run at once (from different threads)."""

    @abstractmethod
    def predict(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inputs by name (batch first) -> every model output by name (batch first)."""

    def warm_spare(self, feed: dict[str, np.ndarray]) -> None:  # noqa: B027 - optional hook
        """Run ``feed`` through any session a plain ``predict`` does not reach (blocking)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the session / module."""


def cuda_available(kind: RuntimeName) -> bool:
    """A GPU this runtime can use. ONNX: only with onnxruntime-gpu (the CPU build never
    imports torch here, which keeps cold start short)."""
    if kind == "onnx":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - torch always present here
        return False


def resolve_device(device: str, kind: RuntimeName) -> str:
    """auto -> cuda:0 when a usable GPU is visible, else cpu; cuda -> cuda:0."""
    if device == "auto":
        return "cuda:0" if cuda_available(kind) else "cpu"
    if device == "cuda":
        return "cuda:0"
    return device


def load_runtime(bundle: Bundle, settings: ServingSettings) -> Runtime:
    """The configured runtime; a bundle holding only the other artifact (an imported
    TorchScript file has no ONNX) gets the runtime it can run."""
    kind = settings.runtime_for(bundle.name)
    other: RuntimeName = "torchscript" if kind == "onnx" else "onnx"
    if bundle.manifest.artifact(kind) is None and bundle.manifest.artifact(other) is not None:
        kind = other
    device = resolve_device(settings.device, kind)
    if kind == "torchscript":
        from serving.runtimes.torchscript import TorchScriptRuntime

        return TorchScriptRuntime(bundle, device=device, threads=settings.intra_op_threads)
    from serving.runtimes.onnx import OnnxRuntime

    parallel, intra, solo = onnx_parallelism(settings, device)
    return OnnxRuntime(
        bundle,
        device=device,
        intra_threads=intra,
        inter_threads=settings.inter_op_threads,
        parallel=parallel,
        solo_threads=solo,
        call_input_bytes=settings.cpu_call_input_bytes,
    )


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota (a
    container's ``cpu`` limit), which the affinity mask does not show."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))


def onnx_parallelism(settings: ServingSettings, device: str) -> tuple[int, int, int | None]:
    """(concurrent calls, intra-op threads per call, threads of the session for a call that
    runs alone or None for no such session) for an ONNX model on ``device``."""
    if device.startswith("cuda"):
        return 1, settings.intra_op_threads, None
    cores = available_cores()
    parallel = settings.model_instances or min(cores, 4)
    if settings.intra_op_threads:
        return parallel, settings.intra_op_threads, None
    intra = max(1, cores // parallel)
    return parallel, intra, cores if parallel > 1 and cores != intra else None
