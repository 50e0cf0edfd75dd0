"""UTF-8 texts -> ``input_ids`` + ``attention_mask`` (INT64, batch x seq) with the bundle's tokenizer.

Padding is dynamic (to the longest text of the request, at most ``max_length`` tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lumenserve.bundle import TextPreprocessing
from lumenserve.bundle.text import tokenize
from serving.errors import InvalidInput


class TextCodec:
    def __init__(self, tokenizer: Any, pre: TextPreprocessing, *, max_chars: int) -> None:
        self.tokenizer = tokenizer
        self.pre = pre
        self.max_chars = max_chars
        self.pad_id = int(tokenizer.pad_token_id or 0)

    def decode_texts(self, items: Sequence[bytes]) -> list[str]:
        texts: list[str] = []
        for i, item in enumerate(items):
            try:
                text = item.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"text {i}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
            if len(text) > self.max_chars:
                raise InvalidInput(f"text {i}: {len(text)} characters, over the limit of {self.max_chars}")
            texts.append(text)  # lowercased (when the bundle says so) by tokenize, the one place
        return texts

    def __call__(self, items: Sequence[bytes]) -> dict[str, np.ndarray]:
        return tokenize(self.tokenizer, self.pre, self.decode_texts(items))  # (batch, seq) each
