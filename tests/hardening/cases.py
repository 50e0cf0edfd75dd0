"""The hostile-request tables: each case is a request, the status protocol.md's table gives it,
and a pattern the error message must match (the message names the problem).

``SHARED`` cases run over both gRPC and HTTP; ``HTTP_ONLY`` / ``GRPC_ONLY`` exercise one
transport's framing. Statuses are gRPC code names; HTTP expects the table's matching status.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tests.hardening.payloads import (
    bytes_raw,
    good_image_tensor,
    jpeg,
    jpeg_declaring,
    other_format,
    png,
    png_declaring,
)
from tests.hardening.wire import Call, In

MAX_BATCH = 8
MAX_MESSAGE = 4 << 20
MAX_TEXT_CHARS = 100_000
VOCAB = 30522
IMAGE = good_image_tensor(3)  # (1, 3, 32, 32)
IMAGE_RAW = IMAGE.tobytes()
IMAGE_SHAPE = [1, 3, 32, 32]


@dataclass
class Case:
    id: str
    call: Call
    status: str
    message: str
    """Regex the error message must contain (re.search, case-insensitive)."""
    http_headers: dict[str, str] = field(default_factory=dict)


GOOD_INPUT = In("input", "FP32", IMAGE_SHAPE, raw=IMAGE_RAW)
"""A valid image tensor: the cases that use it are about everything but the input."""


def good_call(model: str = "tiny-image", **call: Any) -> Call:
    """A valid image request to ``model`` (``call``: Call's other fields)."""
    return Call(model, [GOOD_INPUT], **call)


def image_raw(shape: list[int], raw: bytes, datatype: str = "FP32", name: str = "input") -> Call:
    return Call("tiny-image", [In(name, datatype, shape, raw=raw)])


def raw_image_bytes(items: list[bytes], shape: list[int] | None = None) -> Call:
    return Call("tiny-image", [In("image", "BYTES", shape or [len(items)], raw=bytes_raw(items))])


def text_bytes(items: list[bytes]) -> Call:
    return Call("tiny-text", [In("text", "BYTES", [len(items)], raw=bytes_raw(items))])


def text_tensors(ids: np.ndarray, mask: np.ndarray, datatype: str = "INT64") -> Call:
    return Call(
        "tiny-text",
        [
            In("input_ids", datatype, list(ids.shape), raw=ids.tobytes()),
            In("attention_mask", "INT64", list(mask.shape), raw=mask.tobytes()),
        ],
    )


def with_value(value: float) -> bytes:
    array = IMAGE.copy()
    array[0, 1, 5, 7] = value
    return array.tobytes()


def explain(parameters: dict[str, object], model: str = "tiny-image") -> Call:
    inputs = [GOOD_INPUT] if model == "tiny-image" else text_bytes([b"great"]).inputs
    return Call(model, inputs, endpoint="explain", parameters=parameters)


_IDS = np.array([[101, 2307, 102]], dtype=np.int64)  # (batch, seq)
_MASK = np.ones_like(_IDS)  # (batch, seq)
_JPEG = jpeg(5)
_PNG = png(6)
INVALID, NOT_FOUND = "INVALID_ARGUMENT", "NOT_FOUND"

SHARED: list[Case] = [
    # ---- raw contents vs shape x dtype
    Case("raw-short", image_raw(IMAGE_SHAPE, IMAGE_RAW[:-4]), INVALID, r"12284 bytes .*needs 12288"),
    Case("raw-long", image_raw(IMAGE_SHAPE, IMAGE_RAW + b"\0" * 4), INVALID, r"12292 bytes .*needs 12288"),
    Case("raw-empty", image_raw(IMAGE_SHAPE, b""), INVALID, r"hold 0 bytes"),
    Case("raw-odd-length", image_raw(IMAGE_SHAPE, IMAGE_RAW[:-1]), INVALID, r"12287 bytes"),
    # ---- dimensions
    Case("dim-negative", image_raw([-1, 3, 32, 32], IMAGE_RAW), INVALID, r"negative dimension"),
    Case("dim-all-negative", image_raw([-1, -3, -32, -32], IMAGE_RAW), INVALID, r"negative dimension"),
    Case("dim-zero-batch", image_raw([0, 3, 32, 32], b""), INVALID, r"empty batch"),
    Case("dim-zero-inner", image_raw([1, 0, 32, 32], b""), INVALID, r"does not match|zero-sized"),
    Case("dim-overflow-int32", image_raw([1 << 31, 3, 32, 32], IMAGE_RAW), INVALID, r"more than \d+"),
    Case("dim-overflow-int64", image_raw([1 << 62, 1 << 62, 1 << 62, 4], IMAGE_RAW), INVALID, r"more than \d+"),
    Case("dim-product-wraps-int64", image_raw([1 << 32, 1 << 32, 1, 1], b""), INVALID, r"more than \d+"),
    Case("shape-rank-3", image_raw([3, 32, 32], IMAGE_RAW), INVALID, r"shape \[3, 32, 32\] does not match"),
    Case("shape-rank-5", image_raw([1, 1, 3, 32, 32], IMAGE_RAW), INVALID, r"does not match"),
    Case("shape-wrong-spatial", image_raw([1, 3, 16, 64], IMAGE_RAW), INVALID, r"does not match \[-1, 3, 32, 32\]"),
    Case(
        "shape-count-mismatch-data",
        Call("tiny-image", [In("input", "FP32", IMAGE_SHAPE, data=[0.5] * 100)]),
        INVALID,
        r"100 elements for shape",
    ),
    # ---- datatypes
    Case("dtype-unknown", image_raw(IMAGE_SHAPE, IMAGE_RAW, "FP8"), INVALID, r"unknown datatype 'FP8'"),
    Case("dtype-lowercase", image_raw(IMAGE_SHAPE, IMAGE_RAW, "fp32"), INVALID, r"unknown datatype 'fp32'"),
    Case("dtype-empty", image_raw(IMAGE_SHAPE, IMAGE_RAW, ""), INVALID, r"unknown datatype ''|datatype"),
    Case(
        "dtype-fp64-for-fp32", image_raw(IMAGE_SHAPE, IMAGE_RAW * 2, "FP64"), INVALID, r"datatype FP64, expected FP32"
    ),
    Case(
        "dtype-fp16-for-fp32",
        image_raw(IMAGE_SHAPE, IMAGE_RAW[: len(IMAGE_RAW) // 2], "FP16"),
        INVALID,
        r"datatype FP16, expected FP32",
    ),
    Case("dtype-int32-for-fp32", image_raw(IMAGE_SHAPE, IMAGE_RAW, "INT32"), INVALID, r"datatype INT32, expected FP32"),
    Case("dtype-bytes-for-fp32", image_raw([1], bytes_raw([b"x"]), "BYTES"), INVALID, r"BYTES"),
    Case("dtype-fp32-for-text-ids", text_tensors(_IDS.astype(np.float32), _MASK, "FP32"), INVALID, r"expected INT64"),
    Case("dtype-raw-image-not-bytes", image_raw([1], IMAGE_RAW[:4], "FP32", name="image"), INVALID, r"expected BYTES"),
    # ---- inputs
    Case("input-unknown-name", image_raw(IMAGE_SHAPE, IMAGE_RAW, name="pixels"), INVALID, r"unknown \['pixels'\]"),
    Case(
        "input-missing-mask",
        Call("tiny-text", [In("input_ids", "INT64", [1, 3], raw=_IDS.tobytes())]),
        INVALID,
        r"missing \['attention_mask'\]",
    ),
    Case(
        "input-duplicate",
        Call("tiny-image", [GOOD_INPUT] * 2),
        INVALID,
        r"duplicate input",
    ),
    Case(
        "input-raw-plus-tensor",
        Call(
            "tiny-image",
            [GOOD_INPUT, In("image", "BYTES", [1], raw=bytes_raw([_JPEG]))],
        ),
        INVALID,
        r"alone",
    ),
    # ---- NaN / Inf (policy: refused, docs/security.md)
    Case("nan", image_raw(IMAGE_SHAPE, with_value(float("nan"))), INVALID, r"NaN or Inf"),
    Case("inf", image_raw(IMAGE_SHAPE, with_value(float("inf"))), INVALID, r"NaN or Inf"),
    Case("minus-inf", image_raw(IMAGE_SHAPE, with_value(float("-inf"))), INVALID, r"NaN or Inf"),
    # ---- batch size
    Case(
        "batch-over-max",
        image_raw([MAX_BATCH + 1, 3, 32, 32], IMAGE_RAW * (MAX_BATCH + 1)),
        INVALID,
        rf"exceeds the model's max_batch_size of {MAX_BATCH}",
    ),
    Case("batch-empty-bytes", raw_image_bytes([], [0]), INVALID, r"empty batch"),
    Case("batch-disagree", text_tensors(np.repeat(_IDS, 2, axis=0), _MASK), INVALID, r"batch size|differ"),
    # ---- BYTES framing
    Case(
        "bytes-lying-prefix",
        Call("tiny-image", [In("image", "BYTES", [1], raw=struct.pack("<I", 1000) + b"x" * 10)]),
        INVALID,
        r"claims 1000 bytes but only 10 remain",
    ),
    Case(
        "bytes-prefix-4g",
        Call("tiny-image", [In("image", "BYTES", [1], raw=b"\xff\xff\xff\xff" + b"x" * 8)]),
        INVALID,
        r"claims 4294967295 bytes",
    ),
    Case(
        "bytes-cut-prefix",
        Call("tiny-image", [In("image", "BYTES", [1], raw=b"\x05\x00")]),
        INVALID,
        r"inside a 4-byte length prefix",
    ),
    Case(
        "bytes-fewer-elements",
        Call("tiny-image", [In("image", "BYTES", [2], raw=bytes_raw([_JPEG]))]),
        INVALID,
        r"1 BYTES elements for shape \[2\]",
    ),
    Case(
        "bytes-more-elements",
        Call("tiny-image", [In("image", "BYTES", [1], raw=bytes_raw([_JPEG, _JPEG]))]),
        INVALID,
        r"BYTES elements for shape \[1\]",
    ),
    Case("bytes-image-shape-2d", raw_image_bytes([_JPEG, _JPEG], [1, 2]), INVALID, r"expected \[batch\]"),
    # ---- images
    Case(
        "image-corrupt",
        raw_image_bytes([b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4]),
        INVALID,
        r"image 0: not a decodable",
    ),
    Case(
        "image-random-bytes",
        raw_image_bytes([np.random.default_rng(1).bytes(3000)]),
        INVALID,
        r"image 0: not a decodable",
    ),
    Case("image-empty", raw_image_bytes([_JPEG, b""]), INVALID, r"image 1: empty"),
    Case("image-truncated-jpeg", raw_image_bytes([_JPEG[: len(_JPEG) // 2]]), INVALID, r"image 0: cannot decode"),
    Case("image-truncated-png", raw_image_bytes([_PNG[: len(_PNG) // 2]]), INVALID, r"image 0: .*decod"),
    Case("image-png-bomb-50000", raw_image_bytes([png_declaring(50000, 50000)]), INVALID, r"pixels"),
    Case(
        "image-png-over-limit",
        raw_image_bytes([png_declaring(7000, 7000)]),
        INVALID,
        r"7000x7000 pixels, over the limit",
    ),
    Case("image-png-zero-size", raw_image_bytes([png_declaring(0, 10)]), INVALID, r"image 0: "),
    Case("image-jpeg-bomb", raw_image_bytes([jpeg_declaring(60000, 60000)]), INVALID, r"pixels"),
    Case("image-gif", raw_image_bytes([other_format("GIF")]), INVALID, r"not a decodable JPEG/PNG/WebP"),
    Case("image-bmp", raw_image_bytes([other_format("BMP")]), INVALID, r"not a decodable JPEG/PNG/WebP"),
    # ---- text
    Case("text-not-utf8", text_bytes([b"ok", b"\xff\xfe\xfd broken"]), INVALID, r"text 1: not valid UTF-8"),
    Case("text-lone-surrogate", text_bytes([b"\xed\xa0\x80"]), INVALID, r"text 0: not valid UTF-8"),
    Case(
        "text-megabyte",
        text_bytes([b"a" * 1_000_000]),
        INVALID,
        rf"1000000 characters, over the limit of {MAX_TEXT_CHARS}",
    ),
    Case(
        "text-ids-over-vocab",
        text_tensors(np.array([[101, VOCAB + 5, 102]], dtype=np.int64), _MASK),
        INVALID,
        r"input_ids must lie in",
    ),
    Case(
        "text-ids-negative",
        text_tensors(np.array([[101, -7, 102]], dtype=np.int64), _MASK),
        INVALID,
        r"input_ids must lie in",
    ),
    Case(
        "text-mask-not-binary",
        text_tensors(_IDS, np.array([[1, 2, 1]], dtype=np.int64)),
        INVALID,
        r"attention_mask must hold only 0 and 1",
    ),
    Case(
        "text-too-long-ids",
        text_tensors(np.full((1, 65), 1000, dtype=np.int64), np.ones((1, 65), dtype=np.int64)),
        INVALID,
        r"65 tokens exceeds the model's max_length 64",
    ),
    Case("text-mask-shape", text_tensors(_IDS, np.ones((1, 4), dtype=np.int64)), INVALID, r"differ in shape"),
    # ---- models, versions, names
    Case("model-unknown", good_call("no-such-model"), NOT_FOUND, r"unknown model 'no-such-model'"),
    Case("version-unknown", good_call(version="7"), NOT_FOUND, r"no version '7'"),
    Case("version-not-number", good_call(version="latest"), NOT_FOUND, r"no version 'latest'"),
    Case("model-dotdot", good_call(".."), NOT_FOUND, r"unknown model '\.\.'"),
    Case("model-nul", good_call("tiny-image\x00"), NOT_FOUND, r"unknown model 'tiny-image\\x00'"),
    Case("model-whitespace", good_call("tiny-image "), NOT_FOUND, r"unknown model 'tiny-image '"),
    Case("model-huge-name", good_call("m" * 20_000), NOT_FOUND, r"unknown model 'mmmm.*\(truncated"),
    # ---- parameters and outputs
    Case("param-timeout-negative", good_call(parameters={"timeout": -5}), INVALID, r"parameter 'timeout'"),
    Case("param-timeout-string", good_call(parameters={"timeout": "soon"}), INVALID, r"parameter 'timeout'"),
    Case("output-unknown", good_call(outputs=["weights"]), INVALID, r"no output 'weights'"),
    # ---- explain
    Case(
        "explain-unknown-method",
        explain({"method": "astrology"}),
        "UNIMPLEMENTED",
        r"unknown explain method 'astrology'",
    ),
    Case(
        "explain-target-out-of-range",
        explain({"method": "saliency", "targets": "[7]"}),
        INVALID,
        r"target 7 is not a class index in \[0, 2\]",
    ),
    Case("explain-target-negative", explain({"method": "saliency", "targets": "[-1]"}), INVALID, r"target -1"),
    Case("explain-targets-not-json", explain({"targets": "seven"}), INVALID, r"parameter 'targets'"),
    Case(
        "explain-targets-count", explain({"method": "saliency", "targets": "[0, 1]"}), INVALID, r"2 entries for 1 items"
    ),
    Case(
        "explain-n-steps-huge", explain({"method": "integrated_gradients", "n_steps": 10_000_000}), INVALID, r"n_steps"
    ),
    Case(
        "explain-n-steps-text",
        explain({"method": "integrated_gradients", "n_steps": 1_000_000}, "tiny-text"),
        INVALID,
        r"n_steps",
    ),
    Case("explain-n-steps-type", explain({"method": "integrated_gradients", "n_steps": "lots"}), INVALID, r"n_steps"),
    Case("explain-unknown-model", good_call("nope", endpoint="explain"), NOT_FOUND, r"unknown model 'nope'"),
]


@dataclass
class HttpCase:
    """An HTTP request given as its bytes: body, headers, path."""

    id: str
    body: bytes
    headers: dict[str, str]
    status: int
    message: str
    path: str = "/v2/models/tiny-image/infer"
    method: str = "POST"


def _json(doc: str) -> bytes:
    return doc.encode()


def _binary(header: bytes, tail: bytes, declared: str) -> tuple[bytes, dict[str, str]]:
    return header + tail, {"content-type": "application/octet-stream", "inference-header-content-length": declared}


def _gzip_bomb() -> bytes:
    import gzip

    return gzip.compress(b"{" + b" " * (MAX_MESSAGE * 4) + b"}", 9)


_HEADER = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,3,32,32],"parameters":{"binary_data_size":12288}}]}'
_NESTED_DATA = "[" * 200 + "0.5" + "]" * 200
JSON = {"content-type": "application/json"}
_VALID = (
    b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,3,32,32],"data":[' + b",".join([b"0.5"] * 3072) + b"]}]}"
)
HTTP_ONLY: list[HttpCase] = [
    HttpCase("json-invalid", b"{", JSON, 400, r"not valid JSON"),
    HttpCase("json-empty-body", b"", JSON, 400, r"not valid JSON"),
    HttpCase("json-not-object", b"[1, 2, 3]", JSON, 400, r"must be a JSON object"),
    HttpCase("json-deeply-nested", b"[" * 100_000 + b"]" * 100_000, JSON, 400, r"not valid JSON: depth limit exceeded"),
    HttpCase(
        "json-nested-2000-in-data",
        _json(
            '{"inputs":[{"name":"input","datatype":"FP32","shape":[1],"data":' + "[" * 2000 + "1" + "]" * 2000 + "}]}"
        ),
        JSON,
        400,
        r"JSON|nest|deep",
    ),
    HttpCase(
        "json-nested-200-in-data",
        _json('{"inputs":[{"name":"input","datatype":"FP32","shape":[1],"data":' + _NESTED_DATA + "}]}"),
        JSON,
        400,
        r"nest|deep|dimension|data",
    ),
    HttpCase(
        "json-nested-bytes-data",
        _json(
            '{"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"data":' + "[" * 200 + '"x"' + "]" * 200 + "}]}"
        ),
        JSON,
        400,
        r"nested deeper",
        path="/v2/models/tiny-text/infer",
    ),
    HttpCase(
        "json-nan-literal",
        b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1],"data":[NaN]}]}',
        JSON,
        400,
        r"not valid JSON",
    ),
    HttpCase(
        "json-not-utf8",
        b'{"inputs":[{"name":"\xff\xfe","datatype":"FP32","shape":[1],"data":[1]}]}',
        JSON,
        400,
        r"not valid JSON",
    ),
    HttpCase(
        "json-huge-int-dim",
        b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1180591620717411303424],"data":[1]}]}',
        JSON,
        400,
        r"not valid JSON|shape",
    ),
    HttpCase("json-inputs-not-list", b'{"inputs":{"name":"input"}}', JSON, 400, r"non-empty 'inputs' list"),
    HttpCase("json-inputs-empty", b'{"inputs":[]}', JSON, 400, r"non-empty 'inputs' list"),
    HttpCase("json-input-not-object", b'{"inputs":[7]}', JSON, 400, r"inputs\[0\] must be a JSON object"),
    HttpCase(
        "json-name-not-string",
        b'{"inputs":[{"name":5,"datatype":"FP32","shape":[1],"data":[1]}]}',
        JSON,
        400,
        r"string 'name' and 'datatype'",
    ),
    HttpCase(
        "json-shape-strings",
        b'{"inputs":[{"name":"input","datatype":"FP32","shape":["1"],"data":[1]}]}',
        JSON,
        400,
        r"'shape' must be a list of integers",
    ),
    HttpCase(
        "json-shape-float",
        b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1.5],"data":[1]}]}',
        JSON,
        400,
        r"'shape' must be a list of integers",
    ),
    HttpCase(
        "json-shape-bool",
        b'{"inputs":[{"name":"input","datatype":"FP32","shape":[true],"data":[1]}]}',
        JSON,
        400,
        r"'shape' must be a list of integers",
    ),
    HttpCase(
        "json-no-data", b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1]}]}', JSON, 400, r"needs 'data'"
    ),
    HttpCase(
        "json-data-strings-for-fp32",
        b'{"inputs":[{"name":"input","datatype":"FP32","shape":[2],"data":["a","b"]}]}',
        JSON,
        400,
        r"does not fit FP32",
    ),
    HttpCase(
        "json-data-ragged",
        b'{"inputs":[{"name":"input","datatype":"FP32","shape":[2,2],"data":[[1,2],[3]]}]}',
        JSON,
        400,
        r"does not fit FP32",
    ),
    HttpCase(
        "json-data-object",
        b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1],"data":{"a":1}}]}',
        JSON,
        400,
        r"does not fit FP32|elements",
    ),
    HttpCase(
        "json-int-out-of-range",
        b'{"inputs":[{"name":"input_ids","datatype":"INT64","shape":[1,1],'
        b'"data":[18446744073709551615]},{"name":"attention_mask","datatype":"INT64","shape":[1,1],"data":[1]}]}',
        JSON,
        400,
        r"out of range for INT64",
        path="/v2/models/tiny-text/infer",
    ),
    HttpCase(
        "json-float-for-int",
        b'{"inputs":[{"name":"input_ids","datatype":"INT64","shape":[1,1],"data":[1.5]},'
        b'{"name":"attention_mask","datatype":"INT64","shape":[1,1],"data":[1]}]}',
        JSON,
        400,
        r"non-integer",
        path="/v2/models/tiny-text/infer",
    ),
    HttpCase(
        "json-bf16-in-json",
        b'{"inputs":[{"name":"input","datatype":"BF16","shape":[1],"data":[1]}]}',
        JSON,
        400,
        r"BF16 travels only as raw bytes",
    ),
    HttpCase(
        "json-parameters-not-object",
        b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1],"data":[1]}],"parameters":[1]}',
        JSON,
        400,
        r"parameters must be a JSON object",
    ),
    HttpCase(
        "json-outputs-not-list",
        b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1],"data":[1]}],"outputs":"logits"}',
        JSON,
        400,
        r"'outputs' must be a list",
    ),
    HttpCase(
        "content-type-text",
        b'{"inputs":[]}',
        {"content-type": "text/plain"},
        400,
        r"unsupported Content-Type 'text/plain'",
    ),
    HttpCase(
        "content-type-form",
        b"a=1",
        {"content-type": "application/x-www-form-urlencoded"},
        400,
        r"unsupported Content-Type",
    ),
    HttpCase(
        "content-type-multipart",
        b"--x--",
        {"content-type": "multipart/form-data; boundary=x"},
        400,
        r"unsupported Content-Type 'multipart/form-data'",
    ),
    HttpCase(
        "binary-header-longer-than-body",
        *_binary(_HEADER, b"", "100000"),
        400,
        r"Inference-Header-Content-Length 100000 does not fit a body of \d+ bytes",
    ),
    HttpCase("binary-header-negative", *_binary(_HEADER, IMAGE_RAW, "-5"), 400, r"does not fit a body"),
    HttpCase("binary-header-not-integer", *_binary(_HEADER, IMAGE_RAW, "12abc"), 400, r"is not an integer"),
    HttpCase("binary-header-cuts-json", *_binary(_HEADER, IMAGE_RAW, "20"), 400, r"not valid JSON"),
    HttpCase(
        "binary-size-past-end",
        *_binary(_HEADER, IMAGE_RAW[:100], str(len(_HEADER))),
        400,
        r"binary_data_size 12288 runs past the end of the body \(100 bytes left\)",
    ),
    HttpCase(
        "binary-trailing-bytes",
        *_binary(_HEADER, IMAGE_RAW + b"extra", str(len(_HEADER))),
        400,
        r"5 bytes of binary data that no input declares",
    ),
    HttpCase(
        "binary-size-negative",
        *_binary(_HEADER.replace(b"12288", b"-1"), IMAGE_RAW, str(len(_HEADER) - 3)),
        400,
        r"binary_data_size must be a non-negative integer",
    ),
    HttpCase("body-over-limit", b"{" + b" " * (MAX_MESSAGE + 10) + b"}", JSON, 413, r"exceeds the limit of \d+ bytes"),
    HttpCase(
        "gzip-bomb", _gzip_bomb(), {**JSON, "content-encoding": "gzip"}, 413, r"decompressed body exceeds the limit"
    ),
    HttpCase("gzip-corrupt", b"\x1f\x8b\x08\x00garbage", {**JSON, "content-encoding": "gzip"}, 400, r"not valid gzip"),
    HttpCase(
        "content-encoding-unknown", b"{}", {**JSON, "content-encoding": "br"}, 400, r"unsupported Content-Encoding"
    ),
    HttpCase(
        "model-nul-in-path", _VALID, JSON, 404, r"unknown model 'tiny\\x00image'", path="/v2/models/tiny%00image/infer"
    ),
    HttpCase("model-dotdot-encoded", _VALID, JSON, 404, r"unknown model '\.\.'", path="/v2/models/%2e%2e/infer"),
    HttpCase(
        "model-slash-encoded",
        _VALID,
        JSON,
        404,
        r"no such route: POST /v2/models/\.\./\.\./etc/infer",
        path="/v2/models/..%2F..%2Fetc/infer",
    ),
    HttpCase("model-non-utf8-path", _VALID, JSON, 404, r"unknown model", path="/v2/models/%ff%fe/infer"),
    HttpCase(
        "static-path-traversal",
        b"",
        {},
        404,
        r"no such route|not found",
        path="/..%2F..%2F..%2Fetc%2Fpasswd",
        method="GET",
    ),
    HttpCase("v2-path-traversal", b"", {}, 404, r"no such route", path="/v2/..%2F..%2Fetc%2Fpasswd", method="GET"),
    HttpCase("infer-wrong-method", b"", {}, 405, r"method GET not allowed", method="GET"),
    HttpCase(
        "version-dotdot", _VALID, JSON, 404, r"no version '\.\.'", path="/v2/models/tiny-image/versions/%2e%2e/infer"
    ),
]


