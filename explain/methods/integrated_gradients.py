"""Integrated Gradients (Sundararajan et al., 2017) over pixels, with its convergence delta.

Completeness: per item, the attributions sum to ``f(x)[t] - f(baseline)[t]`` up to the
returned ``convergence_delta`` (the integration error; shrink it with more ``n_steps``).
"""

from __future__ import annotations

from typing import Any, Literal

from captum.attr import IntegratedGradients as CaptumIG
from pydantic import Field

from explain.explanation import Explanation
from explain.methods.base import ImageExplainer
from explain.params import MethodParams

Integration = Literal["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle"]
ImageBaseline = Literal["zero", "black", "white"]


class IntegratedGradientsParams(MethodParams):
    n_steps: int = Field(default=32, ge=2, le=512, description="integration steps per item")
    integration: Integration = Field(default="gausslegendre", description="quadrature rule")
    internal_batch_size: int | None = Field(
        default=None, ge=1, le=4096, description="model evaluations per forward pass (None: fit the memory budget)"
    )
    baselines: ImageBaseline = Field(
        default="zero", description="reference image: zero (mean colour), black (pixel 0) or white (pixel 1)"
    )


class IntegratedGradients(ImageExplainer[IntegratedGradientsParams]):
    name = "integrated_gradients"
    Params = IntegratedGradientsParams

    @classmethod
    def outputs(cls, text: bool) -> list[str]:
        return [*super().outputs(text), "convergence_delta"]

    def captum(self) -> CaptumIG:
        return CaptumIG(self.model)

    def captum_kwargs(self, inputs: Any, params: IntegratedGradientsParams) -> dict[str, Any]:
        return {
            "baselines": self.baseline(params.baselines, inputs),
            "n_steps": params.n_steps,
            "method": params.integration,
            "internal_batch_size": max(
                len(inputs), params.internal_batch_size or self.fit(inputs, params.n_steps * len(inputs))
            ),
        }

    def _explain(self, inputs: Any, targets: list[int], params: IntegratedGradientsParams) -> Explanation:
        kwargs = self.captum_kwargs(inputs, params)
        attributions, delta = self.captum().attribute(
            inputs, target=targets, return_convergence_delta=True, **kwargs
        )  # (batch, C, H, W), (batch,)
        used = params.model_dump() | {"internal_batch_size": kwargs["internal_batch_size"]}
        return Explanation(
            attributions=attributions.detach(),
            method=self.name,
            params=used,
            targets=targets,
            convergence_delta=delta.detach(),
        )
