"""A text classifier as a plain module: ``(input_ids, attention_mask) -> logits``.

Captum methods call ``forward_func(*inputs, *additional_forward_args)`` and expect a tensor,
so the Hugging Face model (which returns an output object) is wrapped. The wrapper also
knows the special token ids, which explanations keep in place (baselines, deletion).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from explain.attention_impl import ensure_eager_attention
from explain.errors import UnsupportedMethodError


class TextClassifier(torch.nn.Module):
    def __init__(
        self,
        hf_model: Any,
        *,
        pad_id: int | None = None,
        mask_id: int | None = None,
        unk_id: int | None = None,
        special_ids: Iterable[int] = (),
    ) -> None:
        super().__init__()
        self.hf = hf_model
        config = hf_model.config
        self.pad_id = int(pad_id if pad_id is not None else (config.pad_token_id or 0))
        self.mask_id = mask_id
        self.unk_id = unk_id
        self.special_ids = frozenset(int(i) for i in special_ids) | {self.pad_id}

    @classmethod
    def from_tokenizer(cls, hf_model: Any, tokenizer: Any) -> TextClassifier:
        return cls(
            hf_model,
            pad_id=tokenizer.pad_token_id,
            mask_id=tokenizer.mask_token_id,
            unk_id=tokenizer.unk_token_id,
            special_ids=tokenizer.all_special_ids,
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # input_ids, attention_mask: (batch, seq) -> logits (batch, labels)
        return self.hf(input_ids=input_ids, attention_mask=attention_mask).logits  # type: ignore[no-any-return]

    def embeddings(self) -> torch.nn.Module:
        """The layer token attributions are taken over: the base model's embedding block
        (word + position + type: BERT, DistilBERT, RoBERTa, ...) where it has one, else the
        word embeddings (``get_input_embeddings``, every Hugging Face model)."""
        module = getattr(self.hf.base_model, "embeddings", None)
        if isinstance(module, torch.nn.Module):
            return module
        words = self.hf.get_input_embeddings() if hasattr(self.hf, "get_input_embeddings") else None
        if not isinstance(words, torch.nn.Module):
            raise UnsupportedMethodError(f"{type(self.hf).__name__} has no embeddings to attribute over")
        return words

    def attentions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """All attention maps, stacked: (batch, layers, heads, seq, seq)."""
        ensure_eager_attention(self.hf)
        out = self.hf(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True)
        if not out.attentions:
            raise UnsupportedMethodError(f"{type(self.hf).__name__} returned no attention maps")
        return torch.stack(out.attentions, dim=1)  # (batch, layers, heads, seq, seq)

    def special_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """True where a token is special (CLS, SEP, PAD, ...): (batch, seq) bool."""
        ids = torch.tensor(sorted(self.special_ids), dtype=input_ids.dtype)
        return torch.isin(input_ids, ids)  # (batch, seq)
