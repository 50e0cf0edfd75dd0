"""Vision-transformer explanations: attention maps and rollouts, and Grad-CAM on the token grid.

- ``attention``: every layer's and head's attention from ``[CLS]`` to each patch (the
  ``attention_grid`` view), and attention rollout (Abnar & Zuidema, 2020, as for text: heads
  fused, residual added, layers multiplied) whose ``[CLS]`` row over the patches is the
  attribution. Not class-specific.
- ``gradient_rollout``: gradient-weighted rollout (Chefer et al., 2021): per layer
  ``A_bar = mean_heads((dA ⊙ A)^+)`` with ``dA`` the gradient of the target logit, and
  ``R = I; R <- R + A_bar @ R`` bottom-up; the ``[CLS]`` row over the patches. Class-specific.
- ``grad_cam`` (ViT): Grad-CAM at a block's token output (default: the last block's first
  LayerNorm): drop the prefix tokens, reshape the patch tokens (batch, h*w, C) to
  (batch, C, h, w), weight channels by their mean gradient, ReLU, sum over channels.

Every map lives on the patch grid and is upsampled (bilinear) to the input size, so the
attribution is (batch, 1, H, W) and renders as an overlay.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from explain.errors import ExplainParameterError
from explain.explanation import Explanation
from explain.image_model import VisionTransformer
from explain.memory import DEFAULT_BUDGET_BYTES
from explain.methods.attention import AttentionParams, attention_rollout
from explain.methods.base import ImageExplainer
from explain.params import MethodParams


class VitExplainer(ImageExplainer[Any]):
    """An image method that needs the vision transformer inside the model."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        vit: VisionTransformer,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        memory_budget_bytes: int = DEFAULT_BUDGET_BYTES,
    ) -> None:
        super().__init__(model, mean=mean, std=std, memory_budget_bytes=memory_budget_bytes)
        self.vit = vit

    def to_input(self, grid_maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """(batch, h, w) patch-grid maps -> (batch, 1, H, W) at the input size (bilinear)."""
        return F.interpolate(grid_maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)


class VitAttention(VitExplainer):
    """Attention maps per layer and head, and attention rollout over the patches."""

    name = "attention"
    Params = AttentionParams
    gradients: ClassVar[bool] = False

    @classmethod
    def outputs(cls, text: bool) -> list[str]:
        return ["overlay_png", "attention_grid_png"]

    def _explain(self, inputs: Any, targets: list[int], params: AttentionParams) -> Explanation:
        with torch.no_grad():
            _, maps = self.vit.attentions(inputs.detach())
        attention = torch.stack(maps, dim=1)  # (batch, layers, heads, tokens, tokens)
        rollout = attention_rollout(attention, params.head_fusion)  # (batch, tokens, tokens)
        grid = self.vit.patch_tokens(rollout[:, 0, :])  # (batch, h, w)
        per_head = self.vit.patch_tokens(attention[:, :, :, 0, :])  # (batch, layers, heads, h, w)
        return Explanation(
            attributions=self.to_input(grid, inputs.shape[2:]),
            method=self.name,
            params=params.model_dump() | {"patch_grid": list(self.vit.grid)},
            targets=targets,
            extras={"attention_grid": per_head},
        )


class GradientRolloutParams(MethodParams):
    pass


class GradientRollout(VitExplainer):
    """Gradient-weighted attention rollout (class-specific)."""

    name = "gradient_rollout"
    Params = GradientRolloutParams

    def _explain(self, inputs: Any, targets: list[int], params: GradientRolloutParams) -> Explanation:
        with torch.enable_grad():
            logits, maps = self.vit.attentions(inputs)  # (batch, classes), L x (batch, H, T, T)
            chosen = logits[torch.arange(len(targets)), torch.tensor(targets)].sum()
            grads = torch.stack(torch.autograd.grad(chosen, maps), dim=1)  # (batch, L, H, T, T)
        attention = torch.stack(maps, dim=1).detach()  # (batch, L, H, T, T)
        weighted = (grads * attention).clamp(min=0).mean(dim=2)  # (batch, L, T, T)
        tokens = weighted.shape[-1]
        relevance = torch.eye(tokens).expand(len(inputs), tokens, tokens).clone()  # (batch, T, T)
        for layer in range(weighted.shape[1]):
            relevance = relevance + weighted[:, layer] @ relevance
        grid = self.vit.patch_tokens(relevance[:, 0, :])  # (batch, h, w)
        return Explanation(
            attributions=self.to_input(grid, inputs.shape[2:]),
            method=self.name,
            params=params.model_dump() | {"patch_grid": list(self.vit.grid)},
            targets=targets,
        )


class VitGradCamParams(MethodParams):
    layer: str | None = Field(
        default=None, max_length=256, description="dotted module path of a block output (None: the last block's norm)"
    )
    relu: bool = Field(default=True, description="keep only positive evidence (the paper's ReLU)")


class VitGradCam(VitExplainer):
    """Grad-CAM through a reshape of the patch tokens into their grid."""

    name = "grad_cam"
    Params = VitGradCamParams

    def _explain(self, inputs: Any, targets: list[int], params: VitGradCamParams) -> Explanation:
        name = params.layer or self.vit.last_block_norm()
        module = dict(self.vit.hf.named_modules()).get(name)
        if module is None or not name:
            raise ExplainParameterError(f"grad_cam: no layer named {name!r} (e.g. {self.vit.last_block_norm()})")
        seen: list[torch.Tensor] = []

        def keep(_m: torch.nn.Module, _i: object, output: object) -> None:
            out = output[0] if isinstance(output, tuple) else output
            if isinstance(out, torch.Tensor):
                seen.append(out)

        handle = module.register_forward_hook(keep)
        try:
            with torch.enable_grad():
                logits = self.model(inputs)  # (batch, classes)
                chosen = logits[torch.arange(len(targets)), torch.tensor(targets)].sum()
                if not seen or seen[-1].dim() != 3:
                    raise ExplainParameterError(f"grad_cam: layer {name!r} does not output tokens (batch, T, C)")
                (grads,) = torch.autograd.grad(chosen, seen[-1])  # (batch, T, C)
        finally:
            handle.remove()
        acts = seen[-1].detach()  # (batch, T, C)

        def to_grid(tokens: torch.Tensor) -> torch.Tensor:
            return self.vit.patch_tokens(tokens.transpose(1, 2))  # (batch, T, C) -> (batch, C, h, w)

        weights = to_grid(grads).mean(dim=(2, 3), keepdim=True)  # (batch, C, 1, 1)
        cam = (weights * to_grid(acts)).sum(dim=1)  # (batch, h, w)
        if params.relu:
            cam = cam.clamp(min=0)
        return Explanation(
            attributions=self.to_input(cam, inputs.shape[2:]),
            method=self.name,
            params=params.model_dump() | {"layer": name, "layer_resolution": list(self.vit.grid)},
            targets=targets,
        )
