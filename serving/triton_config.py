"""Triton's model configuration extension: a served model described as ``inference.ModelConfig``.

The answer is the JSON form of Triton's ``ModelConfig`` message (``model_config.proto``):
the HTTP route returns it as is and the gRPC servicer parses it into the message, so both
transports say the same thing. Facts come from the bundle manifest and the model's
effective settings; nothing here is stored twice.

Triton's rules kept here: when ``max_batch_size`` > 0 the batch dimension is left out of
``dims``; ``BYTES`` is ``TYPE_STRING``; durations are in microseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lumenserve.bundle import TensorSpec

TRITON_DATATYPES = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BF16": "TYPE_BF16",
    "BYTES": "TYPE_STRING",
}
PLATFORMS = {"onnx": ("onnxruntime_onnx", "onnxruntime"), "torchscript": ("pytorch_libtorch", "pytorch")}
"""Runtime kind -> (Triton platform, Triton backend)."""


@dataclass(frozen=True, slots=True)
class ConfigFacts:
    """What the configuration is built from (the served model fills it in)."""

    name: str
    runtime: str
    """``onnx`` or ``torchscript``."""
    inputs: Sequence[TensorSpec]
    outputs: Sequence[TensorSpec]
    max_batch_size: int
    """0: the model takes no batch dimension (Triton's non-batching model)."""
    max_queue_delay_s: float
    max_queue_size: int
    default_timeout_s: float
    instances: int
    gpu: bool
    version_policy: Mapping[str, Any] = field(default_factory=lambda: {"latest": {"num_versions": 1}})
    parameters: Mapping[str, str] = field(default_factory=dict)
    """Extra facts (raw input name, explain methods...) as Triton string parameters."""
    label_output: str | None = None
    """The output whose rows index ``labels`` (Triton's ``label_filename``)."""


def _microseconds(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _tensor(spec: TensorSpec, batching: bool) -> dict[str, Any]:
    dims = list(spec.shape[1:] if batching else spec.shape)
    return {"name": spec.name, "data_type": TRITON_DATATYPES[spec.datatype], "dims": dims}


def model_config(facts: ConfigFacts) -> dict[str, Any]:
    """The JSON form of ``inference.ModelConfig`` for one model version."""
    batching = facts.max_batch_size > 0
    platform, backend = PLATFORMS.get(facts.runtime, (facts.runtime, facts.runtime))
    outputs = []
    for spec in facts.outputs:
        entry = _tensor(spec, batching)
        if spec.name == facts.label_output:
            entry["label_filename"] = "labels.txt"
        outputs.append(entry)
    config: dict[str, Any] = {
        "name": facts.name,
        "platform": platform,
        "backend": backend,
        "version_policy": dict(facts.version_policy),
        "max_batch_size": facts.max_batch_size,
        "input": [{**_tensor(spec, batching), "format": "FORMAT_NONE"} for spec in facts.inputs],
        "output": outputs,
        "instance_group": [
            {"name": facts.name, "kind": "KIND_GPU" if facts.gpu else "KIND_CPU", "count": facts.instances}
        ],
        "parameters": {key: {"string_value": value} for key, value in sorted(facts.parameters.items())},
    }
    if batching:
        config["dynamic_batching"] = {
            "max_queue_delay_microseconds": _microseconds(facts.max_queue_delay_s),
            "preferred_batch_size": [],
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": _microseconds(facts.default_timeout_s),
                "allow_timeout_override": True,
                "max_queue_size": facts.max_queue_size,
            },
        }
    return config
