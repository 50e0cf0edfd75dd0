"""Tensor contents <-> numpy for both transports.

Raw contents (gRPC ``raw_input_contents``, HTTP binary extension) are decoded with
``np.frombuffer``: a read-only view of the received buffer, no copy. The byte length must
equal prod(shape) x itemsize; BYTES elements are a 4-byte little-endian length then the bytes.

Each transport first turns every declared input into a :class:`TensorHeader` with
:func:`tensor_header` (the one check of datatype and shape, done before any contents are
decoded and before the model is looked up), then decodes the contents through it.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.errors import InvalidInput

# v2 datatype -> little-endian numpy dtype (BF16 travels as its raw 16-bit pattern).
NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BF16": np.dtype("<u2"),
}
DATATYPES = (*NUMPY_DTYPES, "BYTES")
_V2_OF_KIND = {np.dtype(v).str: k for k, v in NUMPY_DTYPES.items() if k != "BF16"}
MAX_ELEMENTS = 1 << 31
"""Most elements a declared shape may describe (zero dimensions left out of the product)."""
MAX_RANK = 32
"""Most dimensions a shape may have (numpy's own limit before numpy 2)."""
_LEN = struct.Struct("<I")


def datatype_of(array: np.ndarray) -> str:
    """The v2 datatype of a numpy array (object arrays are BYTES)."""
    if array.dtype == np.object_:
        return "BYTES"
    name = _V2_OF_KIND.get(array.dtype.newbyteorder("<").str if array.dtype.byteorder == ">" else array.dtype.str)
    if name is None:
        raise InvalidInput(f"unsupported numpy dtype {array.dtype}")
    return name


def check_datatype(datatype: str, name: str) -> None:
    if datatype not in DATATYPES:
        raise InvalidInput(f"input {name!r}: unknown datatype {datatype!r} (expected one of {', '.join(DATATYPES)})")


@dataclass(frozen=True, slots=True)
class TensorHeader:
    """A declared tensor (name, datatype, shape), checked by :func:`tensor_header` before any
    of its contents is decoded or allocated. ``count`` is prod(shape)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    count: int

    def from_raw(self, raw: bytes | memoryview) -> np.ndarray:
        """Raw little-endian contents -> array of ``shape`` (a view of ``raw``, no copy)."""
        if self.datatype == "BYTES":
            return decode_bytes_raw(raw, self.shape, self.count, self.name)
        dtype = NUMPY_DTYPES[self.datatype]
        expected = self.count * dtype.itemsize
        if len(raw) != expected:
            raise InvalidInput(
                f"input {self.name!r}: raw contents hold {len(raw)} bytes but shape {list(self.shape)} x "
                f"{self.datatype} needs {expected}"
            )
        return np.frombuffer(raw, dtype=dtype, count=self.count).reshape(self.shape)

    def from_list(self, data: Any) -> np.ndarray:
        """A flat or nested list (JSON ``data``, gRPC typed contents) -> array of ``shape``."""
        return _decode_list(self, data)


def tensor_header(name: str, datatype: str, shape: Sequence[int]) -> TensorHeader:
    """Check a declared tensor once, before anything is allocated or looked up.

    Refused (InvalidInput): an unknown datatype, more than ``MAX_RANK`` dimensions, a negative
    dimension, or dimensions whose product, zeros left out, passes ``MAX_ELEMENTS`` (numpy
    cannot even describe ``[0, 2**60]`` of UINT64). The product stops growing at the first
    step past the limit, so a hostile shape costs at most ``MAX_RANK`` multiplications of
    bounded numbers.
    """
    check_datatype(datatype, name)
    dims = tuple(int(d) for d in shape[: MAX_RANK + 1])
    if len(dims) > MAX_RANK:
        raise InvalidInput(f"input {name!r}: shape has {len(shape)} dimensions, more than {MAX_RANK}")
    if any(d < 0 for d in dims):
        raise InvalidInput(f"input {name!r}: negative dimension in shape {list(dims)}")
    volume = 1  # product of the non-zero dimensions
    for d in dims:
        volume *= d or 1
        if volume > MAX_ELEMENTS:
            raise InvalidInput(f"input {name!r}: shape {list(dims)} declares more than {MAX_ELEMENTS} elements")
    return TensorHeader(name, datatype, dims, 0 if 0 in dims else volume)


def decode_raw(datatype: str, shape: Sequence[int], raw: bytes | memoryview, name: str) -> np.ndarray:
    """Raw little-endian contents -> array of ``shape`` (a view of ``raw``, no copy)."""
    return tensor_header(name, datatype, shape).from_raw(raw)


def decode_bytes_raw(raw: bytes | memoryview, shape: Sequence[int], count: int, name: str) -> np.ndarray:
    """Length-prefixed BYTES elements -> object array of bytes."""
    view = memoryview(raw)
    total = len(view)
    items: list[bytes] = []
    offset = 0
    while offset < total:
        if offset + 4 > total:
            raise InvalidInput(f"input {name!r}: BYTES contents end inside a 4-byte length prefix")
        (length,) = _LEN.unpack_from(view, offset)
        offset += 4
        if offset + length > total:
            raise InvalidInput(
                f"input {name!r}: BYTES element {len(items)} claims {length} bytes but only {total - offset} remain"
            )
        items.append(bytes(view[offset : offset + length]))
        offset += length
        if len(items) > count:
            break
    if len(items) != count:
        raise InvalidInput(f"input {name!r}: {len(items)} BYTES elements for shape {list(shape)} ({count} expected)")
    return bytes_array(items, shape)


def bytes_array(items: Sequence[bytes], shape: Sequence[int]) -> np.ndarray:
    out = np.empty(len(items), dtype=np.object_)
    out[:] = items
    return out.reshape(tuple(shape))


def encode_bytes_raw(array: np.ndarray) -> bytes:
    """Object array of bytes/str -> length-prefixed raw contents (row-major)."""
    parts: list[bytes] = []
    for item in array.reshape(-1):
        data = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(_LEN.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def to_raw(array: np.ndarray) -> bytes:
    """Array -> raw little-endian contents (one copy, the wire's)."""
    if array.dtype == np.object_:
        return encode_bytes_raw(array)
    return np.ascontiguousarray(array).tobytes()


def decode_list(datatype: str, shape: Sequence[int], data: Any, name: str) -> np.ndarray:
    """A flat or nested list (JSON ``data``, gRPC typed contents) -> array of ``shape``."""
    return tensor_header(name, datatype, shape).from_list(data)


def _decode_list(header: TensorHeader, data: Any) -> np.ndarray:
    name, datatype, shape, count = header.name, header.datatype, header.shape, header.count
    if datatype in ("FP16", "BF16") and not isinstance(data, list):
        raise InvalidInput(f"input {name!r}: {datatype} travels only as raw bytes")
    if datatype == "BYTES":
        flat = list(_flatten(data, name))
        if len(flat) != count:
            raise InvalidInput(f"input {name!r}: {len(flat)} elements for shape {list(shape)} ({count} expected)")
        items = [_as_bytes(item, name) for item in flat]
        return bytes_array(items, shape)
    if datatype == "BF16":
        raise InvalidInput(f"input {name!r}: BF16 travels only as raw bytes")
    dtype = NUMPY_DTYPES[datatype]
    try:
        array = np.asarray(data)
        if dtype.kind == "u" and array.dtype.kind == "f":  # ints past INT64's range beside small ones read as float64
            flat = list(_flatten(data, name))
            if all(isinstance(x, int) and not isinstance(x, bool) for x in flat):
                array = np.asarray(flat, dtype=np.object_)
                if flat and (min(flat) < 0 or max(flat) > np.iinfo(dtype).max):
                    raise ValueError(f"values out of range for {datatype}")
                array = array.astype(dtype)
        if array.dtype == np.object_ or array.dtype.kind in "USV":
            raise ValueError("non-numeric or ragged data")
        if datatype == "BOOL" and array.size and array.dtype != np.bool_:
            raise ValueError("BOOL data must be true/false")
        if dtype.kind in "iu" and array.size and array.dtype.kind == "f":
            raise ValueError("integer tensor given non-integer values")
        if array.size and dtype.kind in "iu":
            info = np.iinfo(dtype)
            if array.min() < info.min or array.max() > info.max:
                raise ValueError(f"values out of range for {datatype}")
        array = array.astype(dtype, copy=False)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(f"input {name!r}: data does not fit {datatype}: {exc}") from None
    if array.size != count:
        raise InvalidInput(f"input {name!r}: {array.size} elements for shape {list(shape)} ({count} expected)")
    return array.reshape(shape)


def _flatten(data: Any, name: str, depth: int = 0) -> Any:
    if depth > 32:
        raise InvalidInput(f"input {name!r}: data nested deeper than 32 levels")
    if isinstance(data, list | tuple):
        for item in data:
            yield from _flatten(item, name, depth + 1)
    else:
        yield data


def _as_bytes(item: Any, name: str) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    raise InvalidInput(f"input {name!r}: BYTES elements must be strings, got {type(item).__name__}")
