"""Property-based tests of every request decoder: arbitrary input raises only InvalidInput.

Decoders: tensor contents (JSON/typed lists), raw bytes, BYTES framing, the whole HTTP body
decoder (JSON and the binary extension), the whole gRPC ModelInferRequest decoder (typed
contents, raw contents, both at once, arbitrary serialized bytes), image preprocessing and
text preprocessing.
Example counts are bounded to keep the suite fast; hypothesis' database is off so runs are
reproducible from the printed seed.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lumenserve.bundle import Bundle
from serving.codecs.image import ImageCodec
from serving.codecs.tensors import DATATYPES, NUMPY_DTYPES, decode_list, decode_raw
from serving.codecs.text import TextCodec
from serving.errors import InvalidInput
from serving.grpc import convert as grpc_convert
from serving.http.convert import to_request
from serving.protogen import grpc_service_pb2 as pb
from tests.hardening.payloads import bytes_raw, jpeg, png

FAST = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
datatypes = st.one_of(st.sampled_from(DATATYPES), st.text(max_size=6))
HUGE = [1 << 31, (1 << 31) + 1, 1 << 32, 1 << 60, (1 << 63) - 1]
"""Dimensions that alone or multiplied overflow 32/64-bit sizes; mixed with 0 they hide behind an empty tensor."""
dims = st.one_of(st.integers(-3, 6), st.sampled_from(HUGE), st.integers(-(1 << 63), (1 << 63) - 1))
shapes = st.lists(dims, max_size=5)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(1 << 64), 1 << 64), st.floats(allow_nan=True), st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=40,
)


def only_invalid_input(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except InvalidInput as exc:
        assert str(exc), "InvalidInput without a message"
        return None


@FAST
@given(datatype=datatypes, shape=shapes, raw=st.binary(max_size=256))
@example(datatype="UINT64", shape=[0, 1 << 60], raw=b"")  # numpy: "array is too big"
@example(datatype="FP32", shape=[0, 1 << 31, 1 << 31], raw=b"")
def test_raw_contents(datatype: str, shape: list[int], raw: bytes) -> None:
    array = only_invalid_input(decode_raw, datatype, shape, raw, "x")
    if array is not None:
        assert list(array.shape) == shape


@FAST
@given(
    shape=st.lists(st.integers(0, 4), min_size=1, max_size=3),
    items=st.lists(st.binary(max_size=20), max_size=8),
    cut=st.integers(0, 8),
    lie=st.integers(0, (1 << 32) - 1),
)
def test_bytes_framing(shape: list[int], items: list[bytes], cut: int, lie: int) -> None:
    """Valid framing with lengths cut off, or one length prefix replaced by a lie."""
    raw = bytes_raw(items)
    for candidate in (raw[: max(0, len(raw) - cut)], lie.to_bytes(4, "little") + raw[4:] if raw else raw):
        array = only_invalid_input(decode_raw, "BYTES", shape, candidate, "x")
        if array is not None:
            assert list(array.shape) == shape
            assert all(isinstance(item, bytes) for item in array.reshape(-1))


@FAST
@given(datatype=datatypes, shape=shapes, data=json_values)
@example(datatype="UINT64", shape=[0, 1 << 60], data=[])
def test_tensor_contents_lists(datatype: str, shape: list[int], data: Any) -> None:
    array = only_invalid_input(decode_list, datatype, shape, data, "x")
    if array is not None:
        assert list(array.shape) == shape
        if datatype in NUMPY_DTYPES:
            assert array.dtype == NUMPY_DTYPES[datatype]


@FAST
@given(body=st.binary(max_size=300), header=st.one_of(st.none(), st.text(max_size=6), st.integers(-5, 400).map(str)))
def test_http_body_arbitrary_bytes(body: bytes, header: str | None) -> None:
    only_invalid_input(to_request, body, header, "m", "")


inputs_docs = st.fixed_dictionaries(
    {
        "name": st.one_of(st.sampled_from(["input", "text"]), json_scalars),
        "datatype": st.one_of(st.sampled_from(DATATYPES), json_scalars),
        "shape": st.one_of(st.lists(dims, max_size=4), json_values),
    },
    optional={
        "data": json_values,
        "parameters": st.one_of(
            json_values, st.fixed_dictionaries({"binary_data_size": st.one_of(st.integers(-4, 64), json_scalars)})
        ),
    },
)


@FAST
@given(
    doc=st.fixed_dictionaries(
        {"inputs": st.lists(inputs_docs, max_size=3)},
        optional={"outputs": json_values, "parameters": json_values, "id": json_values},
    ),
    tail=st.binary(max_size=64),
    binary=st.booleans(),
)
@example(
    doc={"inputs": [{"name": "x", "datatype": "UINT64", "shape": [0, 1 << 60], "data": []}]}, tail=b"", binary=False
)
@example(
    doc={"inputs": [{"name": "x", "datatype": "UINT64", "shape": [0, 1 << 60], "parameters": {"binary_data_size": 0}}]},
    tail=b"",
    binary=True,
)
def test_http_binary_extension_structured(doc: dict[str, Any], tail: bytes, binary: bool) -> None:
    import json

    head = json.dumps(doc).encode()  # stdlib: big ints and NaN pass through for the server to refuse
    body = head + tail if binary else head
    request = only_invalid_input(to_request, body, str(len(head)) if binary else None, "m", "")
    if request is not None:
        assert request.inputs


# ---- the whole gRPC ModelInferRequest decoder ----------------------------------------------
def grpc_decoded(message: pb.ModelInferRequest) -> Any:
    """The decoder's answer (None when it refused with InvalidInput); checks what it accepted."""
    request = only_invalid_input(grpc_convert.to_request, message, None)
    if request is not None:
        assert len(request.inputs) == len(message.inputs)
        for tensor, sent in zip(request.inputs, message.inputs, strict=True):
            assert list(tensor.data.shape) == list(sent.shape) and tensor.datatype == sent.datatype
        assert not (message.raw_input_contents and any(t.HasField("contents") for t in message.inputs))
    return request


