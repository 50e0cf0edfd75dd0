"""Texts -> model inputs with a bundle's tokenizer: the one tokenisation serving and explain share.

Lowercases first when the bundle's preprocessing says so (``lowercase``), pads to the
longest text of the batch (or always to ``max_length`` with ``pad_to_max_length``: models
whose sequence axis is fixed) and truncates to ``max_length`` tokens.

The tokenizer is a transformers tokenizer (explain, tests) or a :class:`FileTokenizer`: the
same fast tokenizer read straight from its ``tokenizer.json`` with the ``tokenizers`` library,
which serving uses so that a text model does not import transformers and torch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lumenserve.bundle.manifest import TextPreprocessing


def tokenize(tokenizer: Any, pre: TextPreprocessing, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """``{"input_ids", "attention_mask"}``, each INT64 (batch, seq)."""
    prepared = [text.lower() for text in texts] if pre.lowercase else list(texts)
    if isinstance(tokenizer, FileTokenizer):
        return tokenizer.encode(prepared)
    padding: bool | str = "max_length" if pre.pad_to_max_length else True
    encoded = tokenizer(prepared, padding=padding, truncation=True, max_length=pre.max_length, return_tensors="np")
    return {
        "input_ids": np.asarray(encoded["input_ids"], dtype=np.int64),  # (batch, seq)
        "attention_mask": np.asarray(encoded["attention_mask"], dtype=np.int64),  # (batch, seq)
    }


class FileTokenizer:
    """A Hugging Face fast tokenizer from ``tokenizer.json`` (+ ``tokenizer_config.json``), set up
    once with the bundle's padding and truncation (thread-safe: nothing changes per call)."""

    def __init__(self, folder: Path, pre: TextPreprocessing) -> None:
        from tokenizers import Tokenizer

        config = _read_config(folder / "tokenizer_config.json")
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        pad_token = config.get("pad_token")
        if isinstance(pad_token, dict):  # an AddedToken written out
            pad_token = pad_token.get("content")
        self.pad_token_id: int | None = None if pad_token is None else self._tokenizer.token_to_id(str(pad_token))
        self._tokenizer.enable_truncation(pre.max_length, direction=config.get("truncation_side", "right"))
        self._tokenizer.enable_padding(
            direction=config.get("padding_side", "right"),
            pad_id=self.pad_token_id or 0,
            pad_token=str(pad_token or ""),
            length=pre.max_length if pre.pad_to_max_length else None,
        )

    def __len__(self) -> int:
        """The vocabulary with added tokens (``len()`` of a transformers tokenizer)."""
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """``{"input_ids", "attention_mask"}``, each INT64 (batch, seq)."""
        encodings = self._tokenizer.encode_batch(list(texts))
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),  # (batch, seq)
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),  # (batch, seq)
        }

    @classmethod
    def usable(cls, folder: Path) -> bool:
        """Whether ``folder`` holds a fast tokenizer this class reads (else use transformers)."""
        return (folder / "tokenizer.json").is_file()


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    loaded = json.loads(path.read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, dict) else {}
