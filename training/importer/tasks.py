"""Task checks shared by the runtime-only sources (ONNX, TorchScript): does the model's
input fit the image preprocessing or the tokenizer, and what feeds the check run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lumenserve.bundle import ImagePreprocessing, TensorSpec
from training.importer.options import DEFAULT_MAX_LENGTH, ImportOptions, ImportSourceError
from training.importer.write import CHECK_BATCH, NUMPY_DTYPES

TOKENIZER_KEYS = ("input_ids", "attention_mask", "token_type_ids")
CHECK_TEXTS = ("a short sentence", "another, somewhat longer sentence for the import check")


def image_input_shape(pre: ImagePreprocessing) -> list[int]:
    """The input shape the preprocessing produces, batch axis variable."""
    c, s = pre.channels, pre.crop_size
    return [-1, c, s, s] if pre.layout == "NCHW" else [-1, s, s, c]


def check_image_input(source: str, specs: list[TensorSpec], pre: ImagePreprocessing) -> np.ndarray:
    """The one image input must take what the preprocessing makes; returns a check batch."""
    if len(specs) != 1:
        names = [s.name for s in specs]
        raise ImportSourceError(
            f"{source}: an image classifier takes one input, this model takes {names}; import with --task tensor"
        )
    spec = specs[0]
    want = image_input_shape(pre)
    fits = len(spec.shape) == 4 and all(d in (-1, w) for d, w in zip(spec.shape[1:], want[1:], strict=True))
    if not fits:
        raise ImportSourceError(
            f"{source}: input {spec.name!r} has shape {spec.shape} but --layout {pre.layout} --channels "
            f"{'L' if pre.channels == 1 else pre.channel_order} --image-size {pre.crop_size} makes {want};"
            f" fix those flags"
        )
    if spec.datatype != "FP32":
        raise ImportSourceError(
            f"{source}: input {spec.name!r} is {spec.datatype};"
            f" image preprocessing feeds FP32 (import with --task tensor)"
        )
    rng = np.random.default_rng(0)
    return rng.standard_normal(size=[CHECK_BATCH, *want[1:]]).astype(np.float32)  # (batch, C, H, W) or (batch, H, W, C)


def load_user_tokenizer(tokenizer_dir: Path | None, source: str) -> Any:
    if tokenizer_dir is None:
        raise ImportSourceError(
            f"{source}: text-classification needs a tokenizer; add --tokenizer DIR (a tokenizer.save_pretrained folder)"
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ImportSourceError(
            f"{tokenizer_dir}: no usable tokenizer ({reason[:160]}); give a folder written by tokenizer.save_pretrained"
        ) from exc


def text_preprocessing(
    source: str, specs: list[TensorSpec], options: ImportOptions, tokenizer: Any
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(manifest preprocessing, check feed) for a model fed by the tokenizer's outputs."""
    names = [s.name for s in specs]
    unknown = [n for n in names if n not in TOKENIZER_KEYS]
    if unknown:
        raise ImportSourceError(
            f"{source}: inputs {unknown} are not tokenizer outputs {list(TOKENIZER_KEYS)};"
            f" rename them or import with --task tensor"
        )
    for spec in specs:
        if len(spec.shape) != 2 or not spec.datatype.startswith(("INT", "UINT")):
            raise ImportSourceError(
                f"{source}: input {spec.name!r} is {spec.datatype} {spec.shape}, not integer (batch, sequence)"
            )
    fixed = {s.shape[1] for s in specs if s.shape[1] != -1}
    if len(fixed) > 1:
        raise ImportSourceError(f"{source}: inputs disagree on the sequence length {sorted(fixed)}")
    pad = bool(fixed)  # a fixed sequence axis: always pad to it
    max_length = options.max_length or (next(iter(fixed)) if fixed else DEFAULT_MAX_LENGTH)
    if pad and max_length not in fixed:
        raise ImportSourceError(
            f"{source}: the model's sequence axis is fixed at {fixed.pop()}; drop --max-length or set it to that"
        )
    enc = tokenizer(
        list(CHECK_TEXTS),
        padding="max_length" if pad else True,
        truncation=True,
        max_length=max_length,
        return_tensors="np",
    )
    missing = [n for n in names if n not in enc]
    if missing:
        raise ImportSourceError(
            f"{options.tokenizer_dir}: the tokenizer does not produce {missing}; give the model's own tokenizer"
        )
    feed = {s.name: np.asarray(enc[s.name]).astype(NUMPY_DTYPES[s.datatype]) for s in specs}  # (batch, seq) each
    pre = {"kind": "text", "tokenizer_dir": "tokenizer", "max_length": max_length, "pad_to_max_length": pad}
    return pre, feed