GRPC_ONLY: list[Case] = [
    Case(
        "grpc-raw-count-over",
        Call("tiny-image", [In("input", "FP32", IMAGE_SHAPE)], grpc_raw_contents=[IMAGE_RAW] * 2),
        INVALID,
        r"2 raw_input_contents for 1 inputs",
    ),
    Case(
        "grpc-raw-without-input",
        Call("tiny-image", [], grpc_raw_contents=[IMAGE_RAW]),
        INVALID,
        r"1 raw_input_contents for 0 inputs",
    ),
    Case(
        "grpc-contents-wrong-field",
        Call("tiny-image", [In("input", "FP32", IMAGE_SHAPE, data=[1] * 3072, contents_field="int64_contents")]),
        INVALID,
        r"0 elements for shape \[1, 3, 32, 32\]",
    ),
    Case(
        "grpc-contents-fp16",
        Call("tiny-image", [In("input", "FP16", IMAGE_SHAPE, data=[0.5] * 3072, contents_field="fp32_contents")]),
        INVALID,
        r"FP16 travels only",
    ),
    Case(
        "grpc-contents-nan",
        Call("tiny-image", [In("input", "FP32", IMAGE_SHAPE, data=[float("nan")] * 3072)]),
        INVALID,
        r"NaN or Inf",
    ),
    Case("grpc-no-inputs", Call("tiny-image", []), INVALID, r"missing \['input'\]"),
    Case(
        "grpc-message-over-limit",
        image_raw([1, 3, 32, 32], b"\0" * (MAX_MESSAGE + 1000)),
        "RESOURCE_EXHAUSTED",
        r"larger than max",
    ),
    Case("grpc-empty-model-name", good_call(""), NOT_FOUND, r"unknown model ''"),
    Case("grpc-model-slash", good_call("tiny-image/1"), NOT_FOUND, r"unknown model 'tiny-image/1'"),
    Case("grpc-model-path-escape", good_call("../../etc/passwd"), NOT_FOUND, r"unknown model '\.\./\.\./etc/passwd'"),
]
