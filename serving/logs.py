"""The server's log output: ``text`` (one readable line) or ``json`` (one JSON object per line).

Every record goes to stderr through one handler carrying
:class:`~serving.observe.RequestContextFilter`, so what is written while a request is being
answered carries its ``request_id`` (and ``trace_id`` when tracing). uvicorn's loggers
propagate here too (the server gives uvicorn no logging config of its own).

JSON keys: ``time`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``, ``message``, then
``request_id`` / ``trace_id`` when known, the access log's fields (serving/observe.py) on
access lines, and ``exception`` (the traceback) when one is attached.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import orjson

from serving.observe import RequestContextFilter

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``, then ``key=value`` pairs: the access log's fields, or the request id
    and trace id of a line written inside a request."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        pairs = _context_fields(record)
        if not pairs:
            return line
        head, newline, rest = line.partition("\n")  # keep a traceback below the line
        tail = " ".join(f"{key}={value}" for key, value in pairs.items())
        return f"{head} {tail}{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record (keys in the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_context_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def _context_fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    if isinstance(fields, dict):
        return fields
    found = {}
    for key in ("request_id", "trace_id"):
        value = getattr(record, key, None)
        if value is not None:
            found[key] = value
    return found


def log_handler(log_format: LogFormat, stream: TextIO | None = None) -> logging.Handler:
    """A handler writing ``log_format`` lines to ``stream`` (default stderr), request ids stamped."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RequestContextFilter())
    return handler


def configure_logging(level: str = "info", log_format: LogFormat = "text") -> None:
    """Replace the root logger's handlers with one stderr handler in ``log_format``."""
    handler = log_handler(log_format)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
