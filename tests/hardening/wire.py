"""One transport-neutral description of a request, sent over HTTP (httpx) or gRPC (raw stubs).

Everything here is plain picklable data, so the same requests also travel to the load
generator processes of the drain and soak tests.
"""

from __future__ import annotations

import struct
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

GRPC_CONTENTS = {
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
HTTP_OF_GRPC = {
    "OK": 200,
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 413,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
}


@dataclass
class In:
    """One input: ``raw`` bytes (gRPC raw contents / HTTP binary extension) or a ``data`` list."""

    name: str
    datatype: str
    shape: list[int]
    raw: bytes | None = None
    data: Any = None
    contents_field: str | None = None
    """gRPC only: put ``data`` in this InferTensorContents field instead of the datatype's own."""


@dataclass
class Call:
    model: str = "tiny-image"
    inputs: list[In] = field(default_factory=list)
    version: str = ""
    endpoint: str = "infer"
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    grpc_raw_contents: list[bytes] | None = None
    """gRPC only: send exactly these raw_input_contents (e.g. a count that does not match the inputs)."""
    timeout: float = 60.0


@dataclass
class Answer:
    status: str
    """gRPC code name, or the HTTP status as a string."""
    message: str
    outputs: dict[str, np.ndarray] = field(default_factory=dict)


def raw_of(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array).tobytes()


def tensor_input(name: str, array: np.ndarray, datatype: str, *, raw: bool = True) -> In:
    if raw:
        return In(name, datatype, list(array.shape), raw=raw_of(array))
    return In(name, datatype, list(array.shape), data=array.reshape(-1).tolist())


# ---- HTTP ---------------------------------------------------------------------------------
def http_path(call: Call) -> str:
    model = _segment(call.model)
    version = f"/versions/{_segment(call.version)}" if call.version else ""
    return f"/v2/models/{model}{version}/{call.endpoint}"


def _segment(text: str) -> str:
    """A path segment with every special character escaped, dots too (clients drop '..' segments)."""
    return urllib.parse.quote(text, safe="").replace(".", "%2E")


def http_body(call: Call) -> tuple[bytes, dict[str, str]]:
    """The JSON body, or the binary-extension body with its header when any input is raw."""
    import orjson

    raws: list[bytes] = []
    inputs = []
    for item in call.inputs:
        entry: dict[str, Any] = {"name": item.name, "datatype": item.datatype, "shape": item.shape}
        if item.raw is not None:
            entry["parameters"] = {"binary_data_size": len(item.raw)}
            raws.append(item.raw)
        else:
            entry["data"] = item.data
        inputs.append(entry)
    doc: dict[str, Any] = {"inputs": inputs}
    if call.parameters:
        doc["parameters"] = call.parameters
    if call.outputs:
        doc["outputs"] = [{"name": n} for n in call.outputs]
    head = orjson.dumps(doc)
    if not raws:
        return head, {"content-type": "application/json"}
    headers = {"content-type": "application/octet-stream", "inference-header-content-length": str(len(head))}
    return head + b"".join(raws), headers


def http_answer(response: httpx.Response) -> Answer:
    if response.status_code != 200:
        try:
            message = str(response.json()["error"])
        except Exception:  # the assertion on the body shape is the caller's
            message = f"<non-JSON error body> {response.text[:200]!r}"
        return Answer(str(response.status_code), message)
    header = response.headers.get("inference-header-content-length")
    body = response.content
    doc_bytes = body[: int(header)] if header else body
    import orjson

    doc = orjson.loads(doc_bytes)
    outputs: dict[str, np.ndarray] = {}
    offset = int(header) if header else 0
    for out in doc["outputs"]:
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            outputs[out["name"]] = _from_raw(out["datatype"], out["shape"], body[offset : offset + size])
            offset += size
        elif out["datatype"] == "BYTES":
            outputs[out["name"]] = np.array(out["data"], dtype=object).reshape(out["shape"])
        else:
            outputs[out["name"]] = np.array(out["data"]).reshape(out["shape"])
    return Answer("200", "", outputs)


def http_send(client: httpx.Client, call: Call, headers: dict[str, str] | None = None) -> Answer:
    body, base = http_body(call)
    response = client.post(http_path(call), content=body, headers={**base, **(headers or {})}, timeout=call.timeout)
    return http_answer(response)


# ---- gRPC ----------------------------------------------------
_NUMPY = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "INT32": "<i4", "UINT8": "u1", "BOOL": "?"}


