"""Shared by the surrogate-model methods (KernelShap, Lime): random patch coalitions, a
linear model fitted to the target scores, its weights painted back on the patches. Captum
fits one item at a time, so items are explained in turn."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from explain.explanation import Explanation
from explain.methods.base import ImageExplainer, P
from explain.methods.patches import PatchParams, patch_mask, patch_side


class SurrogateParams(PatchParams):
    n_samples: int = Field(default=128, ge=8, le=4096, description="random patch coalitions evaluated per item")


class SurrogateExplainer(ImageExplainer[P]):
    gradients = False
    needs_eager = False

    def _captum(self) -> Any:
        raise NotImplementedError

    def _explain(self, inputs: Any, targets: list[int], params: Any) -> Explanation:
        _, _, h, w = inputs.shape  # (batch, C, H, W)
        side = patch_side(params, h, w)
        mask, _features = patch_mask(h, w, side, self.name)
        per_eval = params.perturbations_per_eval or self.fit(inputs[:1], params.n_samples, with_grad=False)
        method = self._captum()
        baselines = self.baseline(params.baselines, inputs)  # (batch, C, H, W)
        rows = []
        for i, target in enumerate(targets):
            rows.append(
                method.attribute(
                    inputs[i : i + 1],
                    baselines=baselines[i : i + 1],
                    target=target,
                    feature_mask=mask,
                    n_samples=params.n_samples,
                    perturbations_per_eval=per_eval,
                    return_input_shape=True,
                )  # (1, C, H, W)
            )
        attributions = torch.cat(rows).detach()  # (batch, C, H, W)
        used = params.model_dump() | {"patch": side, "perturbations_per_eval": per_eval}
        return Explanation(attributions=attributions, method=self.name, params=used, targets=targets)