contents_values = {
    "bool_contents": st.lists(st.booleans(), max_size=6),
    "int_contents": st.lists(st.integers(-(1 << 31), (1 << 31) - 1), max_size=6),
    "int64_contents": st.lists(st.integers(-(1 << 63), (1 << 63) - 1), max_size=6),
    "uint_contents": st.lists(st.integers(0, (1 << 32) - 1), max_size=6),
    "uint64_contents": st.lists(st.integers(0, (1 << 64) - 1), max_size=6),
    "fp32_contents": st.lists(st.floats(width=32), max_size=6),
    "fp64_contents": st.lists(st.floats(), max_size=6),
    "bytes_contents": st.lists(st.binary(max_size=8), max_size=6),
}
grpc_contents = st.one_of(
    st.none(), st.sampled_from(sorted(contents_values)).flatmap(lambda f: st.tuples(st.just(f), contents_values[f]))
)
grpc_inputs = st.lists(
    st.tuples(
        st.text(max_size=6),
        datatypes,
        st.lists(st.one_of(st.integers(0, 4), st.sampled_from(HUGE)), max_size=4),
        grpc_contents,
    ),
    max_size=3,
)


@FAST
@given(
    inputs=grpc_inputs,
    raws=st.one_of(st.none(), st.lists(st.binary(max_size=64), max_size=4)),
    parameters=st.dictionaries(st.text(max_size=4), st.one_of(st.booleans(), st.integers(-5, 5), st.text(max_size=4))),
)
def test_grpc_request_structured(
    inputs: list[tuple[str, str, list[int], Any]], raws: list[bytes] | None, parameters: dict[str, Any]
) -> None:
    message = pb.ModelInferRequest(model_name="no-such-model")
    for name, datatype, shape, contents in inputs:
        tensor = message.inputs.add(name=name, datatype=datatype, shape=shape)
        if contents is not None:
            getattr(tensor.contents, contents[0]).extend(contents[1])
    message.raw_input_contents.extend(raws or [])
    grpc_convert.set_parameters(message.parameters, parameters)
    grpc_decoded(message)


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
@pytest.mark.parametrize("shape", [[0, 1 << 60], [0, 1 << 31, 1 << 31], [0, (1 << 63) - 1], [1 << 31, 0, 1 << 40]])
def test_grpc_request_empty_tensor_with_huge_dims_is_invalid(shape: list[int], raw: bool) -> None:
    message = pb.ModelInferRequest(model_name="no-such-model")
    message.inputs.add(name="x", datatype="UINT64", shape=shape)
    if raw:
        message.raw_input_contents.append(b"")
    with pytest.raises(InvalidInput, match="more than"):
        grpc_convert.to_request(message, None)


