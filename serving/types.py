"""The one internal request/response type every transport converts to and from.

Tensors hold numpy arrays already shaped; BYTES tensors are object arrays of ``bytes``.
Arrays decoded from raw contents are read-only views of the received buffer (no copy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.errors import InvalidInput

Parameters = dict[str, Any]
Feed = dict[str, np.ndarray]
"""Model inputs or outputs by tensor name, batch first."""


@dataclass(slots=True)
class Tensor:
    """A named tensor: ``data.shape`` is the tensor's shape; ``datatype`` its v2 name."""

    name: str
    datatype: str
    data: np.ndarray
    parameters: Parameters = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


@dataclass(slots=True)
class RequestedOutput:
    """An output the client asked for; ``classification`` > 0 asks for top-k strings."""

    name: str
    parameters: Parameters = field(default_factory=dict)

    @property
    def classification(self) -> int:
        """Top-k count asked for (0: none). Raises InvalidInput for anything but a count."""
        value = self.parameters.get("classification", 0)
        if value is None or value is False:
            return 0
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInput(f"output {self.name!r}: parameter 'classification' must be a non-negative integer")
        return value


@dataclass(slots=True)
class InferenceRequest:
    """One infer (or explain) call. ``deadline`` is a ``time.monotonic()`` instant or None."""

    model: str
    version: str = ""
    id: str = ""
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[RequestedOutput] | None = None
    parameters: Parameters = field(default_factory=dict)
    deadline: float | None = None


@dataclass(slots=True)
class InferenceResponse:
    model: str
    version: str
    id: str = ""
    outputs: list[Tensor] = field(default_factory=list)
    parameters: Parameters = field(default_factory=dict)
