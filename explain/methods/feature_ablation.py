"""Feature ablation: switch each image patch off (to the baseline) in turn and record the drop
of the target score; every pixel of the patch gets it.

Cost: one forward pass per patch, plus one for the unperturbed image, per item.
"""

from __future__ import annotations

from typing import Any

from captum.attr import FeatureAblation as CaptumFeatureAblation

from explain.explanation import Explanation
from explain.methods.base import ImageExplainer
from explain.methods.patches import PatchParams, patch_mask, patch_side


class FeatureAblationParams(PatchParams):
    pass


class FeatureAblation(ImageExplainer[FeatureAblationParams]):
    name = "feature_ablation"
    Params = FeatureAblationParams
    gradients = False
    needs_eager = False

    def _explain(self, inputs: Any, targets: list[int], params: FeatureAblationParams) -> Explanation:
        _, _, h, w = inputs.shape  # (batch, C, H, W)
        side = patch_side(params, h, w)
        mask, features = patch_mask(h, w, side, self.name)
        per_eval = (
            params.perturbations_per_eval
            or self.fit(inputs, features * len(inputs), with_grad=False) // len(inputs)
            or 1
        )
        attributions = CaptumFeatureAblation(self.model).attribute(
            inputs,
            baselines=self.baseline(params.baselines, inputs),
            target=targets,
            feature_mask=mask,
            perturbations_per_eval=per_eval,
        )  # (batch, C, H, W)
        used = params.model_dump() | {"patch": side, "perturbations_per_eval": per_eval}
        return Explanation(attributions=attributions.detach(), method=self.name, params=used, targets=targets)
