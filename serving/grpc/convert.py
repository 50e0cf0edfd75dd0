"""protobuf <-> :mod:`serving.types` (the only thing the gRPC transport does besides calling the data plane)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np

from serving.codecs.tensors import TensorHeader, tensor_header, to_raw
from serving.errors import InvalidInput
from serving.protogen import grpc_service_pb2 as pb
from serving.types import InferenceRequest, InferenceResponse, RequestedOutput, Tensor

# v2 datatype -> InferTensorContents field holding it
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameters_of(params: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, param in params.items():
        which = param.WhichOneof("parameter_choice")
        out[key] = getattr(param, which) if which else None
    return out


def set_parameters(target: Any, params: Mapping[str, Any]) -> None:
    for key, value in params.items():
        param = target[key]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int):
            if value >= 0 and value >= 1 << 63:
                param.uint64_param = value
            else:
                param.int64_param = value
        elif isinstance(value, float):
            param.double_param = value
        else:
            param.string_param = str(value)


def to_request(message: pb.ModelInferRequest, time_remaining: float | None) -> InferenceRequest:
    """Every input's header is checked first (shape, datatype), then the framing, then contents."""
    headers = [tensor_header(tensor.name, tensor.datatype, tensor.shape) for tensor in message.inputs]
    raw = message.raw_input_contents
    if raw:
        if len(raw) != len(message.inputs):
            raise InvalidInput(f"{len(raw)} raw_input_contents for {len(message.inputs)} inputs (one each expected)")
        for tensor in message.inputs:
            if tensor.HasField("contents"):  # as Triton: one request uses one form
                raise InvalidInput(
                    f"input {tensor.name!r}: contents must not be set when the request carries raw_input_contents"
                )
    inputs: list[Tensor] = []
    for index, (header, tensor) in enumerate(zip(headers, message.inputs, strict=True)):
        data = header.from_raw(raw[index]) if raw else _from_contents(header, tensor.contents)
        inputs.append(Tensor(header.name, header.datatype, data, parameters_of(tensor.parameters)))
    outputs = [RequestedOutput(o.name, parameters_of(o.parameters)) for o in message.outputs] or None
    return InferenceRequest(
        model=message.model_name,
        version=message.model_version,
        id=message.id,
        inputs=inputs,
        outputs=outputs,
        parameters=parameters_of(message.parameters),
        deadline=None if time_remaining is None else time.monotonic() + time_remaining,
    )


def _from_contents(header: TensorHeader, contents: pb.InferTensorContents) -> np.ndarray:
    field = CONTENTS_FIELD.get(header.datatype)
    if field is None:
        raise InvalidInput(f"input {header.name!r}: {header.datatype} travels only in raw_input_contents")
    return header.from_list(list(getattr(contents, field)))


def from_response(response: InferenceResponse) -> pb.ModelInferResponse:
    """Outputs always travel as raw contents (what tritonclient and Triton use)."""
    message = pb.ModelInferResponse(model_name=response.model, model_version=response.version, id=response.id)
    set_parameters(message.parameters, response.parameters)
    raws: list[bytes] = []
    for tensor in response.outputs:
        out = message.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.data.shape)
        params = {k: v for k, v in tensor.parameters.items() if k not in ("binary_data", "classification")}
        set_parameters(out.parameters, params)
        raws.append(to_raw(tensor.data))
    message.raw_output_contents.extend(raws)
    return message


def repository_model_name(message: pb.RepositoryModelLoadRequest | pb.RepositoryModelUnloadRequest) -> str:
    """The model name of a repository request: Triton's ``model_name = 2``, else field 1.

    tritonclient sends Triton's message (``repository_name = 1, model_name = 2``); KServe's
    clients send their own, whose field 1 is the model name.
    """
    return message.model_name or message.repository_name


RepositoryAnswer = TypeVar("RepositoryAnswer", pb.RepositoryModelLoadResponse, pb.RepositoryModelUnloadResponse)


def repository_answer(kind: type[RepositoryAnswer], model_name: str) -> RepositoryAnswer:
    """Triton's (empty) load/unload answer, carrying KServe's ``model_name = 1`` and
    ``isLoaded``/``isUnloaded = 2`` (true) as fields Triton's clients skip and KServe's read."""
    name = model_name.encode("utf-8")
    return kind.FromString(b"\x0a" + _varint(len(name)) + name + b"\x10\x01")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
