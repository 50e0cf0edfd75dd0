"""OpenTelemetry tracing: off unless the standard ``OTEL_*`` environment variables ask for it.

:func:`configure` (called once by the server) reads the environment; when it asks for no
exporter, nothing of OpenTelemetry is imported and every hook below returns at its first
line (``_tracer is None``), so the road pays one global lookup per hook. When on (the
``otel`` extra installed), one tracer provider exports through a batch span processor:

- a SERVER span per infer/explain request (:func:`start_request`, opened by the transport
  edge in :mod:`serving.observe`), continuing the caller's W3C ``traceparent`` /
  ``tracestate`` (``OTEL_PROPAGATORS``, default tracecontext + baggage);
- child spans ``preprocess`` and ``explain`` (:func:`phase`) and ``queue`` (:func:`queued`,
  from entering the batcher's queue to the batch starting);
- one ``batch`` span per model call (:func:`start_batch`): a child of the first traced
  request in the batch (a lone request sees its model run inside its own trace), linked to
  every request span of the batch, and every request span links back to it.

Environment (the OpenTelemetry SDK's own names): ``OTEL_TRACES_EXPORTER`` (``otlp``,
``console``, ``none``; a comma list), ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` (tracing is
on when one is set), ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` (``http/protobuf``, the
default, or ``grpc``), ``OTEL_SDK_DISABLED``, ``OTEL_SERVICE_NAME`` (default
``lumenserve``), ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER[_ARG]``, ``OTEL_BSP_*``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

import grpc

_tracer: Any = None
"""The OpenTelemetry tracer while tracing is on; None when off (every hook's guard)."""
_provider: Any = None
_otel: Any = None
"""The OpenTelemetry API names the hooks use (bound once by :func:`configure`)."""
_NOOP: AbstractContextManager[Any] = nullcontext()

EXPORTERS = ("otlp", "console")
PROTOCOLS = ("http/protobuf", "grpc")
GRPC_SERVER_ERRORS = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)
"""gRPC codes that mark a server span as an error (OpenTelemetry's RPC conventions); an HTTP
server span is an error for a 5xx status. A client's mistake (400, NOT_FOUND) is not."""


def exporters_wanted(environ: Mapping[str, str]) -> list[str]:
    """The span exporters the environment asks for; empty: tracing stays off.

    On when ``OTEL_TRACES_EXPORTER`` names exporters, or, with it unset, when an OTLP
    endpoint is set (the SDK would default to ``otlp``; here tracing is opt-in).
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not named:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        return ["otlp"] if endpoint else []
    if "none" in named:
        return []
    unknown = [n for n in named if n not in EXPORTERS]
    if unknown:
        raise RuntimeError(f"OTEL_TRACES_EXPORTER: unsupported exporter(s) {unknown} (use otlp, console or none)")
    return named


def otlp_protocol(environ: Mapping[str, str]) -> str:
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or PROTOCOLS[0]
    )
    protocol = protocol.strip().lower()
    if protocol not in PROTOCOLS:
        raise RuntimeError(f"OTEL_EXPORTER_OTLP_PROTOCOL: unsupported {protocol!r} (use http/protobuf or grpc)")
    return protocol


def configure(environ: Mapping[str, str] | None = None, service_version: str = "", exporter: Any = None) -> bool:
    """Turn tracing on when the environment asks for it (once per process); True when on.
    ``exporter``: a span exporter to use instead of the environment's (benchmarks).

    Raises RuntimeError for a setting it cannot honour, or when tracing is asked for but the
    ``otel`` extra is not installed.
    """
    global _tracer, _provider, _otel
    if _tracer is not None:
        return True
    environ = os.environ if environ is None else environ
    exporters = ["given"] if exporter is not None else exporters_wanted(environ)
    if not exporters:
        return False
    protocol = otlp_protocol(environ) if "otlp" in exporters else ""
    try:
        import opentelemetry.context
        import opentelemetry.propagate
        import opentelemetry.trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
    except ImportError as exc:
        raise RuntimeError(
            "OTEL_* asks for traces but OpenTelemetry is not installed: pip install 'lumenserve[otel]'"
        ) from exc
    resource = Resource.create({"service.version": service_version} if service_version else {})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "lumenserve"}))
    provider = TracerProvider(resource=resource)
    for name in exporters:
        if name == "console":
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        elif name == "given":
            provider.add_span_processor(BatchSpanProcessor(exporter))
        else:
            provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(protocol)))
    _otel = _Api(opentelemetry.trace, opentelemetry.context, opentelemetry.propagate)
    _provider = provider
    _tracer = provider.get_tracer("lumenserve.serving", service_version or None)
    return True


def _otlp_exporter(protocol: str) -> Any:
    """The SDK's OTLP span exporter (it reads endpoint, headers, TLS and timeout from ``OTEL_*``)."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


