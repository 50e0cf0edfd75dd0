"""In-process serving stacks for fast tests: a real repository with real tiny ONNX models, the
data plane, the HTTP app (ASGI, no socket) and a real grpc.aio server on 127.0.0.1.

No subprocess: each test builds what it needs in its own event loop in well under a second.
Explain engines are injected (tests pass their own :class:`serving.explain_backend.ExplainEngine`).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from serving.dataplane import DataPlane
from serving.explain_service import ExplainService, ParsedRequest
from serving.metrics import ServingMetrics
from serving.repository import ModelRepository
from serving.served import ServedModel
from serving.settings import ServingSettings
from serving.types import InferenceRequest, InferenceResponse, Tensor


@dataclass
class Stack:
    settings: ServingSettings
    metrics: ServingMetrics
    repository: ModelRepository
    dataplane: DataPlane
    explain: ExplainService | None

    def sample(self, name: str, **labels: str) -> float:
        """One metric value (0 when the series does not exist yet)."""
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@asynccontextmanager
async def serving_stack(repo: Path, models: list[str], engine: Any = None, **overrides: Any) -> AsyncIterator[Stack]:
    """A data plane over ``models`` of ``repo``; ``engine``: an explain engine (None: no explain)."""
    settings = ServingSettings(repository=repo, models=models, device="cpu", grpc_port=0, http_port=0, **overrides)
    metrics = ServingMetrics()
    repository = ModelRepository(settings, metrics)
    explain = ExplainService(settings, metrics, engine) if engine is not None else None
    dataplane = DataPlane(settings, repository, metrics, explain)
    await repository.load_startup_models()
    try:
        yield Stack(settings, metrics, repository, dataplane, explain)
    finally:
        if isinstance(engine, BlockingEngine):
            engine.release.set()  # the explain threads end before the interpreter joins them
        if explain is not None:
            explain.close()
        await repository.close()


class BlockingEngine:
    """An explain engine whose explanations wait until released (or crash on method "crash")."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = 0
        self.finished = 0
        self._lock = threading.Lock()

    def warm(self, model: ServedModel) -> None:
        pass

    def methods(self, model: ServedModel) -> dict[str, Any]:
        return {"name": model.name, "version": model.version, "methods": [], "reason": "a test engine"}

    def explain(self, model: ServedModel, request: InferenceRequest, parsed: ParsedRequest) -> InferenceResponse:
        with self._lock:
            self.started += 1
        if parsed.method == "crash":
            raise RuntimeError("secret-detail-8842")
        if parsed.method == "unsupported":
            from serving.errors import Unimplemented

            raise Unimplemented(f"method 'unsupported' is not supported for model {model.name!r}")
        if parsed.method != "instant":
            self.release.wait(30)
        _feed, rows = model.io.prepare(request.inputs)
        with self._lock:
            self.finished += 1
        scores = np.zeros((rows, 1), dtype=np.float32)
        return InferenceResponse(model.name, model.version, request.id, [Tensor("attributions", "FP32", scores)],
                                 {"method": parsed.method or "blocking"})  # fmt: skip


def image_request(model: str = "tiny-image", rows: int = 1, **parameters: Any) -> InferenceRequest:
    data = np.zeros((rows, 3, 32, 32), dtype=np.float32)  # (batch, C, H, W)
    return InferenceRequest(model, inputs=[Tensor("input", "FP32", data)], parameters=dict(parameters))


@asynccontextmanager
async def grpc_channel(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    """A real grpc.aio server for the stack's data plane on a free 127.0.0.1 port, and a channel to it."""
    from serving.grpc.server import build_grpc_server
    from serving.grpc.servicer import HealthTracker

    server, port = build_grpc_server(stack.dataplane, HealthTracker(stack.dataplane), stack.settings)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel
    finally:
        await channel.close()
        await server.stop(0)
