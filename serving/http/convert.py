"""HTTP bodies <-> :mod:`serving.types`: JSON (orjson) and the binary tensor extension.

Binary extension: the body is the JSON header followed by raw tensors;
``Inference-Header-Content-Length`` gives the JSON length and each binary input carries
``parameters.binary_data_size``. Outputs go binary when the output asks
``parameters.binary_data: true`` (or the request ``parameters.binary_data_output: true``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from serving.codecs.tensors import TensorHeader, tensor_header, to_raw
from serving.errors import InvalidInput
from serving.types import InferenceRequest, InferenceResponse, RequestedOutput, Tensor

HEADER_LENGTH = "inference-header-content-length"
_HIDDEN_OUTPUT_PARAMETERS = ("binary_data", "classification")


def _loads(data: bytes | memoryview) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None


def _dict(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object")
    return value


def to_request(body: bytes, header_length: str | None, model: str, version: str) -> InferenceRequest:
    view = memoryview(body)
    if header_length is not None:
        try:
            json_length = int(header_length)
        except ValueError:
            raise InvalidInput(f"Inference-Header-Content-Length {header_length!r} is not an integer") from None
        if json_length < 0 or json_length > len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length {json_length} does not fit a body of {len(body)} bytes"
            )
        doc, binary = _loads(view[:json_length]), view[json_length:]
    else:
        doc, binary = _loads(view), view[len(view) :]
    doc = _dict(doc, "the request")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("the request needs a non-empty 'inputs' list")
    declared = [_declared_input(index, item) for index, item in enumerate(raw_inputs)]  # checked before decoding
    inputs: list[Tensor] = []
    offset = 0
    for header, item, params, size in declared:
        if size is not None:
            if offset + size > len(binary):
                raise InvalidInput(
                    f"input {header.name!r}: binary_data_size {size} runs past the end of the body "
                    f"({len(binary) - offset} bytes left)"
                )
            data = header.from_raw(binary[offset : offset + size])
            offset += size
        else:
            data = header.from_list(item["data"])
        inputs.append(Tensor(header.name, header.datatype, data, params))
    if offset != len(binary):
        raise InvalidInput(f"body holds {len(binary) - offset} bytes of binary data that no input declares")
    outputs = None
    if doc.get("outputs") is not None:
        if not isinstance(doc["outputs"], list):
            raise InvalidInput("'outputs' must be a list")
        outputs = []
        for index, out in enumerate(doc["outputs"]):
            out = _dict(out, f"outputs[{index}]")
            if not isinstance(out.get("name"), str):
                raise InvalidInput(f"outputs[{index}] needs a string 'name'")
            outputs.append(RequestedOutput(out["name"], _dict(out.get("parameters"), "output parameters")))
    request_id = doc.get("id", "")
    return InferenceRequest(
        model=model,
        version=version,
        id=request_id if isinstance(request_id, str) else str(request_id),
        inputs=inputs,
        outputs=outputs,
        parameters=_dict(doc.get("parameters"), "parameters"),
    )


def _declared_input(index: int, item: Any) -> tuple[TensorHeader, dict[str, Any], dict[str, Any], int | None]:
    """(checked header, the JSON entry, its parameters without binary_data_size, binary_data_size)."""
    item = _dict(item, f"inputs[{index}]")
    name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
    if not isinstance(name, str) or not isinstance(datatype, str):
        raise InvalidInput(f"inputs[{index}] needs string 'name' and 'datatype'")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise InvalidInput(f"input {name!r}: 'shape' must be a list of integers")
    header = tensor_header(name, datatype, shape)
    params = dict(_dict(item.get("parameters"), f"input {name!r} parameters"))
    size = params.pop("binary_data_size", None)
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInput(f"input {name!r}: binary_data_size must be a non-negative integer")
        if "data" in item:
            raise InvalidInput(f"input {name!r}: give either 'data' or parameters.binary_data_size, not both")
    elif "data" not in item:
        raise InvalidInput(f"input {name!r}: needs 'data' or parameters.binary_data_size")
    return header, item, params, size


def from_response(response: InferenceResponse, request: InferenceRequest) -> tuple[bytes, int | None]:
    """(body, JSON header length when binary outputs follow, else None)."""
    default_binary = bool(request.parameters.get("binary_data_output", False))
    outputs: list[dict[str, Any]] = []
    raws: list[bytes] = []
    for tensor in response.outputs:
        binary = bool(tensor.parameters.get("binary_data", default_binary))
        params = {k: v for k, v in tensor.parameters.items() if k not in _HIDDEN_OUTPUT_PARAMETERS}
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.data.shape)}
        if binary:
            raw = to_raw(tensor.data)
            params["binary_data_size"] = len(raw)
            raws.append(raw)
        elif tensor.datatype == "BYTES":
            entry["data"] = [_text(x) for x in tensor.data.reshape(-1)]
        else:
            entry["data"] = np.ascontiguousarray(tensor.data).reshape(-1)
        if params:
            entry["parameters"] = params
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": response.model, "model_version": response.version, "outputs": outputs}
    if response.id:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not raws:
        return head, None
    return b"".join([head, *raws]), len(head)


def _text(item: Any) -> str:
    if isinstance(item, bytes):
        return item.decode("utf-8", errors="replace")
    return str(item)
