"""ONNX Runtime: CUDA execution provider on a GPU (onnxruntime-gpu), else CPU; spinning off."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

import lumenserve.env  # noqa: F401  (ORT_DISABLE_TELEMETRY before onnxruntime loads)
from lumenserve.bundle import Bundle, BundleError
from serving.runtimes import Runtime


class OnnxRuntime(Runtime):
    kind = "onnx"
    platform = "onnxruntime_onnx"

    def __init__(
        self,
        bundle: Bundle,
        *,
        device: str,
        intra_threads: int,
        inter_threads: int,
        parallel: int = 1,
        solo_threads: int | None = None,
        call_input_bytes: int = 0,
    ) -> None:
        """``parallel``: how many ``predict`` calls may run at once on the session (ONNX
        Runtime's ``run`` is thread-safe; the weights are shared), each with ``intra_threads``.
        ``solo_threads``: a second session with that many threads serves a call that runs
        alone (low load: one request finishes sooner on every core); overlapping calls use
        the ``intra_threads`` session (high load: no thread waits on a preempted sibling).
        ``call_input_bytes``: on CPU, a batch whose inputs exceed it runs as consecutive calls
        of as many rows as fit (at least one); 0: whole batches."""
        self.parallel = parallel
        self.call_input_bytes = 0 if device.startswith("cuda") else call_input_bytes
        self.device = device
        path = str(bundle.path("onnx"))
        self.session = _session(path, device, intra_threads, inter_threads)
        self.solo = None
        if solo_threads is not None:
            self.solo = _session(path, device, solo_threads, inter_threads, spin_in_call=True)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_names = [i.name for i in self.session.get_inputs()]
        if not all(_dynamic_batch(t.shape) for t in [*self.session.get_inputs(), *self.session.get_outputs()]):
            self.call_input_bytes = 0  # some tensor has no batch axis to split along
        self._running = 0
        self._lock = threading.Lock()

    def predict(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {name: feed[name] for name in self.input_names}
        rows = self.rows_per_call(inputs)
        if rows is None:
            return self._run(inputs)
        batch = _batch(inputs)
        parts = [self._run({n: a[i : i + rows] for n, a in inputs.items()}) for i in range(0, batch, rows)]
        return {name: np.concatenate([p[name] for p in parts]) for name in self.output_names}  # batch first

    def rows_per_call(self, inputs: dict[str, np.ndarray]) -> int | None:
        """Rows per call when the batch must be split under ``call_input_bytes``, else None."""
        total = sum(a.nbytes for a in inputs.values())
        batch = _batch(inputs)
        if not self.call_input_bytes or total <= self.call_input_bytes or batch < 2:
            return None
        if any(len(a) != batch for a in inputs.values()):
            return None  # not one batch axis: the model decides
        return max(1, self.call_input_bytes // (total // batch))

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.solo is None:
            results = self.session.run(self.output_names, inputs)
        else:
            with self._lock:
                self._running += 1
                alone = self._running == 1
            try:
                results = (self.solo if alone else self.session).run(self.output_names, inputs)
            finally:
                with self._lock:
                    self._running -= 1
        return dict(zip(self.output_names, results, strict=True))

    def warm_spare(self, feed: dict[str, np.ndarray]) -> None:
        if self.solo is not None:  # predict alone always takes the solo session
            for _ in range(2):
                self.session.run(self.output_names, {name: feed[name] for name in self.input_names})


def _batch(inputs: dict[str, np.ndarray]) -> int:
    return len(next(iter(inputs.values())))  # rows of the first input (batch first)


def _dynamic_batch(shape: list[Any]) -> bool:
    """A tensor whose first axis is symbolic (a batch axis to split along)."""
    return bool(shape) and not isinstance(shape[0], int)


def _session(path: str, device: str, intra_threads: int, inter_threads: int, *, spin_in_call: bool = False) -> Any:
    """``spin_in_call``: the intra-op threads spin between operators while a call runs and
    sleep when it ends (the session for a call that runs alone: 224 px MobileNetV2 on 2 cores,
    6.1 instead of 7.9 ms a call, 64 px 0.96 instead of 1.28 ms, less CPU than sleeping
    between operators)."""
    if device.startswith("cuda"):
        import torch  # noqa: F401  (loads the CUDA/cuDNN libraries ORT's CUDA provider needs)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_threads
    options.inter_op_num_threads = inter_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle ORT threads sleep instead of spinning: they would steal the CPU from the
    # event loop, preprocessing and the other model's threads (with spin_in_call they spin
    # only until the call ends).
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_in_call else "0")
    if spin_in_call:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    providers: list[str | tuple[str, dict[str, str]]] = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BundleError(
                f"device {device} asked for but this onnxruntime has no CUDA provider "
                "(install the gpu extra: onnxruntime-gpu)"
            )
        device_id = device.split(":")[1] if ":" in device else "0"
        providers = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
    return ort.InferenceSession(path, sess_options=options, providers=providers)
