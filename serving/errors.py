"""Typed serving errors and the ONE table mapping each to (HTTP status, gRPC code).

The table is protocol.md's. :func:`classify` is pure: it maps any exception to what the
client sees and logs nothing. The transports' adapters (``serving/http/app.py``
``error_response``, ``serving/grpc/servicer.py`` ``abort_with``) are the edge: they classify
once and log the details of an internal error once (:func:`log_internal`).
"""

from __future__ import annotations

import logging
import sys
from typing import NamedTuple

import grpc

log = logging.getLogger("lumenserve.serving")


class ServingError(Exception):
    """Base of the errors clients may see; the message is sent as is."""


class InvalidInput(ServingError):
    """Malformed request, wrong shape/dtype/size, undecodable image or text."""


class ModelNotFound(ServingError):
    """Unknown model or version."""


class PayloadTooLarge(ServingError):
    """Payload over the configured limit."""


class Unavailable(ServingError):
    """Queue full, model not ready, server draining."""


class DeadlineExceeded(ServingError):
    """The deadline passed before the work ran."""


class Unauthenticated(ServingError):
    """No token on a guarded API."""


class PermissionDenied(ServingError):
    """Wrong token on a guarded API (or the API is disabled)."""


class Unimplemented(ServingError):
    """Method not supported for this model."""


class InternalError(ServingError):
    """A bug or a model crash (message stays generic)."""


ERROR_TABLE: dict[type[Exception], tuple[int, grpc.StatusCode]] = {
    InvalidInput: (400, grpc.StatusCode.INVALID_ARGUMENT),
    ModelNotFound: (404, grpc.StatusCode.NOT_FOUND),
    PayloadTooLarge: (413, grpc.StatusCode.RESOURCE_EXHAUSTED),
    Unavailable: (503, grpc.StatusCode.UNAVAILABLE),
    DeadlineExceeded: (504, grpc.StatusCode.DEADLINE_EXCEEDED),
    Unauthenticated: (401, grpc.StatusCode.UNAUTHENTICATED),
    PermissionDenied: (403, grpc.StatusCode.PERMISSION_DENIED),
    Unimplemented: (501, grpc.StatusCode.UNIMPLEMENTED),
}
"""Client errors, sent with their own message. Anything else is internal: 500 / INTERNAL with
:data:`GENERIC_INTERNAL` (the details only in the server log)."""
EXPLAIN_TABLE = {
    "ExplainParameterError": (400, grpc.StatusCode.INVALID_ARGUMENT),
    "UnsupportedMethodError": (501, grpc.StatusCode.UNIMPLEMENTED),
}
"""The explain library's deliberate errors (``explain/errors.py``), in the same table. Named, not
imported: importing ``explain`` loads torch, which the predict path never needs; when the
module is not loaded, no such error can exist."""
GENERIC_INTERNAL = "internal error (details in the server log)"
MAX_MESSAGE_CHARS = 1024
"""Longest client message: they may quote client input (a model name, a text) and gRPC carries
them in trailing metadata, which peers cap at 8-16 KiB (a longer one arrives as a transport error)."""


class Classified(NamedTuple):
    http_status: int
    grpc_code: grpc.StatusCode
    message: str

    @property
    def internal(self) -> bool:
        return self.grpc_code is grpc.StatusCode.INTERNAL


def clip_message(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return f"{message[:MAX_MESSAGE_CHARS]}... (truncated, {len(message)} characters)"


def classify(exc: BaseException) -> Classified:
    """(HTTP status, gRPC code, client message) for any exception. Pure: logs nothing."""
    for kind, (http_status, code) in ERROR_TABLE.items():
        if isinstance(exc, kind):
            return Classified(http_status, code, clip_message(str(exc)))
    explain_errors = sys.modules.get("explain.errors")
    if explain_errors is not None:
        for name, (http_status, code) in EXPLAIN_TABLE.items():
            if isinstance(exc, getattr(explain_errors, name)):
                return Classified(http_status, code, clip_message(str(exc)))
    return Classified(500, grpc.StatusCode.INTERNAL, GENERIC_INTERNAL)


def log_internal(exc: BaseException, where: str) -> None:
    """The one log line of an internal error (called by a transport adapter, once per request)."""
    cause = exc.__cause__ if isinstance(exc, InternalError) and exc.__cause__ is not None else exc
    log.error("internal error in %s: %s", where, exc, exc_info=cause)
