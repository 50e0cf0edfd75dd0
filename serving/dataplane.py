"""The data plane: the ONE place with serving logic. Transports only convert to and from
:mod:`serving.types` and call one method here.

Per infer: model lookup and readiness -> deadline -> input preparation (raw images/texts
decoded in the worker pool, tensors validated inline) -> the model's batcher -> outputs ->
metrics. Explain goes through the same lookup to a pluggable :class:`ExplainBackend` with
its own concurrency cap and queue.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any, Protocol

import grpc

from serving.errors import (
    InternalError,
    InvalidInput,
    PermissionDenied,
    ServingError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    status_of,
)
from serving.metrics import ServingMetrics
from serving.model import LoadedModel
from serving.repository import ModelRepository
from serving.settings import ServingSettings
from serving.types import InferenceRequest, InferenceResponse

log = logging.getLogger("lumenserve.serving")
EXTENSIONS = ["classification", "binary_tensor_data", "model_repository", "parameters", "lumenserve_explain"]


class ExplainBackend(Protocol):
    """What ``DataPlane.explain`` delegates to (installed at startup; see docs/serving.md).

    ``model`` is the ready :class:`~serving.model.LoadedModel` (``.bundle``, ``.manifest``,
    ``.labels``, ``.runtime``, ``.prepare(inputs) -> (feed, rows)`` using the same codecs as
    infer). Raise :mod:`serving.errors` types for client errors (InvalidInput for bad
    parameters, Unimplemented for a method the model cannot support).
    """

    async def explain(self, model: LoadedModel, request: InferenceRequest) -> InferenceResponse: ...


def _server_version() -> str:
    try:
        return package_version("lumenserve")
    except PackageNotFoundError:  # pragma: no cover
        return "0"


class DataPlane:
    def __init__(
        self,
        settings: ServingSettings,
        repository: ModelRepository,
        metrics: ServingMetrics,
        explain_backend: ExplainBackend | None = None,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.metrics = metrics
        self.explain_backend = explain_backend
        threads = settings.preprocess_threads or os.cpu_count() or 2
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="preprocess")
        self.draining = False
        self.cancelled_while_draining = 0
        """Accepted infer requests cut off during a drain (client gone or grace period over)."""
        self.version = _server_version()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._explain_slots = asyncio.Semaphore(settings.explain_max_concurrency)
        self._explain_waiting = 0

    # ---- health and metadata ------------------------------------------------------------
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return not self.draining and self.repository.all_ready()

    def model_ready(self, name: str, version: str = "") -> bool:
        if self.draining:
            return False
        try:
            self.repository.get(name, version)
        except Unavailable:
            return False
        return True

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "lumenserve", "version": self.version, "extensions": EXTENSIONS}

    def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        model = self.repository.get(name, version)
        meta = model.metadata()
        meta["versions"] = self.repository.versions_of(name)
        return meta

    # ---- infer --------------------------------------------------------------------------
    async def infer(self, request: InferenceRequest, protocol: str) -> InferenceResponse:
        model = self.repository.get(request.model, request.version)
        start = time.perf_counter()
        status = "OK"
        self._enter(model)
        try:
            deadline = self._deadline(request)
            assert model.batcher is not None
            admitted = model.batcher.admit()  # refuse overload before decoding anything
            try:
                if model.needs_preprocessing(request.inputs):
                    loop = asyncio.get_running_loop()
                    feed, rows = await loop.run_in_executor(self.pool, model.prepare, request.inputs)
                else:
                    feed, rows = model.prepare(request.inputs)
            finally:
                model.batcher.release()
            outputs = await model.batcher.submit(feed, rows, deadline, admitted)
            tensors = model.postprocess(outputs, request.outputs)
            return InferenceResponse(model.name, model.version, request.id, tensors)
        except ServingError as exc:
            status = status_of(exc)[1].name
            raise
        except asyncio.CancelledError:
            status = grpc.StatusCode.CANCELLED.name
            if self.draining:
                self.cancelled_while_draining += 1
            raise
        except Exception as exc:
            status = grpc.StatusCode.INTERNAL.name
            raise InternalError(f"infer on {model.name}: {exc!r}") from exc
        finally:
            self._leave(model)
            self.metrics.observe_request(
                model.name, model.version, protocol, "infer", status, time.perf_counter() - start
            )

    def _deadline(self, request: InferenceRequest) -> float:
        now = time.monotonic()
        deadline = now + self.settings.default_timeout
        if request.deadline is not None:
            deadline = min(deadline, request.deadline)
        timeout = request.parameters.get("timeout")
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
                raise InvalidInput(
                    f"parameter 'timeout' must be a non-negative integer (microseconds), got {timeout!r}"
                )
            if timeout > 0:
                deadline = min(deadline, now + timeout / 1e6)
        return deadline

    def _enter(self, model: LoadedModel) -> None:
        self._inflight += 1
        self._idle.clear()
        assert model.batcher is not None
        model.batcher.metrics.inflight.inc()

    def _leave(self, model: LoadedModel) -> None:
        self._inflight -= 1
        if model.batcher is not None:
            model.batcher.metrics.inflight.dec()
        if self._inflight == 0:
            self._idle.set()

    @property
    def inflight(self) -> int:
        """Requests inside the data plane (accepted, not yet answered)."""
        return self._inflight

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is inside the data plane; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # ---- explain ------------------------------------------------------------------------
    async def explain(self, request: InferenceRequest, protocol: str) -> InferenceResponse:
        if self.explain_backend is None:
            raise Unimplemented("explain is not available on this server (no explain backend installed)")
        model = self.repository.get(request.model, request.version)
        if self._explain_slots.locked() and self._explain_waiting >= self.settings.explain_max_queue:
            self.metrics.rejected_total.labels(model.name, model.version, "queue_full").inc()
            raise Unavailable(f"explain queue full ({self.settings.explain_max_queue} waiting); retry later")
        start = time.perf_counter()
        status = "OK"
        self._enter(model)
        self._explain_waiting += 1
        waiting = True
        try:
            async with self._explain_slots:
                self._explain_waiting -= 1
                waiting = False
                began = time.perf_counter()
                response = await self.explain_backend.explain(model, request)
                method = str(response.parameters.get("method", "default"))
                self.metrics.explain_seconds.labels(model.name, model.version, method).observe(
                    time.perf_counter() - began
                )
                return response
        except ServingError as exc:
            status = status_of(exc)[1].name
            raise
        except asyncio.CancelledError:
            status = grpc.StatusCode.CANCELLED.name
            raise
        except Exception as exc:
            status = grpc.StatusCode.INTERNAL.name
            raise InternalError(f"explain on {model.name}: {exc!r}") from exc
        finally:
            if waiting:
                self._explain_waiting -= 1
            self._leave(model)
            self.metrics.observe_request(
                model.name, model.version, protocol, "explain", status, time.perf_counter() - start
            )

    # ---- repository API (guarded) -------------------------------------------------------
    def authorize(self, authorization: str | None) -> None:
        """Check an ``Authorization: Bearer <token>`` value (constant-time comparison)."""
        expected = self.settings.repository_token
        if not expected:
            raise PermissionDenied("the repository API is disabled on this server (no repository_token set)")
        if not authorization:
            raise Unauthenticated("the repository API needs 'authorization: Bearer <token>'")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("the authorization value must be 'Bearer <token>'")
        if not hmac.compare_digest(token.strip().encode(), expected.encode()):
            raise PermissionDenied("wrong repository token")

    async def load(self, name: str, authorization: str | None) -> None:
        self.authorize(authorization)
        if self.draining:
            raise Unavailable("server is draining")
        await self.repository.load(name)

    async def unload(self, name: str, authorization: str | None) -> None:
        self.authorize(authorization)
        await self.repository.unload(name)

    def ready_models(self) -> list[dict[str, Any]]:
        """Models serving now, newest version first: public, read-only (no repository token).

        Exposes no more than each model's public metadata route does; what is on disk but not
        loaded stays behind the guarded repository index.
        """
        versions: dict[str, list[str]] = {}
        for row in self.repository.index():
            if row["state"] == "READY":
                versions.setdefault(row["name"], []).append(row["version"])
        return [
            {"name": name, "versions": sorted(found, key=int, reverse=True)} for name, found in sorted(versions.items())
        ]

    def index(self, authorization: str | None) -> list[dict[str, str]]:
        self.authorize(authorization)
        return self.repository.index()
