"""The result type every method returns, and the input types methods accept."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

# Per-item targets: one class index per item, or None for "the predicted class".
TargetType = list[int] | None


@dataclass(frozen=True)
class TextInputs:
    """A tokenised batch for text classifiers."""

    input_ids: torch.Tensor  # (batch, seq) int64
    attention_mask: torch.Tensor  # (batch, seq) int64, 1 = real token

    def __post_init__(self) -> None:
        if self.input_ids.shape != self.attention_mask.shape or self.input_ids.dim() != 2:
            from explain.errors import ExplainParameterError

            raise ExplainParameterError(
                f"input_ids {list(self.input_ids.shape)} and attention_mask {list(self.attention_mask.shape)} "
                "must both be [batch, seq]"
            )

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


ExplainInputs = torch.Tensor | TextInputs


@dataclass(frozen=True)
class Explanation:
    """What ``Explainer.explain`` returns (batch-first tensors; index ``[i]`` for item i).

    ``attributions`` has the input's shape for pixel methods ``(batch, C, H, W)``, one
    channel for Grad-CAM ``(batch, 1, H, W)`` (upsampled to the input size) and one score
    per token for text methods ``(batch, seq)``.
    """

    attributions: torch.Tensor
    method: str
    params: dict[str, Any]
    """The parameters actually used, defaults and automatic choices filled in."""
    targets: list[int]
    convergence_delta: torch.Tensor | None = None  # (batch,) for integrated-gradient methods
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    """Method-specific views, e.g. ``attention`` (batch, layers, heads, seq, seq) and ``rollout`` (batch, seq, seq)."""

    def __len__(self) -> int:
        return int(self.attributions.shape[0])
