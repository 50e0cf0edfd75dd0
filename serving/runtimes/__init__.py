"""Runtimes: the same small interface over ONNX Runtime and TorchScript, chosen per model.

A runtime is built from a verified bundle and answers ``predict(feed) -> outputs`` with
numpy arrays keyed by the manifest's tensor names. ``predict`` blocks (it runs in the
model's compute thread, never on the event loop).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from lumenserve.bundle import Bundle
from serving.settings import RuntimeName, ServingSettings


class Runtime(ABC):
    kind: RuntimeName
    platform: str
    device: str

    @abstractmethod
    def predict(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inputs by name (batch first) -> every model output by name (batch first)."""

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
    kind = settings.runtime_for(bundle.name)
    device = resolve_device(settings.device, kind)
    if kind == "torchscript":
        from serving.runtimes.torchscript import TorchScriptRuntime

        return TorchScriptRuntime(bundle, device=device, threads=settings.intra_op_threads)
    from serving.runtimes.onnx import OnnxRuntime

    return OnnxRuntime(
        bundle, device=device, intra_threads=settings.intra_op_threads, inter_threads=settings.inter_op_threads
    )
