"""What one TorchServe request row carries, decoded into an :class:`ItemRequest`.

TorchServe hands the handler one dict per request, keyed by part name:

- a raw body: ``{"body": bytearray}`` (``application/json`` arrives parsed, ``text/*``
  arrives as ``str``);
- multipart/form-data: one key per form field (``data``, ``top_k``, ``method``, ...), values
  as ``bytearray``;
- gRPC ``Predictions``: one key per entry of the ``input`` map, values as ``bytearray``.

Fields (the same names in a JSON body, a form or a gRPC map):

- ``data`` / ``body`` / ``file``: the input: encoded image bytes (image models) or UTF-8
  text (text models); in a JSON body a string (base64 for images).
- ``image``: encoded image bytes (base64 in JSON); ``text``: UTF-8 text.
- ``inputs``: a JSON list of v2 tensors ``{name, shape, datatype, data}`` for ONE item:
  ``input`` ``[C, H, W]`` or ``[1, C, H, W]``; ``input_ids`` (+ optional ``attention_mask``)
  ``[S]`` or ``[1, S]``.
- ``top_k``: labels to return (default 5, at most the number of classes).
- ``method``: explanation method (explanations only).
- ``target`` / ``targets``: class index to explain (an int, or a one-element JSON list).
- ``parameters``: a JSON object of method parameters.
- anything else: one method parameter by name (``n_steps``, ``internal_batch_size``, ...).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from serving.errors import InvalidInput

PAYLOAD_FIELDS = ("data", "body", "file", "image", "text", "inputs")
MAX_TOP_K = 1000
InputKind = Literal["encoded", "text", "tensors"]


@dataclass(frozen=True)
class ItemRequest:
    """One TorchServe request: its input and the options that came with it."""

    kind: InputKind
    value: Any
    """``bytes`` (encoded image), ``str`` (text) or ``list[dict]`` (v2 tensors)."""
    top_k: int | None = None
    method: str | None = None
    target: int | None = None
    params: dict[str, Any] = field(default_factory=dict)


def _text_of(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"field {name!r}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    raise InvalidInput(f"field {name!r}: expected a string, got {type(value).__name__}")


def _option(value: Any) -> Any:
    """A form/gRPC option arrives as bytes: JSON-decode it when it is JSON ("32" -> 32), else keep the text."""
    if isinstance(value, bytes | bytearray):
        value = _text_of(value, "option")
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _structured(value: Any, name: str) -> Any:
    """A JSON-valued field: already parsed (JSON body) or JSON text (form, gRPC)."""
    if isinstance(value, bytes | bytearray | str):
        try:
            return json.loads(_text_of(value, name))
        except ValueError as exc:
            raise InvalidInput(f"field {name!r}: not valid JSON ({exc})") from None
    return value


def _int(value: Any, name: str) -> int:
    value = _option(value)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"field {name!r}: expected an integer, got {value!r}")
    return value


def _fields(row: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Flatten a row into fields; a JSON-object body contributes its keys. Returns (fields, from_json)."""
    fields = dict(row)
    body = fields.get("body")
    if isinstance(body, dict):
        del fields["body"]
        return {**body, **fields}, True
    if isinstance(body, list):
        raise InvalidInput("a JSON body must be an object (send one item per request; TorchServe batches them)")
    return fields, False


def parse_row(row: dict[str, Any], *, task: str) -> ItemRequest:
    """One TorchServe row -> :class:`ItemRequest` (InvalidInput on anything malformed)."""
    if not isinstance(row, dict) or not row:
        raise InvalidInput("empty request")
    fields, from_json = _fields(row)
    present = [name for name in PAYLOAD_FIELDS if fields.get(name) is not None]
    if not present:
        raise InvalidInput(f"no input: send the item as the body or as one of the fields {', '.join(PAYLOAD_FIELDS)}")
    if len(present) > 1:
        raise InvalidInput(f"one input per request, got fields {present}")
    name = present[0]
    raw = fields.pop(name)
    kind: InputKind
    value: Any
    if name == "inputs":
        kind, value = "tensors", _structured(raw, name)
        if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
            raise InvalidInput("field 'inputs': expected a JSON list of tensors {name, shape, datatype, data}")
    elif task == "text-classification" or name == "text":
        if task != "text-classification":
            raise InvalidInput("this model classifies images: send an encoded image, not text")
        kind, value = "text", _text_of(raw, name)
    else:
        kind, value = "encoded", _image_bytes(raw, name)
    return ItemRequest(kind=kind, value=value, **_options(fields, from_json))


def _image_bytes(raw: Any, name: str) -> bytes:
    if isinstance(raw, bytes | bytearray):
        return bytes(raw)
    if isinstance(raw, str):
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"field {name!r}: an image in a JSON or text field must be base64") from None
    raise InvalidInput(f"field {name!r}: expected image bytes, got {type(raw).__name__}")


def _options(fields: dict[str, Any], from_json: bool) -> dict[str, Any]:
    top_k = fields.pop("top_k", fields.pop("topk", None))
    method = fields.pop("method", None)
    target = fields.pop("target", None)
    targets = fields.pop("targets", None)
    params_field = fields.pop("parameters", None)
    params: dict[str, Any] = {}
    if params_field is not None:
        parsed = _structured(params_field, "parameters")
        if not isinstance(parsed, dict):
            raise InvalidInput("field 'parameters': expected a JSON object")
        params.update(parsed)
    params.update({k: (v if from_json else _option(v)) for k, v in fields.items()})
    if target is not None and targets is not None:
        raise InvalidInput("send either 'target' or 'targets', not both")
    chosen = target if target is not None else targets
    out: dict[str, Any] = {"params": params}
    if top_k is not None:
        k = _int(top_k, "top_k")
        if not 1 <= k <= MAX_TOP_K:
            raise InvalidInput(f"field 'top_k': must be between 1 and {MAX_TOP_K}, got {k}")
        out["top_k"] = k
    if method is not None:
        out["method"] = _text_of(method, "method") if not isinstance(method, str) else method
    if chosen is not None:
        out["target"] = _int(chosen, "target")
    return out
