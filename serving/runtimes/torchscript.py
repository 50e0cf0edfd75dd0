"""TorchScript: ``torch.jit.load`` on CPU or CUDA, inputs in manifest order, outputs by manifest name."""

from __future__ import annotations

import warnings

import numpy as np

from lumenserve.bundle import Bundle
from serving.runtimes import Runtime


class TorchScriptRuntime(Runtime):
    kind = "torchscript"
    platform = "pytorch_torchscript"

    def __init__(self, bundle: Bundle, *, device: str, threads: int) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.device = device
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            self.module = torch.jit.load(str(bundle.path("torchscript")), map_location=device).eval()
        self.input_names = [t.name for t in bundle.manifest.inputs]
        self.output_names = [t.name for t in bundle.manifest.outputs]

    def predict(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        with torch.inference_mode():
            # from_numpy needs a writable array; raw request buffers are read-only views
            arrays = [feed[n] if feed[n].flags.writeable else feed[n].copy() for n in self.input_names]
            args = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in arrays]
            result = self.module(*args)
        outputs = result if isinstance(result, tuple | list) else (result,)
        return {name: tensor.detach().cpu().numpy() for name, tensor in zip(self.output_names, outputs, strict=False)}
