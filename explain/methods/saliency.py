"""Saliency (Simonyan et al., 2013): the gradient of the target logit with respect to each input."""

from __future__ import annotations

from typing import Any

from captum.attr import Saliency as CaptumSaliency
from pydantic import Field

from explain.explanation import Explanation
from explain.methods.base import ImageExplainer
from explain.params import MethodParams


class SaliencyParams(MethodParams):
    abs: bool = Field(default=True, description="return |gradient| (True) or the signed gradient (False)")


class Saliency(ImageExplainer[SaliencyParams]):
    name = "saliency"
    Params = SaliencyParams

    def captum(self) -> CaptumSaliency:
        return CaptumSaliency(self.model)

    def captum_kwargs(self, inputs: Any, params: SaliencyParams) -> dict[str, Any]:
        return {"abs": params.abs}

    def _explain(self, inputs: Any, targets: list[int], params: SaliencyParams) -> Explanation:
        grads = self.captum().attribute(inputs, target=targets, **self.captum_kwargs(inputs, params))
        return Explanation(
            attributions=grads.detach(),  # (batch, C, H, W)
            method=self.name,
            params=params.model_dump(),
            targets=targets,
        )
