"""The ceiling: the same model file, the same codec and runtime classes the server uses,
called in-process with nothing in front (no transport, no queue).

Two ceilings: ``bytes`` (JPEG decode + resize/crop/normalise + ONNX Runtime + softmax +
top-5) and ``tensor`` (ONNX Runtime + softmax + top-5 on already preprocessed input). Each
is measured at a sweep of batch sizes and in two session set-ups: ``single`` (one caller,
ONNX Runtime's default threads: the plain in-process loop) and ``parallel`` (the server's
set-up: ``model_instances`` callers on one session, ``intra_op_threads`` each); the best
of all is the ceiling.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Literal

import numpy as np

from bench.loadgen import percentiles_ms
from bench.photos import Workload
from lumenserve.bundle import Bundle
from serving.codecs.classification import softmax, top_k_strings
from serving.runtimes import onnx_parallelism
from serving.runtimes.onnx import OnnxRuntime
from serving.settings import ServingSettings

Mode = Literal["bytes", "tensor"]
TOP_K = 5


class Ceiling:
    """In-process predictor built exactly like the server's (``OnnxRuntime`` defaults)."""

    def __init__(self, bundle: Bundle, workload: Workload, *, intra_threads: int = 0, callers: int = 1) -> None:
        self.runtime = OnnxRuntime(bundle, device="cpu", intra_threads=intra_threads, inter_threads=1, parallel=callers)
        self.callers = callers
        self.labels = list(bundle.manifest.labels)
        self.workload = workload
        self._counter = 0
        self._lock = threading.Lock()

    def _batch(self, mode: Mode, size: int) -> np.ndarray:
        n = len(self.workload)
        with self._lock:
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
        """Back-to-back batches for ``duration_s`` from each of ``callers`` threads: images/s
        and per-batch latency."""
        latencies: list[float] = []
        start = time.perf_counter() + warmup_s

        def caller() -> None:
            while time.perf_counter() < start:
                self.predict(mode, size)
            while time.perf_counter() - start < duration_s:
                t = time.perf_counter()
                self.predict(mode, size)
                latencies.append(time.perf_counter() - t)

        threads = [threading.Thread(target=caller) for _ in range(self.callers - 1)]
        for thread in threads:
            thread.start()
        caller()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        return {
            "mode": mode,
            "batch_size": size,
            "callers": self.callers,
            "images_per_s": len(latencies) * size / elapsed,
            "batches": len(latencies),
        } | percentiles_ms(latencies)

    def close(self) -> None:
        self.runtime.close()


def ceiling_setups(bundle: Bundle, workload: Workload) -> dict[str, Ceiling]:
    """``single`` (one caller, ONNX Runtime's default threads) and, where the server runs
    calls side by side, ``parallel`` (its callers and threads): what the server under test uses."""
    parallel, intra, _solo = onnx_parallelism(ServingSettings(), "cpu")
    setups = {"single": Ceiling(bundle, workload)}
    if parallel > 1:
        setups["parallel"] = Ceiling(bundle, workload, intra_threads=intra, callers=parallel)
    return setups
