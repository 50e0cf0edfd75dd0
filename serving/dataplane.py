"""The data plane: what every request needs whatever its transport or its model.

Transports convert to and from :mod:`serving.types` and make one call here. Per request the
data plane does lookup and readiness, the deadline, in-flight/drain accounting and the
request's metrics, and hands the rest to one call:

- predict: ``DataPlane.infer`` -> ``ServedModel.infer(request, deadline)`` (serving/served.py);
- explain: ``DataPlane.explain`` -> ``ExplainService.explain(model, request, deadline)``
  (serving/explain_service.py).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

from serving import observe
from serving.errors import (
    InvalidInput,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    classify,
)
from serving.explain_service import ExplainService
from serving.metrics import ServingMetrics
from serving.repository import ModelRepository
from serving.served import ServedModel
from serving.settings import ServingSettings
from serving.types import InferenceRequest, InferenceResponse

EXTENSIONS = [
    "classification",
    "binary_tensor_data",
    "parameters",
    "model_repository",
    "model_configuration",
    "statistics",
    "lumenserve_explain",
]
"""Exactly the protocol extensions implemented (Triton's names; docs/CONTRACTS.md lists the rest)."""


def _server_version() -> str:
    try:
        return package_version("lumenserve")
    except PackageNotFoundError:  # pragma: no cover
        return "0"


def deadline_of(request: InferenceRequest, default_timeout: float) -> float:
    """The request's ``time.monotonic()`` deadline: the earliest of ``default_timeout``, the
    transport's deadline (gRPC) and the ``timeout`` parameter (microseconds, 0: none)."""
    now = time.monotonic()
    deadline = now + default_timeout
    if request.deadline is not None:
        deadline = min(deadline, request.deadline)
    timeout = request.parameters.get("timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
            raise InvalidInput(f"parameter 'timeout' must be a non-negative integer (microseconds), got {timeout!r}")
        if timeout > 0:
            deadline = min(deadline, now + timeout / 1e6)
    return deadline


class DataPlane:
    def __init__(
        self,
        settings: ServingSettings,
        repository: ModelRepository,
        metrics: ServingMetrics,
        explain: ExplainService | None = None,
    ) -> None:
        """``explain``: None answers every explain call UNIMPLEMENTED/501."""
        self.settings = settings
        self.repository = repository
        self.metrics = metrics
        self.explain_service = explain
        self.drain_started = asyncio.Event()
        """Set once the server drains (long-lived calls such as streams end themselves then)."""
        self.cancelled_while_draining = 0
        """Accepted requests cut off during a drain (client gone or grace period over)."""
        self.version = _server_version()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def draining(self) -> bool:
        return self.drain_started.is_set()

    def start_drain(self) -> None:
        """Readiness turns false; accepted requests are still answered."""
        self.drain_started.set()

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

    async def model_config(self, name: str, version: str = "") -> dict[str, Any]:
        """Triton's model configuration extension (``inference.ModelConfig`` as JSON); the
        explain methods the model can run travel as the ``explain_methods`` parameter."""
        model = self.repository.get(name, version)
        config = model.triton_config()
        if self.explain_service is not None:
            names = [method["name"] for method in (await self.explain_service.methods(model))["methods"]]
            config["parameters"]["explain_methods"] = {"string_value": ",".join(names)}
        return config

    def model_statistics(self, name: str = "", version: str = "") -> list[dict[str, Any]]:
        """Triton's statistics extension: every ready version of ``name`` (of every model when
        empty; only ``version`` when given), as ``inference.ModelStatistics`` JSON."""
        if version and not name:
            raise InvalidInput("statistics for a version need the model's name")
        if name:
            models = [self.repository.get(name, version)] if version else self.repository.ready_versions(name)
            if not models:
                raise Unavailable(f"model {name!r} is not ready")
        else:
            models = [m for n in sorted(self.repository.models) for m in self.repository.ready_versions(n)]
        return [m.statistics.as_dict(m.name, m.version) for m in models]

    async def explain_methods(self, name: str, version: str = "") -> dict[str, Any]:
        """The explain methods this model can run, each with its parameters as JSON Schema."""
        if self.explain_service is None:
            raise Unimplemented("explain is not available on this server")
        return await self.explain_service.methods(self.repository.get(name, version))

    # ---- the two roads ------------------------------------------------------------------
    async def infer(self, request: InferenceRequest, protocol: str) -> InferenceResponse:
        model = self._lookup(request)
        start = self._enter()
        status = "OK"
        try:
            return await model.infer(request, deadline_of(request, model.timeout))
        except BaseException as exc:
            status = self._status(exc)
            raise
        finally:
            self._leave(model.name, model.version, protocol, "infer", status, start)

    async def explain(self, request: InferenceRequest, protocol: str) -> InferenceResponse:
        if self.explain_service is None:
            raise Unimplemented("explain is not available on this server (started without explain)")
        model = self._lookup(request)
        start = self._enter()
        status = "OK"
        try:
            deadline = deadline_of(request, self.settings.default_timeout)
            return await self.explain_service.explain(model, request, deadline)
        except BaseException as exc:
            status = self._status(exc)
            raise
        finally:
            self._leave(model.name, model.version, protocol, "explain", status, start)

    def _lookup(self, request: InferenceRequest) -> ServedModel:
        """The model version that answers ``request``; both noted for its logs and trace."""
        observe.note_request(request)
        model = self.repository.get(request.model, request.version)
        observe.note_model(model.name, model.version)
        return model

    # ---- accounting of accepted requests (drain, metrics) -------------------------------
    def _enter(self) -> float:
        self._inflight += 1
        self._idle.clear()
        return time.perf_counter()

    def _status(self, exc: BaseException) -> str:
        if isinstance(exc, asyncio.CancelledError):
            if self.draining:
                self.cancelled_while_draining += 1
            return "CANCELLED"
        return classify(exc).grpc_code.name

    def _leave(self, name: str, version: str, protocol: str, endpoint: str, status: str, start: float) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()
        self.metrics.observe_request(name, version, protocol, endpoint, status, time.perf_counter() - start)

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

    def ready_models(self) -> list[str]:
        """The names of the models serving now (KServe's ``GET /v2/models``): public and read-only.

        Exposes no more than each model's public metadata route does; what is on disk but not
        loaded stays behind the guarded repository index.
        """
        return sorted({row["name"] for row in self.repository.index() if row["state"] == "READY"})

    def index(self, authorization: str | None, ready_only: bool = False) -> list[dict[str, str]]:
        self.authorize(authorization)
        rows = self.repository.index()
        return [row for row in rows if row["state"] == "READY"] if ready_only else rows
