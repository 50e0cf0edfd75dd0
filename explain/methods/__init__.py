"""The method registry: name -> the class that implements it for each task.

``integrated_gradients`` on a text model means IG over the embeddings
(:class:`LayerIntegratedGradients`); ``smoothgrad`` is ``noise_tunnel`` over Saliency.
A vision transformer (``ModelContext.vision_transformer``) gets the image methods with
``VIT_REGISTRY`` on top: attention maps and rollouts, and Grad-CAM on the token grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from explain.errors import ExplainParameterError, UnsupportedMethodError
from explain.image_model import VisionTransformer
from explain.memory import DEFAULT_BUDGET_BYTES
from explain.methods.attention import AttentionMaps
from explain.methods.base import IMAGE, TEXT, Explainer, ImageExplainer, Task, TextExplainer
from explain.methods.feature_ablation import FeatureAblation
from explain.methods.grad_cam import GradCam
from explain.methods.gradient_shap import GradientShap
from explain.methods.integrated_gradients import IntegratedGradients
from explain.methods.kernel_shap import KernelShap
from explain.methods.layer_integrated_gradients import LayerIntegratedGradients
from explain.methods.lime import Lime
from explain.methods.noise_tunnel import NoiseTunnel
from explain.methods.occlusion import Occlusion
from explain.methods.saliency import Saliency
from explain.methods.shapley_value_sampling import ShapleyValueSampling
from explain.methods.token_occlusion import TokenOcclusion
from explain.methods.vit import GradientRollout, VitAttention, VitExplainer, VitGradCam
from explain.text_model import TextClassifier

REGISTRY: dict[str, dict[Task, type[Explainer[Any]]]] = {
    "saliency": {IMAGE: Saliency},
    "integrated_gradients": {IMAGE: IntegratedGradients, TEXT: LayerIntegratedGradients},
    "layer_integrated_gradients": {TEXT: LayerIntegratedGradients},
    "gradient_shap": {IMAGE: GradientShap},
    "occlusion": {IMAGE: Occlusion, TEXT: TokenOcclusion},
    "grad_cam": {IMAGE: GradCam},
    "noise_tunnel": {IMAGE: NoiseTunnel},
    "smoothgrad": {IMAGE: NoiseTunnel},
    "attention": {TEXT: AttentionMaps},
    "feature_ablation": {IMAGE: FeatureAblation},
    "shapley_value_sampling": {IMAGE: ShapleyValueSampling},
    "kernel_shap": {IMAGE: KernelShap},
    "lime": {IMAGE: Lime},
}
VIT_REGISTRY: dict[str, type[VitExplainer]] = {
    "attention": VitAttention,
    "gradient_rollout": GradientRollout,
    "grad_cam": VitGradCam,
}
"""Methods that replace or add to the image ones for a vision transformer."""
DEFAULT_METHOD: dict[Task, str] = {IMAGE: "saliency", TEXT: "integrated_gradients"}
RUNTIME_DEFAULT_METHOD: dict[Task, str] = {IMAGE: "occlusion", TEXT: "occlusion"}
"""Defaults for a model without eager weights (gradient-free methods only)."""
NOISE_TUNNEL_BASES = ("saliency", "integrated_gradients", "gradient_shap")


def method_classes(
    task: Task, vision_transformer: bool = False, gradients: bool = True
) -> list[tuple[str, type[Explainer[Any]]]]:
    """(name, class) of every method for this task, sorted by name; ``gradients=False``: only
    the methods that run on a bare forward function (a model without eager weights)."""
    by_name: dict[str, type[Explainer[Any]]] = {n: t[task] for n, t in REGISTRY.items() if task in t}
    if vision_transformer and task == IMAGE:
        by_name |= VIT_REGISTRY
    return sorted((n, c) for n, c in by_name.items() if gradients or not c.needs_eager)


def supported_methods(task: Task, vision_transformer: bool = False, gradients: bool = True) -> list[str]:
    return [name for name, _ in method_classes(task, vision_transformer, gradients)]


@dataclass(frozen=True)
class ModelContext:
    """What building any explainer for one model needs."""

    model: torch.nn.Module  # image: (batch, C, H, W) -> logits; text: a TextClassifier
    task: Task
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    gradcam_layer: str | None = None
    memory_budget_bytes: int = DEFAULT_BUDGET_BYTES
    vision_transformer: VisionTransformer | None = None
    gradients: bool = True
    """False: the model is the served runtime (no eager weights); gradient methods are refused."""


def build_explainer(method: str, ctx: ModelContext, *, base_method: str | None = None) -> Explainer[Any]:
    """The explainer for ``method`` on this model, or :class:`UnsupportedMethodError`."""
    vit = ctx.vision_transformer if ctx.task == IMAGE else None
    budget = ctx.memory_budget_bytes
    if vit is not None and method in VIT_REGISTRY:
        return VIT_REGISTRY[method](ctx.model, vit=vit, mean=ctx.mean, std=ctx.std, memory_budget_bytes=budget)
    by_task = REGISTRY.get(method)
    if by_task is None:
        known = sorted(set(REGISTRY) | set(VIT_REGISTRY))
        raise UnsupportedMethodError(f"unknown explain method {method!r} (known: {', '.join(known)})")
    cls = by_task.get(ctx.task)
    if cls is None:
        kind = "vision transformer" if vit is not None else f"{ctx.task} model"
        raise UnsupportedMethodError(
            f"method {method!r} does not apply to a {kind} "
            f"(supported: {', '.join(supported_methods(ctx.task, vit is not None, ctx.gradients))})"
        )
    if cls.needs_eager and not ctx.gradients:
        raise ExplainParameterError(
            f"method {method!r} needs the model's eager weights (gradients, attention maps), and this model has "
            f"none (served from ONNX/TorchScript only); methods it can run: "
            f"{', '.join(supported_methods(ctx.task, False, False))}"
        )
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
    "NOISE_TUNNEL_BASES",
    "REGISTRY",
    "RUNTIME_DEFAULT_METHOD",
    "VIT_REGISTRY",
    "AttentionMaps",
    "Explainer",
    "FeatureAblation",
    "GradCam",
    "GradientShap",
    "IntegratedGradients",
    "KernelShap",
    "LayerIntegratedGradients",
    "Lime",
    "ModelContext",
    "NoiseTunnel",
    "Occlusion",
    "Saliency",
    "ShapleyValueSampling",
    "TokenOcclusion",
    "build_explainer",
    "method_classes",
    "supported_methods",
]
