"""TorchServe handler for lumenserve bundles (shipped inside the ``.mar`` as ``handler.py``).

TorchServe's built-in handlers call ``self.model(...)`` and so cannot serve ONNX; this one
runs the bundle through lumenserve's own runtimes (ONNX Runtime by default, TorchScript if
the archive says so), codecs and explain engine (:mod:`serving.torchserve.service`).

- ``/predictions/{m}``: raw image bytes, text, a JSON body or multipart fields (see
  :mod:`serving.torchserve.payload`) -> ``{"model", "version", "predictions": [{label,
  index, probability}, ...]}`` (top-k, best first).
- ``/explanations/{m}``: the same inputs plus ``method``, ``target`` and method parameters
  -> the rendered PNG (base64), faithfulness scores and the parameters used.
- Every answer carries ``X-Lumenserve-Batch-Size``: the size of the TorchServe batch it ran in.
- A bad request gets its own status (400, 501, ...) and ``{"error": ...}``; the other
  requests of the same TorchServe batch are still answered. TorchServe's gRPC API ignores
  per-request statuses, so a batch whose every request failed (with one status) is failed
  as a whole when it holds a gRPC request: the client then sees the matching gRPC code.

The worker process needs ``ORT_DISABLE_TELEMETRY=1`` before onnxruntime loads, and
TorchServe's ``base_handler`` imports onnxruntime at import time: so the variable is set
here, first, and also in the environment TorchServe is started with (docs/torchserve.md).
This module must define exactly one class (TorchServe instantiates the only one it finds).
"""

from __future__ import annotations

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # before anything below imports onnxruntime

import time
from pathlib import Path
from typing import Any

from ts.torch_handler.base_handler import BaseHandler
from ts.utils.util import PredictionException

BATCH_HEADER = "X-Lumenserve-Batch-Size"
"""Response header: how many requests TorchServe handed the handler together with this one."""


class LumenserveHandler(BaseHandler):  # type: ignore[misc]
    """Predict and explain a lumenserve bundle inside TorchServe."""

    def initialize(self, context: Any) -> None:
        import torch

        from serving.torchserve.service import TorchServeModel

        properties = context.system_properties
        gpu_id = properties.get("gpu_id")
        device = f"cuda:{gpu_id}" if gpu_id is not None and torch.cuda.is_available() else "cpu"
        self.manifest = context.manifest
        self.service = TorchServeModel.from_model_dir(Path(properties["model_dir"]), device=device)
        self.initialized = True

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[dict[str, Any]]:
        start = time.perf_counter()
        self.context = context
        explain = [context.get_request_header(i, "explain") == "True" for i in range(len(data))]
        answers = self.service.handle(data, explain)
        for i, answer in enumerate(answers):
            context.set_response_content_type(i, "application/json")
            context.set_response_header(i, BATCH_HEADER, str(len(data)))
            if answer.status != 200:
                context.set_response_status(answer.status, answer.body.get("error", ""), i)
        context.metrics.add_time("HandlerTime", round((time.perf_counter() - start) * 1000, 2), None, "ms")
        statuses = {answer.status for answer in answers}
        if 200 not in statuses and len(statuses) == 1 and any(_via_grpc(context, i) for i in range(len(data))):
            # TorchServe's gRPC API drops per-request statuses; failing the (all-failed) batch
            # turns ours into the gRPC code (400 -> INVALID_ARGUMENT, 501 -> UNIMPLEMENTED, ...).
            raise PredictionException(answers[0].body.get("error", "request failed"), answers[0].status)
        return [answer.body for answer in answers]


def _via_grpc(context: Any, index: int) -> bool:
    """gRPC requests reach the handler without HTTP headers (HTTP/1.1 always sends Host)."""
    return not any(key.lower() == "host" for key in context.get_all_request_header(index))
