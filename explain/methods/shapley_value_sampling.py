"""Shapley value sampling (Castro et al., 2009): image patches are switched on in random orders;
each patch's attribution is its mean marginal contribution to the target score.

Cost: ``n_samples`` x (patches + 1) forward passes per item.
"""

from __future__ import annotations

from typing import Any

from captum.attr import ShapleyValueSampling as CaptumShapleyValueSampling
from pydantic import Field

from explain.explanation import Explanation
from explain.methods.base import ImageExplainer
from explain.methods.patches import PatchParams, patch_mask, patch_side


class ShapleyValueSamplingParams(PatchParams):
    n_samples: int = Field(default=2, ge=1, le=100, description="random feature orders (permutations) sampled")


class ShapleyValueSampling(ImageExplainer[ShapleyValueSamplingParams]):
    name = "shapley_value_sampling"
    Params = ShapleyValueSamplingParams
    gradients = False
    needs_eager = False

    def _explain(self, inputs: Any, targets: list[int], params: ShapleyValueSamplingParams) -> Explanation:
        _, _, h, w = inputs.shape  # (batch, C, H, W)
        side = patch_side(params, h, w)
        mask, features = patch_mask(h, w, side, self.name)
        per_eval = (
            params.perturbations_per_eval
            or self.fit(inputs, features * len(inputs), with_grad=False) // len(inputs)
            or 1
        )
        attributions = CaptumShapleyValueSampling(self.model).attribute(
            inputs,
            baselines=self.baseline(params.baselines, inputs),
            target=targets,
            feature_mask=mask,
            n_samples=params.n_samples,
            perturbations_per_eval=per_eval,
        )  # (batch, C, H, W)
        used = params.model_dump() | {"patch": side, "perturbations_per_eval": per_eval}
        return Explanation(attributions=attributions.detach(), method=self.name, params=used, targets=targets)
