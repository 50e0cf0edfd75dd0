"""Shared by the perturbation methods over image patches: the feature mask and its parameters.

The image is cut into square patches (the "superpixels" the methods switch on and off); every
pixel of a patch, over every channel, is one feature. These methods need only the forward
function, so they also explain models without eager weights (on the served runtime).
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from explain.errors import ExplainParameterError
from explain.methods.integrated_gradients import ImageBaseline
from explain.params import MethodParams

MAX_FEATURES = 1024
"""Most patches one image may be cut into."""


class PatchParams(MethodParams):
    patch: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="side of the square patches (features) in pixels (None: an eighth of the shorter side, at least 2)",
    )
    baselines: ImageBaseline = Field(
        default="zero", description="what a switched-off patch holds: zero, black or white"
    )
    perturbations_per_eval: int | None = Field(
        default=None, ge=1, le=1024, description="perturbed copies per forward pass (None: fit the memory budget)"
    )


def patch_side(params: PatchParams, h: int, w: int) -> int:
    return params.patch or max(2, min(h, w) // 8)


def patch_mask(h: int, w: int, side: int, name: str) -> tuple[torch.Tensor, int]:
    """(1, 1, H, W) long: each pixel's patch index (row-major), and the number of patches."""
    rows, cols = math.ceil(h / side), math.ceil(w / side)
    if rows * cols > MAX_FEATURES:
        raise ExplainParameterError(
            f"{name}: patch {side} cuts a {h}x{w} image into {rows * cols} features (limit {MAX_FEATURES}); "
            "use a larger patch"
        )
    r = torch.arange(h) // side  # (H,)
    c = torch.arange(w) // side  # (W,)
    mask = r[:, None] * cols + c[None, :]  # (H, W)
    return mask[None, None], rows * cols  # (1, 1, H, W)
