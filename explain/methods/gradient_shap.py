"""GradientSHAP (Lundberg & Lee, 2017): expected gradients x (input - baseline), sampled.

Each sample draws a baseline from the named reference images and a point on the line to
the input (plus Gaussian noise of ``stdevs``). Samples are evaluated in chunks that fit
the memory budget and averaged.
"""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import GradientShap as CaptumGradientShap
from pydantic import Field, field_validator

from explain.explanation import Explanation
from explain.methods.base import ImageExplainer
from explain.params import MethodParams

BASELINE_NAMES = ("zero", "black", "white")


class GradientShapParams(MethodParams):
    n_samples: int = Field(default=16, ge=1, le=512, description="random samples per item")
    stdevs: float = Field(
        default=0.0, ge=0.0, le=5.0, description="std of Gaussian noise added to each sample (input units)"
    )
    baselines: str = Field(
        default="zero,black,white", description="comma-separated reference images drawn from: zero, black, white"
    )
    seed: int = Field(
        default=0, ge=0, le=2**31 - 1, description="random seed (the same seed gives the same attributions)"
    )

    @field_validator("baselines")
    @classmethod
    def _names(cls, value: str) -> str:
        names = [n.strip() for n in value.split(",") if n.strip()]
        bad = [n for n in names if n not in BASELINE_NAMES]
        if not names or bad or len(set(names)) != len(names):
            raise ValueError(f"a comma-separated list of distinct names from {', '.join(BASELINE_NAMES)}")
        return ",".join(names)


class GradientShap(ImageExplainer[GradientShapParams]):
    name = "gradient_shap"
    Params = GradientShapParams

    def captum(self) -> CaptumGradientShap:
        return CaptumGradientShap(self.model)

    def captum_kwargs(self, inputs: Any, params: GradientShapParams) -> dict[str, Any]:
        refs = [self.baseline(n, inputs[:1])[0] for n in params.baselines.split(",")]
        return {"baselines": torch.stack(refs), "stdevs": params.stdevs}  # (refs, C, H, W)

    def _explain(self, inputs: Any, targets: list[int], params: GradientShapParams) -> Explanation:
        kwargs = self.captum_kwargs(inputs, params)
        chunk = max(1, self.fit(inputs, params.n_samples * len(inputs)) // len(inputs))
        torch.manual_seed(params.seed)
        total = torch.zeros_like(inputs)  # (batch, C, H, W)
        done = 0
        while done < params.n_samples:
            n = min(chunk, params.n_samples - done)
            part = self.captum().attribute(inputs, target=targets, n_samples=n, **kwargs)  # (batch, C, H, W)
            total += part.detach() * n
            done += n
        return Explanation(
            attributions=total / params.n_samples,
            method=self.name,
            params=params.model_dump() | {"samples_per_pass": chunk},
            targets=targets,
        )
