"""Texts -> model inputs with a bundle's tokenizer: the one tokenisation serving and explain share.

Lowercases first when the bundle's preprocessing says so (``lowercase``), pads to the
longest text of the batch (or always to ``max_length`` with ``pad_to_max_length``: models
whose sequence axis is fixed) and truncates to ``max_length`` tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lumenserve.bundle.manifest import TextPreprocessing


def tokenize(tokenizer: Any, pre: TextPreprocessing, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """``{"input_ids", "attention_mask"}``, each INT64 (batch, seq)."""
    prepared = [text.lower() for text in texts] if pre.lowercase else list(texts)
    padding: bool | str = "max_length" if pre.pad_to_max_length else True
    encoded = tokenizer(prepared, padding=padding, truncation=True, max_length=pre.max_length, return_tensors="np")
    return {
        "input_ids": np.asarray(encoded["input_ids"], dtype=np.int64),  # (batch, seq)
        "attention_mask": np.asarray(encoded["attention_mask"], dtype=np.int64),  # (batch, seq)
    }
