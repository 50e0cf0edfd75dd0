"""Grad-CAM (Selvaraju et al., 2017): channel-weighted activations of a convolutional layer,
weighted by the spatially averaged gradient of the target, ReLU'd and upsampled to the input.

The layer is, in order: the ``layer`` parameter (a dotted module path such as
``features.12``), the default given at construction (a bundle's
``architecture.gradcam_layer``), else the model's last ``Conv2d``.
"""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import LayerAttribution, LayerGradCam
from pydantic import Field

from explain.errors import ExplainParameterError, UnsupportedMethodError
from explain.explanation import Explanation
from explain.memory import DEFAULT_BUDGET_BYTES
from explain.methods.base import ImageExplainer
from explain.params import MethodParams


class GradCamParams(MethodParams):
    layer: str | None = Field(default=None, max_length=256, description="dotted module path (None: the default layer)")
    relu: bool = Field(default=True, description="keep only positive evidence (the paper's ReLU)")


def last_conv_name(model: torch.nn.Module) -> str | None:
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    return names[-1] if names else None


class GradCam(ImageExplainer[GradCamParams]):
    name = "grad_cam"
    Params = GradCamParams

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        default_layer: str | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        memory_budget_bytes: int = DEFAULT_BUDGET_BYTES,
    ) -> None:
        super().__init__(model, mean=mean, std=std, memory_budget_bytes=memory_budget_bytes)
        self.default_layer = default_layer or last_conv_name(model)
        if self.default_layer is None:
            raise UnsupportedMethodError("grad_cam needs a convolutional layer; this model has none")

    def layer(self, name: str) -> torch.nn.Module:
        modules = dict(self.model.named_modules())
        module = modules.get(name) if name else None
        if module is None:
            convs = [n for n, m in modules.items() if isinstance(m, torch.nn.Conv2d)][-3:]
            raise ExplainParameterError(f"grad_cam: no layer named {name!r} (e.g. {', '.join(convs)})")
        return module

    def _explain(self, inputs: Any, targets: list[int], params: GradCamParams) -> Explanation:
        name = params.layer or self.default_layer
        assert name is not None
        cam = LayerGradCam(self.model, self.layer(name)).attribute(
            inputs, target=targets, relu_attributions=params.relu
        )  # (batch, 1, h, w) at the layer's resolution
        if cam.dim() != 4:
            raise ExplainParameterError(f"grad_cam: layer {name!r} is not spatial (output {list(cam.shape)})")
        layer_hw = list(cam.shape[2:])
        upsampled = LayerAttribution.interpolate(cam, tuple(inputs.shape[2:]), "bilinear")  # (batch, 1, H, W)
        used = params.model_dump() | {"layer": name, "layer_resolution": layer_hw}
        return Explanation(attributions=upsampled.detach(), method=self.name, params=used, targets=targets)
