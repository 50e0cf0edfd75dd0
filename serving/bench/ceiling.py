"""The ceiling: the same model file, the same codec and runtime classes the server uses,
called in-process with nothing in front (no transport, no queue).

Two ceilings: ``bytes`` (JPEG decode + resize/crop/normalise + ONNX Runtime + softmax +
top-5) and ``tensor`` (ONNX Runtime + softmax + top-5 on already preprocessed input). Each
is measured at a sweep of batch sizes; the best one is the ceiling.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np

from lumenserve.bundle import Bundle
from serving.bench.loadgen import percentiles_ms
from serving.bench.photos import Workload
from serving.codecs.classification import softmax, top_k_strings
from serving.runtimes.onnx import OnnxRuntime

Mode = Literal["bytes", "tensor"]
TOP_K = 5


class Ceiling:
    """In-process predictor built exactly like the server's (``OnnxRuntime`` defaults)."""

    def __init__(self, bundle: Bundle, workload: Workload, *, intra_threads: int = 0) -> None:
        self.runtime = OnnxRuntime(bundle, device="cpu", intra_threads=intra_threads, inter_threads=1)
        self.labels = list(bundle.manifest.labels)
        self.workload = workload
        self._counter = 0

    def _batch(self, mode: Mode, size: int) -> np.ndarray:
        n = len(self.workload)
        picks = [(self._counter + j) % n for j in range(size)]
        self._counter += size
        if mode == "bytes":
            return self.workload.codec([self.workload.jpegs[p] for p in picks])  # (size, C, H, W)
        return np.concatenate([self.workload.tensors[p] for p in picks])  # (size, C, H, W)

    def predict(self, mode: Mode, size: int) -> np.ndarray:
        feed = {"input": self._batch(mode, size)}
        logits = self.runtime.predict(feed)["logits"]  # (size, classes)
        return top_k_strings(softmax(logits), TOP_K, self.labels)  # (size, TOP_K)

    def measure(self, mode: Mode, size: int, duration_s: float, warmup_s: float = 0.3) -> dict[str, Any]:
        """Back-to-back batches for ``duration_s``: images/s and per-batch latency."""
        end_warm = time.perf_counter() + warmup_s
        while time.perf_counter() < end_warm:
            self.predict(mode, size)
        latencies: list[float] = []
        start = time.perf_counter()
        while time.perf_counter() - start < duration_s:
            t = time.perf_counter()
            self.predict(mode, size)
            latencies.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - start
        return {
            "mode": mode,
            "batch_size": size,
            "images_per_s": len(latencies) * size / elapsed,
            "batches": len(latencies),
        } | percentiles_ms(latencies)

    def close(self) -> None:
        self.runtime.close()
