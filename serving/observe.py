"""What an infer or explain request leaves behind besides its answer: its request id (echoed
back to the caller), one access log line (opt-in) and its trace span (serving/tracing.py).

Each transport's edge (``observed`` in ``serving/http/app.py`` and ``serving/grpc/servicer.py``)
opens a :class:`RequestScope` around the call, current in a context variable for the
request's task, and closes it with the status the caller got. Inside, the data plane notes
the request's OIP ``id`` and the served version (:func:`note_request`, :func:`note_model`),
and :class:`RequestContextFilter` stamps every log record written meanwhile (the one line of
an internal error included) with the request id and trace id.

The request id: the ``X-Request-ID`` header (HTTP) or ``x-request-id`` metadata (gRPC) when
the caller sent one, else the request's OIP ``id``, else a generated one (32 hex digits). It
is sent back as the ``X-Request-ID`` header / ``x-request-id`` trailing metadata on every
answer, errors included; the response body's ``id`` stays the request's own (OIP).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from typing import Any

from serving import tracing
from serving.types import InferenceRequest

REQUEST_ID = "x-request-id"
"""The header (HTTP) and metadata key (gRPC) carrying the request id both ways."""
MAX_REQUEST_ID = 128
"""Longer ids from a caller (header or OIP ``id``) are not used; a fresh one is generated."""

access_log = logging.getLogger("lumenserve.access")
"""One INFO line per infer/explain request when enabled (``access_log`` setting)."""
_current: ContextVar[RequestScope | None] = ContextVar("lumenserve_request", default=None)


def enable_access_log(on: bool) -> None:
    access_log.setLevel(logging.INFO if on else logging.WARNING)


def _usable(request_id: str | None) -> str | None:
    if request_id and len(request_id) <= MAX_REQUEST_ID and request_id.isprintable():
        return request_id
    return None


class RequestScope:
    """One request at the transport edge, from arrival to answer."""

    __slots__ = ("_given", "_id", "_token", "endpoint", "model", "protocol", "span", "start", "version")

    def __init__(self, protocol: str, endpoint: str, given_id: str | None, model: str, version: str) -> None:
        self.protocol = protocol
        self.endpoint = endpoint
        self.model = model
        self.version = version
        self._given = _usable(given_id)
        self._id: str | None = self._given
        self.span: tracing.RequestSpan | None = None
        self.start = time.perf_counter()
        self._token: Token[RequestScope | None] | None = None

    @classmethod
    def open(
        cls,
        protocol: str,
        endpoint: str,
        given_id: str | None,
        model: str,
        version: str,
        span_name: str,
        span_attributes: Callable[[], tuple[Mapping[str, str], dict[str, Any]]],
    ) -> RequestScope:
        """Start the scope (current from here); ``span_attributes``: the trace context carrier
        (lower-case keys) and the span's transport attributes, asked for only when tracing."""
        scope = cls(protocol, endpoint, given_id, model, version)
        if tracing.enabled():
            carrier, attributes = span_attributes()
            attributes["lumenserve.model"] = model
            attributes["lumenserve.model_version"] = version
            scope.span = tracing.start_request(span_name, carrier, attributes)
        scope._token = _current.set(scope)
        return scope

    @property
    def request_id(self) -> str:
        if self._id is None:
            self._id = secrets.token_hex(16)
        return self._id

    @property
    def trace_id(self) -> str | None:
        return self.span.trace_id if self.span is not None else None

    def close(self, status: str, http_status: int | None = None, message: str = "") -> None:
        """``status``: the gRPC code name the caller got (OK, INVALID_ARGUMENT, CANCELLED...);
        ``message``: the client's error message."""
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        if self.span is not None:
            self.span.set({"lumenserve.request_id": self.request_id})
            self.span.end(status, http_status, message)
        if access_log.isEnabledFor(logging.INFO):
            self._access_line(status, http_status, message)

    def _access_line(self, status: str, http_status: int | None, message: str) -> None:
        millis = (time.perf_counter() - self.start) * 1000
        fields: dict[str, Any] = {
            "request_id": self.request_id,
            "trace_id": self.trace_id,
            "protocol": self.protocol,
            "endpoint": self.endpoint,
            "model": self.model,
            "version": self.version,
            "status": status,
            "http_status": http_status,
            "duration_ms": round(millis, 3),
            "error": message or None,
        }
        fields = {key: value for key, value in fields.items() if value is not None}
        access_log.info(
            "%s %s %s/%s %s %.1f ms",
            self.protocol,
            self.endpoint,
            self.model,
            self.version or "-",
            status,
            millis,
            extra={"fields": fields},
        )


def current() -> RequestScope | None:
    return _current.get()


def note_request(request: InferenceRequest) -> None:
    """The data plane saw the decoded request: its OIP ``id`` is the request id unless the
    caller sent a header/metadata one."""
    scope = _current.get()
    if scope is not None and scope._given is None and scope._id is None:
        scope._id = _usable(request.id)


def note_model(name: str, version: str) -> None:
    """The model version that answers the request (the caller may have asked for "latest")."""
    scope = _current.get()
    if scope is not None:
        scope.model, scope.version = name, version
        if scope.span is not None:
            scope.span.set({"lumenserve.model": name, "lumenserve.model_version": version})


class RequestContextFilter(logging.Filter):
    """Stamps each record written inside a request's scope with ``request_id`` (and
    ``trace_id`` when tracing); installed on the server's log handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        scope = _current.get()
        if scope is not None and not hasattr(record, "fields"):
            record.request_id = scope.request_id
            trace_id = scope.trace_id
            if trace_id is not None:
                record.trace_id = trace_id
        return True