def test_grpc_request_with_raw_and_typed_contents_is_invalid() -> None:
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype="FP32", shape=[1]).contents.fp32_contents.append(1.0)
    message.raw_input_contents.append(np.float32(1.0).tobytes())
    with pytest.raises(InvalidInput, match="contents must not be set"):
        grpc_convert.to_request(message, None)


@FAST
@given(data=st.binary(max_size=300))
def test_grpc_request_arbitrary_bytes(data: bytes) -> None:
    """What protobuf parses from arbitrary bytes (grpc refuses the rest before the servicer)."""
    from google.protobuf.message import DecodeError

    try:
        message = pb.ModelInferRequest.FromString(data)
    except DecodeError:
        return
    grpc_decoded(message)


# ---- image and text preprocessing ----------------------------------------------------------
@pytest.fixture(scope="module")
def image_codec(image_bundle: Bundle) -> ImageCodec:
    pre = image_bundle.manifest.preprocessing
    return ImageCodec(pre, max_pixels=4_000_000)  # type: ignore[arg-type]


SEEDS = [jpeg(1, (40, 30)), png(2, (24, 36))]


def _webp() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), (1, 2, 3)).save(buffer, "WEBP")
    return buffer.getvalue()


SEEDS.append(_webp())


@settings(max_examples=250, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    seed=st.sampled_from(range(3)),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 4000),
    junk=st.binary(max_size=64),
)
def test_image_preprocessing_mutated(
    image_codec: ImageCodec, seed: int, edits: list[tuple[int, int]], cut: int, junk: bytes
) -> None:
    data = bytearray(SEEDS[seed])
    for position, value in edits:
        data[position % len(data)] = value
    data = data[: max(0, len(data) - cut)] + junk
    out = only_invalid_input(image_codec, [bytes(data)])
    if out is not None:
        size = image_codec.pre.crop_size
        assert out.shape == (1, 3, size, size) and out.dtype == np.float32 and np.isfinite(out).all()


@FAST
@given(data=st.binary(max_size=512))
def test_image_preprocessing_arbitrary_bytes(image_codec: ImageCodec, data: bytes) -> None:
    only_invalid_input(image_codec, [data])


@pytest.fixture(scope="module")
def text_codec(text_bundle: Bundle) -> TextCodec:
    from lumenserve.bundle.eager import load_tokenizer

    return TextCodec(load_tokenizer(text_bundle), text_bundle.manifest.preprocessing, max_chars=2000)  # type: ignore[arg-type]


@FAST
@given(
    items=st.lists(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)), min_size=1, max_size=4)
)
def test_text_preprocessing(text_codec: TextCodec, items: list[bytes]) -> None:
    out = only_invalid_input(text_codec, items)
    if out is not None:
        ids, mask = out["input_ids"], out["attention_mask"]
        assert ids.shape == mask.shape and ids.shape[0] == len(items) and ids.shape[1] <= text_codec.pre.max_length
        assert ids.dtype == np.int64 and set(np.unique(mask)) <= {0, 1}
