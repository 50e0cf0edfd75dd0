"""Attention maps per layer and head, and attention rollout (Abnar & Zuidema, 2020).

Needs a transformer built with ``attn_implementation="eager"`` (sdpa returns no maps).
Rollout: per layer, fuse the heads (mean by default), add the residual path
``A' = 0.5 * A + 0.5 * I``, renormalise rows, and multiply the layers bottom-up:
``R = A'_L @ ... @ A'_1``. Every row of ``R`` sums to 1; row 0 (the ``[CLS]`` token the
classifier reads) is the token score. Attention is not class-specific: ``targets`` are
recorded but do not change the maps.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from explain.explanation import Explanation, TextInputs
from explain.methods.base import TextExplainer
from explain.params import MethodParams


class AttentionParams(MethodParams):
    head_fusion: Literal["mean", "max", "min"] = Field(default="mean", description="how heads are combined for rollout")


def attention_rollout(attention: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """(batch, layers, heads, seq, seq) attention -> (batch, seq, seq) rollout, rows summing to 1."""
    if head_fusion == "mean":
        fused = attention.mean(dim=2)  # (batch, layers, seq, seq)
    elif head_fusion == "max":
        fused = attention.amax(dim=2)
    else:
        fused = attention.amin(dim=2)
    seq = fused.shape[-1]
    eye = torch.eye(seq, dtype=fused.dtype)  # (seq, seq)
    with_residual = 0.5 * fused + 0.5 * eye  # (batch, layers, seq, seq)
    with_residual = with_residual / with_residual.sum(dim=-1, keepdim=True)
    rollout = eye.expand(fused.shape[0], seq, seq)  # (batch, seq, seq)
    for layer in range(fused.shape[1]):
        rollout = with_residual[:, layer] @ rollout  # (batch, seq, seq)
    return rollout


class AttentionMaps(TextExplainer[AttentionParams]):
    name = "attention"
    Params = AttentionParams
    gradients = False

    @classmethod
    def outputs(cls, text: bool) -> list[str]:
        return [*super().outputs(text), "attention_grid_png", "rollout_png"]

    def _explain(self, inputs: TextInputs, targets: list[int], params: AttentionParams) -> Explanation:
        with torch.no_grad():
            attention = self.model.attentions(inputs.input_ids, inputs.attention_mask)  # (batch, L, H, seq, seq)
        rollout = attention_rollout(attention, params.head_fusion)  # (batch, seq, seq)
        cls_row = rollout[:, 0, :] * inputs.attention_mask  # (batch, seq)
        return Explanation(
            attributions=cls_row,
            method=self.name,
            params=params.model_dump(),
            targets=targets,
            extras={"attention": attention, "rollout": rollout},
        )