def _from_raw(datatype: str, shape: list[int], raw: bytes) -> np.ndarray:
    if datatype == "BYTES":
        items, offset = [], 0
        while offset < len(raw):
            (n,) = struct.unpack_from("<I", raw, offset)
            items.append(raw[offset + 4 : offset + 4 + n])
            offset += 4 + n
        return np.array(items, dtype=object).reshape(shape)
    return np.frombuffer(raw, dtype=_NUMPY[datatype]).reshape(shape)


def grpc_message(call: Call) -> Any:
    from serving.protogen import grpc_service_pb2 as pb

    message = pb.ModelInferRequest(model_name=call.model, model_version=call.version)
    for key, value in call.parameters.items():
        if isinstance(value, bool):
            message.parameters[key].bool_param = value
        elif isinstance(value, int):
            message.parameters[key].int64_param = value
        elif isinstance(value, float):
            message.parameters[key].double_param = value
        else:
            message.parameters[key].string_param = str(value)
    for item in call.inputs:
        tensor = message.inputs.add(name=item.name, datatype=item.datatype, shape=item.shape)
        if item.raw is not None:
            message.raw_input_contents.append(item.raw)
        elif item.data is not None:
            contents_field = item.contents_field or GRPC_CONTENTS.get(item.datatype, "fp32_contents")
            values = item.data
            if contents_field == "bytes_contents":
                values = [v.encode() if isinstance(v, str) else v for v in values]
            getattr(tensor.contents, contents_field).extend(values)
    if call.grpc_raw_contents is not None:
        del message.raw_input_contents[:]
        message.raw_input_contents.extend(call.grpc_raw_contents)
    for name in call.outputs:
        message.outputs.add(name=name)
    return message


def grpc_channel(url: str, root_cert: bytes | None = None, options: list[tuple[str, Any]] | None = None) -> Any:
    import grpc

    options = [
        ("grpc.max_send_message_length", 1 << 30),
        ("grpc.max_receive_message_length", 1 << 30),
        *(options or []),
    ]
    if root_cert is not None:
        return grpc.secure_channel(url, grpc.ssl_channel_credentials(root_certificates=root_cert), options=options)
    return grpc.insecure_channel(url, options=options)


def grpc_send(channel: Any, call: Call, metadata: tuple[tuple[str, str], ...] = ()) -> Answer:
    import grpc

    from serving.protogen import grpc_service_pb2 as pb

    path = (
        "/lumenserve.explain.ExplainService/ModelExplain"
        if call.endpoint == "explain"
        else "/inference.GRPCInferenceService/ModelInfer"
    )
    stub = channel.unary_unary(
        path,
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )
    try:
        reply = stub(grpc_message(call), timeout=call.timeout, metadata=metadata or None)
    except grpc.RpcError as exc:
        return Answer(exc.code().name, exc.details() or "")
    outputs = {
        o.name: _from_raw(o.datatype, list(o.shape), raw)
        for o, raw in zip(reply.outputs, reply.raw_output_contents, strict=True)
    }
    return Answer("OK", "", outputs)


def grpc_calls(url: str, calls: list[Call], root_cert: bytes | None = None) -> list[Answer]:
    """Each call in order on one channel (worker entry point)."""
    with grpc_channel(url, root_cert) as channel:
        return [grpc_send(channel, call) for call in calls]
