"""Explain in the data plane: the same guarantees as predict, whatever engine computes.

:class:`ExplainService` (``DataPlane.explain`` calls :meth:`~ExplainService.explain`) holds them:

- **validation** of the request parameters (``method`` or ``methods``, ``targets``,
  ``png_encoding``) once,
  before admission (:func:`parse_request`); the method's own parameters are checked by the
  explain library, and its errors are in the one error table;
- **admission** against explain's own queue: at most ``explain_max_concurrency`` running plus
  ``explain_max_queue`` waiting, beyond it UNAVAILABLE/503 (``reason="queue_full"``);
- **one concurrency cap**: the explain threads (``explain_max_concurrency`` of them, at a lower
  CPU priority, ``explain_nice``) are the only limit on explanations running at once;
- **a deadline** (the ``timeout`` parameter, the gRPC deadline, ``default_timeout``): an
  explanation still queued at its deadline leaves the queue; one already running is answered
  DEADLINE_EXCEEDED at once and its thread finishes in the background (``reason="deadline"``);
- **cancellation**: a caller that goes away (gRPC cancel, HTTP disconnect) takes its queued
  explanation out of the queue (``reason="cancelled"``);
- **its own metrics**: ``lumenserve_explain_queue_depth``, ``lumenserve_explain_inflight``,
  ``lumenserve_explain_rejected_total{reason}``, ``lumenserve_explain_duration_seconds{method}``.

The work is an :class:`ExplainEngine`; the server's is ``serving.explain_backend.CaptumEngine``.
This module does not load torch (the engine does).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from serving import tracing
from serving.errors import DeadlineExceeded, InvalidInput, Unavailable
from serving.metrics import ServingMetrics
from serving.priority import thread_pool
from serving.served import ServedModel
from serving.settings import ServingSettings
from serving.types import InferenceRequest, InferenceResponse

log = logging.getLogger("lumenserve.explain")

PROTOCOL_PARAMETERS = frozenset(
    {"timeout", "binary_data_output", "priority", "sequence_id", "sequence_start", "sequence_end", "headers"}
)
"""Request parameters that belong to the protocol, not to the explanation."""


@dataclass(frozen=True)
class ParsedRequest:
    method: str | None
    targets: list[int] | None
    params: dict[str, Any]
    png_base64: bool
    methods: str | None = None
    """Compare: the ``methods`` parameter as sent (comma-separated names; the library checks them)."""


class ExplainEngine(Protocol):
    """The blocking work of explanations; every call runs in an explain thread."""

    def explain(self, model: ServedModel, request: InferenceRequest, parsed: ParsedRequest) -> InferenceResponse:
        """One explanation. Raise :mod:`serving.errors` or explain library errors for clients."""
        ...

    def warm(self, model: ServedModel) -> None:
        """Build what the model's explanations need, so the first one does not pay for it."""
        ...

    def methods(self, model: ServedModel) -> dict[str, Any]:
        """Discovery: the methods this model can run, each with its parameters as JSON Schema."""
        ...


class LazyEngine:
    """An engine built on its first use (in an explain thread or a discovery call), so a server
    that only predicts never imports what the engine needs (torch, Captum, the eager twins)."""

    def __init__(self, build: Callable[[], ExplainEngine]) -> None:
        self._build = build
        self._engine: ExplainEngine | None = None
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        return self._engine is not None

    def _get(self) -> ExplainEngine:
        with self._lock:
            if self._engine is None:
                began = time.perf_counter()
                self._engine = self._build()
                log.info("explain engine loaded in %.2f s (first explain or discovery)", time.perf_counter() - began)
            return self._engine

    def explain(self, model: ServedModel, request: InferenceRequest, parsed: ParsedRequest) -> InferenceResponse:
        return self._get().explain(model, request, parsed)

    def warm(self, model: ServedModel) -> None:
        self._get().warm(model)

    def methods(self, model: ServedModel) -> dict[str, Any]:
        return self._get().methods(model)


JobState = Literal["queued", "running", "done", "abandoned"]


@dataclass(slots=True, eq=False)
class _Job:
    state: JobState = "queued"


