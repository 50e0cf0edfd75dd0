"""ONNX Runtime: CUDA execution provider on a GPU (onnxruntime-gpu), else CPU; spinning off."""

from __future__ import annotations

import numpy as np

import lumenserve.env  # noqa: F401  (ORT_DISABLE_TELEMETRY before onnxruntime loads)
from lumenserve.bundle import Bundle, BundleError
from serving.runtimes import Runtime


class OnnxRuntime(Runtime):
    kind = "onnx"
    platform = "onnxruntime_onnx"

    def __init__(self, bundle: Bundle, *, device: str, intra_threads: int, inter_threads: int) -> None:
        if device.startswith("cuda"):
            import torch  # noqa: F401  (loads the CUDA/cuDNN libraries ORT's CUDA provider needs)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_threads
        options.inter_op_num_threads = inter_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle ORT threads sleep instead of spinning: they would steal the CPU from the
        # event loop, preprocessing and the other model's threads.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
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
        self.device = device
        self.session = ort.InferenceSession(str(bundle.path("onnx")), sess_options=options, providers=providers)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_names = [i.name for i in self.session.get_inputs()]

    def predict(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.session.run(self.output_names, {name: feed[name] for name in self.input_names})
        return dict(zip(self.output_names, results, strict=True))
