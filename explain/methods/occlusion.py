"""Occlusion (Zeiler & Fergus, 2014): slide a patch of the baseline over the image and
record how much the target logit drops; each pixel gets the mean drop of the patches covering it.

Cost: one forward pass per patch position, ``((H - window) // stride + 1) * ((W - window) // stride + 1)``
per item, capped at ``MAX_POSITIONS``.
"""

from __future__ import annotations

from typing import Any

from captum.attr import Occlusion as CaptumOcclusion
from pydantic import Field

from explain.errors import ExplainParameterError
from explain.explanation import Explanation
from explain.methods.base import ImageExplainer
from explain.methods.integrated_gradients import ImageBaseline
from explain.params import MethodParams

MAX_POSITIONS = 4096


class OcclusionParams(MethodParams):
    window: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="square patch side in pixels (None: an eighth of the shorter side, at least 2)",
    )
    stride: int | None = Field(default=None, ge=1, le=4096, description="step between patches (None: half the window)")
    baselines: ImageBaseline = Field(default="zero", description="what the patch is filled with: zero, black or white")
    perturbations_per_eval: int | None = Field(
        default=None, ge=1, le=1024, description="patch positions per forward pass (None: fit the memory budget)"
    )


class Occlusion(ImageExplainer[OcclusionParams]):
    name = "occlusion"
    Params = OcclusionParams
    gradients = False
    needs_eager = False

    def _explain(self, inputs: Any, targets: list[int], params: OcclusionParams) -> Explanation:
        _, c, h, w = inputs.shape  # (batch, C, H, W)
        window = params.window or max(2, min(h, w) // 8)
        stride = params.stride or max(1, window // 2)
        if window > min(h, w):
            raise ExplainParameterError(f"occlusion: window {window} is larger than the image ({h}x{w})")
        if stride > window:
            raise ExplainParameterError(f"occlusion: stride {stride} > window {window} would leave pixels unscored")
        positions = ((h - window) // stride + 1) * ((w - window) // stride + 1)
        if positions > MAX_POSITIONS:
            raise ExplainParameterError(
                f"occlusion: window {window} / stride {stride} needs {positions} forward passes per item "
                f"(limit {MAX_POSITIONS}); use a larger stride"
            )
        per_eval = (
            params.perturbations_per_eval
            or self.fit(inputs, positions * len(inputs), with_grad=False) // len(inputs)
            or 1
        )
        attributions = CaptumOcclusion(self.model).attribute(
            inputs,
            sliding_window_shapes=(c, window, window),
            strides=(c, stride, stride),
            baselines=self.baseline(params.baselines, inputs),
            target=targets,
            perturbations_per_eval=per_eval,
        )  # (batch, C, H, W)
        used = params.model_dump() | {"window": window, "stride": stride, "perturbations_per_eval": per_eval}
        return Explanation(attributions=attributions.detach(), method=self.name, params=used, targets=targets)
