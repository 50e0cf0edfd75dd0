"""Typed serving errors and the ONE table mapping each to (HTTP status, gRPC code).

The table is protocol.md's. Anything else that escapes is a bug: transports answer it with
a generic INTERNAL/500 and the details go only to the log (:func:`status_of`).
"""

from __future__ import annotations

import logging

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


ERROR_TABLE: dict[type[ServingError], tuple[int, grpc.StatusCode]] = {
    InvalidInput: (400, grpc.StatusCode.INVALID_ARGUMENT),
    ModelNotFound: (404, grpc.StatusCode.NOT_FOUND),
    PayloadTooLarge: (413, grpc.StatusCode.RESOURCE_EXHAUSTED),
    Unavailable: (503, grpc.StatusCode.UNAVAILABLE),
    DeadlineExceeded: (504, grpc.StatusCode.DEADLINE_EXCEEDED),
    Unauthenticated: (401, grpc.StatusCode.UNAUTHENTICATED),
    PermissionDenied: (403, grpc.StatusCode.PERMISSION_DENIED),
    Unimplemented: (501, grpc.StatusCode.UNIMPLEMENTED),
    InternalError: (500, grpc.StatusCode.INTERNAL),
}
GENERIC_INTERNAL = "internal error (details in the server log)"
MAX_MESSAGE_CHARS = 1024
"""Longest client message: they may quote client input (a model name, a text) and gRPC carries
them in trailing metadata, which peers cap at 8-16 KiB (a longer one arrives as a transport error)."""


def clip_message(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return f"{message[:MAX_MESSAGE_CHARS]}... (truncated, {len(message)} characters)"


def status_of(exc: BaseException) -> tuple[int, grpc.StatusCode, str]:
    """(HTTP status, gRPC code, client message) for any exception; unknown ones are logged."""
    for kind, (http_status, code) in ERROR_TABLE.items():
        if isinstance(exc, kind):
            message = GENERIC_INTERNAL if kind is InternalError else clip_message(str(exc))
            if kind is InternalError:
                log.error("internal error: %s", exc, exc_info=exc)
            return http_status, code, message
    log.error("unhandled error", exc_info=exc)
    return 500, grpc.StatusCode.INTERNAL, GENERIC_INTERNAL
