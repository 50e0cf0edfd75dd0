"""An image classifier as a plain module ``(batch, C, H, W) -> logits``, and what explain needs
to know about a vision transformer inside it.

Torchvision models already are such modules. A Hugging Face image classifier
(``ViTForImageClassification`` and friends) returns an output object, so it is wrapped.
:func:`find_vision_transformer` recognises a ViT-style model by its config's ``model_type``
(``vit``, ``deit``, ...) wherever it sits in the module tree, so a bundle's own wrapper
around the Hugging Face model is recognised too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from explain.attention_impl import ensure_eager_attention
from explain.errors import UnsupportedMethodError

VIT_MODEL_TYPES = frozenset(
    {"vit", "deit", "vit_msn", "vit_mae", "dinov2", "dinov2_with_registers", "beit", "data2vec-vision"}
)
"""Config ``model_type`` values of models whose tokens are a prefix ([CLS], ...) then a patch grid."""


class HfImageClassifier(torch.nn.Module):
    """``pixel_values`` (batch, C, H, W) -> logits (batch, classes) for a Hugging Face classifier."""

    def __init__(self, hf_model: Any) -> None:
        super().__init__()
        self.hf = hf_model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.hf(pixel_values=pixel_values).logits  # type: ignore[no-any-return]


def as_image_classifier(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` itself when it returns logits, else wrapped (Hugging Face classifiers)."""
    from transformers import PreTrainedModel

    return HfImageClassifier(model).eval() if isinstance(model, PreTrainedModel) else model


@dataclass(frozen=True)
class VisionTransformer:
    """The Hugging Face ViT-style classifier inside an image model and its patch grid."""

    hf: Any  # a transformers PreTrainedModel whose forward takes pixel_values, output_attentions
    grid: tuple[int, int]  # patches per column, per row (h, w)

    @property
    def patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def attentions(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """(logits (batch, classes), one (batch, heads, tokens, tokens) map per layer), in the graph
        (stack them after taking gradients: the stacked copy is not what the logits depend on)."""
        ensure_eager_attention(self.hf)
        out = self.hf(pixel_values=pixel_values, output_attentions=True)
        if not out.attentions:
            raise UnsupportedMethodError(f"{type(self.hf).__name__} returned no attention maps")
        return out.logits, tuple(out.attentions)

    def patch_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., tokens) per-token values -> (..., h, w) on the patch grid (prefix tokens dropped)."""
        return tokens[..., tokens.shape[-1] - self.patches :].reshape(*tokens.shape[:-1], *self.grid)

    def last_block_norm(self) -> str:
        """The dotted path of the last block's first LayerNorm (Grad-CAM's usual ViT layer)."""
        names = [n for n, m in self.hf.named_modules() if isinstance(m, torch.nn.LayerNorm)]
        before = [n for n in names if n.endswith("layernorm_before") or n.endswith("norm1")]
        chosen = (before or names[-2:-1] or names)[-1:]
        if not chosen:
            raise UnsupportedMethodError(f"{type(self.hf).__name__} has no LayerNorm to take Grad-CAM at")
        return chosen[0]


def find_vision_transformer(model: torch.nn.Module) -> VisionTransformer | None:
    """The ViT-style Hugging Face classifier in ``model``'s module tree, or None (CNNs, text)."""
    from transformers import PreTrainedModel

    for module in model.modules():
        config: Any = getattr(module, "config", None)
        if isinstance(module, PreTrainedModel) and getattr(config, "model_type", None) in VIT_MODEL_TYPES:
            size, patch = _pair(config.image_size), _pair(config.patch_size)
            return VisionTransformer(hf=module, grid=(size[0] // patch[0], size[1] // patch[1]))
    return None


def _pair(value: Any) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, list | tuple) else (int(value), int(value))
