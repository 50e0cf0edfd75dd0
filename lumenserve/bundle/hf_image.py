"""A transformers image classifier as a plain ``pixel_values -> logits`` module.

Training, export and the eager rebuild for explain all hold Hugging Face image classifiers
(ViT, ConvNeXt, ResNet, ...) inside this wrapper, so the bundle's safetensors keys are the
same everywhere (``model.<transformers key>``) and callers get a tensor, not an output object.
"""

from __future__ import annotations

from typing import Any

import torch


class HFImageClassifier(torch.nn.Module):
    """pixel_values (batch, C, H, W) -> logits (batch, labels)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits  # (batch, labels)


def from_config(config: Any) -> HFImageClassifier:
    """A randomly initialised classifier of ``config`` (weights are loaded afterwards), with eager
    attention as in training, so a vision transformer returns its attention maps."""
    from transformers import AutoModelForImageClassification

    return HFImageClassifier(AutoModelForImageClassification.from_config(config, attn_implementation="eager"))


def gradcam_candidates(wrapper: torch.nn.Module) -> list[str]:
    """The encoder stages of a convolutional backbone (ConvNeXt, ResNet), shallow to deep:
    ``model.<base>.encoder.stages.<i>``; export picks the default Grad-CAM layer among them."""
    for name, module in wrapper.named_modules():
        if name.endswith("encoder.stages") and isinstance(module, torch.nn.ModuleList) and len(module):
            return [f"{name}.{i}" for i in range(len(module))]
    return []
