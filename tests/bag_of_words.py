"""A text classifier whose right token attributions are known, for hand-checked tests."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from explain.text_model import TextClassifier


class BagOfWords(torch.nn.Module):
    """A text classifier whose logit for class c is the sum of ``table[token, c]`` over the attended
    tokens: removing a token removes exactly its row, so the true attribution is known."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(table)  # (vocab, classes)
        self.config = SimpleNamespace(pad_token_id=0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        rows = self.table[input_ids] * attention_mask[..., None]  # (batch, seq, classes)
        return SimpleNamespace(logits=rows.sum(dim=1))


def bag_of_words(vocab: int = 40, classes: int = 2, seed: int = 0) -> TextClassifier:
    """Token ids 0, 1, 2 are PAD, CLS, SEP and weigh nothing; the others random rows."""
    table = torch.randn(vocab, classes, generator=torch.Generator().manual_seed(seed))  # (vocab, classes)
    table[:3] = 0.0
    return TextClassifier(BagOfWords(table), pad_id=0, special_ids=(1, 2))
