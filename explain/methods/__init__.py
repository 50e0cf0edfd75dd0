"""The method registry: name -> the class that implements it for each task.

``integrated_gradients`` on a text model means IG over the embeddings
(:class:`LayerIntegratedGradients`); ``smoothgrad`` is ``noise_tunnel`` over Saliency.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from explain.errors import ExplainParameterError, UnsupportedMethodError
from explain.memory import DEFAULT_BUDGET_BYTES
from explain.methods.attention import AttentionMaps
from explain.methods.base import IMAGE, TEXT, Explainer, ImageExplainer, Task, TextExplainer
from explain.methods.grad_cam import GradCam
from explain.methods.gradient_shap import GradientShap
from explain.methods.integrated_gradients import IntegratedGradients
from explain.methods.layer_integrated_gradients import LayerIntegratedGradients
from explain.methods.noise_tunnel import NoiseTunnel
from explain.methods.occlusion import Occlusion
from explain.methods.saliency import Saliency
from explain.text_model import TextClassifier

REGISTRY: dict[str, dict[Task, type[Explainer[Any]]]] = {
    "saliency": {IMAGE: Saliency},
    "integrated_gradients": {IMAGE: IntegratedGradients, TEXT: LayerIntegratedGradients},
    "layer_integrated_gradients": {TEXT: LayerIntegratedGradients},
    "gradient_shap": {IMAGE: GradientShap},
    "occlusion": {IMAGE: Occlusion},
    "grad_cam": {IMAGE: GradCam},
    "noise_tunnel": {IMAGE: NoiseTunnel},
    "smoothgrad": {IMAGE: NoiseTunnel},
    "attention": {TEXT: AttentionMaps},
}
DEFAULT_METHOD: dict[Task, str] = {IMAGE: "saliency", TEXT: "integrated_gradients"}
NOISE_TUNNEL_BASES = ("saliency", "integrated_gradients", "gradient_shap")


def supported_methods(task: Task) -> list[str]:
    return sorted(name for name, by_task in REGISTRY.items() if task in by_task)


@dataclass(frozen=True)
class ModelContext:
    """What building any explainer for one model needs."""

    model: torch.nn.Module  # image: (batch, C, H, W) -> logits; text: a TextClassifier
    task: Task
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    gradcam_layer: str | None = None
    memory_budget_bytes: int = DEFAULT_BUDGET_BYTES


def build_explainer(method: str, ctx: ModelContext, *, base_method: str | None = None) -> Explainer[Any]:
    """The explainer for ``method`` on this model, or :class:`UnsupportedMethodError`."""
    by_task = REGISTRY.get(method)
    if by_task is None:
        raise UnsupportedMethodError(f"unknown explain method {method!r} (known: {', '.join(sorted(REGISTRY))})")
    cls = by_task.get(ctx.task)
    if cls is None:
        raise UnsupportedMethodError(
            f"method {method!r} does not apply to a {ctx.task} model "
            f"(supported: {', '.join(supported_methods(ctx.task))})"
        )
    budget = ctx.memory_budget_bytes
    if issubclass(cls, TextExplainer):
        assert isinstance(ctx.model, TextClassifier)
        return cls(ctx.model, memory_budget_bytes=budget)
    image_kwargs: dict[str, Any] = {"mean": ctx.mean, "std": ctx.std, "memory_budget_bytes": budget}
    if cls is GradCam:
        return GradCam(ctx.model, default_layer=ctx.gradcam_layer, **image_kwargs)
    if cls is NoiseTunnel:
        base_name = base_method or "saliency"
        if method == "smoothgrad" and base_method not in (None, "saliency"):
            raise ExplainParameterError("smoothgrad is noise_tunnel over saliency; use noise_tunnel with base_method")
        if base_name not in NOISE_TUNNEL_BASES:
            raise ExplainParameterError(
                f"noise_tunnel: base_method must be one of {', '.join(NOISE_TUNNEL_BASES)}, got {base_name!r}"
            )
        base = REGISTRY[base_name][IMAGE]
        assert issubclass(base, ImageExplainer)
        return NoiseTunnel(base(ctx.model, **image_kwargs))
    assert issubclass(cls, ImageExplainer)
    return cls(ctx.model, **image_kwargs)


__all__ = [
    "DEFAULT_METHOD",
    "REGISTRY",
    "AttentionMaps",
    "Explainer",
    "GradCam",
    "GradientShap",
    "IntegratedGradients",
    "LayerIntegratedGradients",
    "ModelContext",
    "NoiseTunnel",
    "Occlusion",
    "Saliency",
    "build_explainer",
    "supported_methods",
]
