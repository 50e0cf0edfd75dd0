"""The two errors explain raises on purpose; serving maps them to the protocol's error table.

| exception | gRPC | HTTP |
|---|---|---|
| :class:`ExplainParameterError` | INVALID_ARGUMENT | 400 |
| :class:`UnsupportedMethodError` | UNIMPLEMENTED | 501 |
"""

from __future__ import annotations


class ExplainError(Exception):
    """Base class of explain's deliberate errors (the message is safe to show a client)."""


class ExplainParameterError(ExplainError, ValueError):
    """A method parameter, target or input is out of its documented bounds (-> INVALID_ARGUMENT / 400)."""


class UnsupportedMethodError(ExplainError):
    """The method is unknown or cannot apply to this model (-> UNIMPLEMENTED / 501).

    Examples: Grad-CAM on a text model, attention maps on a CNN, or any method on a model
    whose eager twin failed the startup check against the served runtime.
    """