class ExplainService:
    """Explanations with admission, one cap, deadline, cancellation and their own metrics."""

    def __init__(self, settings: ServingSettings, metrics: ServingMetrics, engine: ExplainEngine) -> None:
        self.metrics = metrics
        self.engine = engine
        self.max_running = settings.explain_max_concurrency
        self.max_waiting = settings.explain_max_queue
        self.parameter_max = settings.explain_parameter_max
        self.pool = thread_pool(self.max_running, "explain", settings.compute_nice + settings.explain_nice)
        self._lock = threading.Lock()
        self._pending = 0
        """Explanations in the explain threads' hands: queued or running (abandoned running ones too)."""

    async def explain(self, model: ServedModel, request: InferenceRequest, deadline: float) -> InferenceResponse:
        parsed = parse_request(request, self.parameter_max)
        self._admit(model)
        job = _Job()
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self.pool, self._run, job, model, request, parsed)
        began = time.perf_counter()
        timer = asyncio.timeout_at(deadline)  # loop.time() is time.monotonic()
        try:
            async with timer:
                with tracing.phase("explain", {"lumenserve.explain_method": parsed.method or "default"}):
                    response = await work  # cancelling it cancels a job not started yet
            assert response is not None  # None only for a job abandoned before it ran
        except TimeoutError:
            if not timer.expired():
                raise  # the engine's own TimeoutError: an internal error, not the deadline
            where = self._abandon(job)
            self.metrics.explain_rejected.labels(model.name, model.version, "deadline").inc()
            raise DeadlineExceeded(f"explain deadline passed while {where}") from None
        except asyncio.CancelledError:
            self._abandon(job)
            self.metrics.explain_rejected.labels(model.name, model.version, "cancelled").inc()
            raise
        method = "compare" if parsed.methods is not None else str(response.parameters.get("method", "default"))
        self.metrics.explain_seconds.labels(model.name, model.version, method).observe(time.perf_counter() - began)
        return response

    def _admit(self, model: ServedModel) -> None:
        with self._lock:
            if self._pending >= self.max_running + self.max_waiting:
                self.metrics.explain_rejected.labels(model.name, model.version, "queue_full").inc()
                raise Unavailable(
                    f"explain queue full ({self.max_running} running, {self.max_waiting} waiting); retry later"
                )
            self._pending += 1
        self.metrics.explain_queue_depth.inc()

    def _abandon(self, job: _Job) -> str:
        """The caller left: a queued job leaves the queue; a running one finishes unread."""
        with self._lock:
            if job.state != "queued":
                return "running"
            job.state = "abandoned"
            self._pending -= 1
        self.metrics.explain_queue_depth.dec()
        return "queued"

    def _run(
        self, job: _Job, model: ServedModel, request: InferenceRequest, parsed: ParsedRequest
    ) -> InferenceResponse | None:
        """In an explain thread."""
        with self._lock:
            if job.state == "abandoned":
                return None
            job.state = "running"
        self.metrics.explain_queue_depth.dec()
        self.metrics.explain_inflight.inc()
        try:
            return self.engine.explain(model, request, parsed)
        finally:
            self.metrics.explain_inflight.dec()
            with self._lock:
                job.state = "done"
                self._pending -= 1

    async def methods(self, model: ServedModel) -> dict[str, Any]:
        """The discovery answer for ``model`` (cheap: no twin is built for it), with this
        server's ``explain_parameter_max`` as the published maxima. The first call of a lazily
        loaded engine imports it in a thread, off the event loop."""
        if isinstance(self.engine, LazyEngine) and not self.engine.built:
            answer = await asyncio.to_thread(self.engine.methods, model)
        else:
            answer = self.engine.methods(model)
        for method in answer.get("methods", []):
            for name, schema in method["parameters"]["properties"].items():
                if name in self.parameter_max:
                    method["parameters"]["properties"][name] = lower_maximum(schema, self.parameter_max[name])
        return answer

    def warm(self, model: ServedModel) -> None:
        """Run the engine's preparation for ``model`` in the background (an explain thread)."""

        def report(future: Future[None]) -> None:
            if future.exception() is not None:
                log.error("explain preparation for %s/%s failed: %r", model.name, model.version, future.exception())

        self.pool.submit(self.engine.warm, model).add_done_callback(report)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


# ---- request parsing ----------------------------------------------------------------------
def parse_request(request: InferenceRequest, parameter_max: dict[str, float] | None = None) -> ParsedRequest:
    params = {k: v for k, v in request.parameters.items() if k not in PROTOCOL_PARAMETERS}
    _check_maxima(params, parameter_max or {})
    method = params.pop("method", None)
    if method is not None and not isinstance(method, str):
        raise InvalidInput(f"parameter 'method' must be a string, got {method!r}")
    methods = params.pop("methods", None)
    if methods is not None and not isinstance(methods, str):
        raise InvalidInput(f"parameter 'methods' must be a comma-separated string, got {methods!r}")
    if methods is not None and method:
        raise InvalidInput("give either 'method' or 'methods' (comma-separated, to compare), not both")
    targets = _parse_targets(params.pop("targets", None))
    encoding = params.pop("png_encoding", "base64")
    if encoding not in ("base64", "raw"):
        raise InvalidInput(f"parameter 'png_encoding' must be 'base64' or 'raw', got {encoding!r}")
    return ParsedRequest(method or None, targets, params, png_base64=encoding == "base64", methods=methods)


def _parse_targets(value: Any) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise InvalidInput(f"parameter 'targets' must be a JSON list of class indices, got {value!r}") from None
    if isinstance(value, int):  # one target (bools are refused below)
        value = [value]
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise InvalidInput(f"parameter 'targets' must be a list of class indices, got {value!r}")
    return value


def _check_maxima(params: dict[str, Any], parameter_max: dict[str, float]) -> None:
    """The server's lower maxima (``explain_parameter_max``); ``method.name`` counts as ``name``.
    A value that is no number is left to the library's validation."""
    for key, value in params.items():
        cap = parameter_max.get(key.rpartition(".")[2])
        if cap is None or isinstance(value, bool):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if number > cap:
            raise InvalidInput(f"parameter {key!r}: at most {cap:g} on this server, got {value!r}")


def lower_maximum(schema: dict[str, Any], cap: float) -> dict[str, Any]:
    """A parameter's JSON Schema with its maximum lowered to ``cap`` (an integer stays one)."""
    bound = schema.get("maximum", schema.get("exclusiveMaximum"))
    if bound is not None and bound <= cap:
        return schema
    kinds = schema.get("type")
    integer = kinds == "integer" or (isinstance(kinds, list) and "integer" in kinds)
    lowered = {k: v for k, v in schema.items() if k != "exclusiveMaximum"}
    return lowered | {"maximum": int(cap) if integer else cap}