class _Api:
    def __init__(self, trace: Any, context: Any, propagate: Any) -> None:
        self.trace, self.context, self.propagate = trace, context, propagate
        self.SERVER = trace.SpanKind.SERVER
        self.ERROR = trace.StatusCode.ERROR


def enabled() -> bool:
    return _tracer is not None


def shutdown() -> None:
    """Export what is buffered and stop (the server's last step); tracing is off after it."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


# ---- the request span (the transport edge, serving/observe.py) ---------------------------
class RequestSpan:
    """A request's SERVER span, current in its task from :func:`start_request` to :meth:`end`."""

    __slots__ = ("_token", "span")

    def __init__(self, span: Any, token: Any) -> None:
        self.span = span
        self._token = token

    @property
    def trace_id(self) -> str:
        return format(self.span.get_span_context().trace_id, "032x")

    def set(self, attributes: Mapping[str, Any]) -> None:
        self.span.set_attributes(attributes)

    def end(self, status: str, http_status: int | None = None, message: str = "") -> None:
        """``status``: the gRPC code name (OK, INVALID_ARGUMENT, ...) the request ended with."""
        span = self.span
        span.set_attribute("lumenserve.status", status)
        if http_status is not None:
            span.set_attribute("http.response.status_code", http_status)
            failed = http_status >= 500
        else:
            span.set_attribute("rpc.grpc.status_code", grpc.StatusCode[status].value[0])
            failed = status in GRPC_SERVER_ERRORS
        if failed:
            span.set_status(_otel.ERROR, message or status)
        span.end()
        _otel.context.detach(self._token)


def start_request(name: str, carrier: Mapping[str, str], attributes: Mapping[str, Any]) -> RequestSpan | None:
    """A SERVER span continuing the trace context in ``carrier`` (HTTP headers or gRPC metadata,
    lower-case keys), made current; None when tracing is off."""
    if _tracer is None:
        return None
    parent = _otel.propagate.extract(carrier)
    span = _tracer.start_span(name, context=parent, kind=_otel.SERVER, attributes=attributes)
    token = _otel.context.attach(_otel.trace.set_span_in_context(span, parent))
    return RequestSpan(span, token)


# ---- child spans (the road's hooks) --------------------------------------------------------
def phase(name: str, attributes: Mapping[str, Any] | None = None) -> AbstractContextManager[Any]:
    """A child span of the current request around a step (``with tracing.phase("preprocess"):``);
    a shared no-op context when tracing is off."""
    if _tracer is None:
        return _NOOP
    return _tracer.start_as_current_span(name, attributes=attributes)


class Queued:
    """A request waiting in the batcher: its request span and its ``queue`` span."""

    __slots__ = ("queue_span", "request_span")

    def __init__(self, request_span: Any, queue_span: Any) -> None:
        self.request_span = request_span
        self.queue_span: Any = queue_span

    def left_queue(self) -> None:
        """End the queue span (idempotent: the batch start or the caller leaving ends it)."""
        if self.queue_span is not None:
            self.queue_span.end()
            self.queue_span = None


def queued(depth: int) -> Queued | None:
    """Called as a request enters the batcher's queue (``depth``: requests ahead of it)."""
    if _tracer is None:
        return None
    request_span = _otel.trace.get_current_span()
    if not request_span.is_recording():
        return None
    return Queued(request_span, _tracer.start_span("queue", attributes={"lumenserve.queue_depth": depth}))


class _Batched(Protocol):
    trace: Queued | None
    rows: int


def start_batch(batch: Sequence[_Batched]) -> Any:
    """The ``batch`` span of one model call (None when off or no request of it is traced):
    ends each request's queue span, links the batch to every request span."""
    if _tracer is None:
        return None
    traced = [item.trace for item in batch if item.trace is not None]
    if not traced:
        return None
    for handle in traced:
        handle.left_queue()
    first = traced[0].request_span
    known = first.attributes
    attributes = {key: known[key] for key in ("lumenserve.model", "lumenserve.model_version") if key in known}
    attributes["lumenserve.batch_size"] = sum(item.rows for item in batch)
    attributes["lumenserve.batch_requests"] = len(batch)
    links = [_otel.trace.Link(h.request_span.get_span_context()) for h in traced]
    return _tracer.start_span(
        "batch", context=_otel.trace.set_span_in_context(first), links=links, attributes=attributes
    ), traced


def end_batch(started: Any, error: BaseException | None = None) -> None:
    """End the batch span; every request span of the batch links to it."""
    if started is None:
        return
    span, traced = started
    if error is not None:
        span.record_exception(error)
        span.set_status(_otel.ERROR, f"model call failed: {error!r}")
    rows = span.attributes["lumenserve.batch_size"]
    context = span.get_span_context()
    for handle in traced:
        if handle.request_span.is_recording():  # not a caller that already left
            handle.request_span.add_link(context, {"lumenserve.batch_size": rows})
            handle.request_span.set_attribute("lumenserve.batch_size", rows)
    span.end()
