"""ROAD: RemOve And Debias (Rong et al., 2022), most- and least-relevant-first, images only.

For each fraction ``p_k = k / (steps + 1)``, ``k = 1 .. steps``, the ``p_k`` share of pixels
ranked highest (MoRF) or lowest (LeRF) by attribution (summed over channels) is removed and
filled by **noisy linear imputation**: every removed pixel equals the weighted mean of its
8 neighbours (weight 1/6 for the 4 direct ones, 1/12 for the diagonals; known pixels stay
fixed), solved as one sparse linear system per image and fraction (all channels at once),
plus Gaussian noise of std ``ROAD_NOISE`` (model-input units). Unlike filling with a
constant, the imputed image carries no trace of *where* pixels were removed, so the model
cannot read the mask's shape instead of the content.

``road_morf`` = mean over ``k`` of the target's probability with the top ``p_k`` removed
(lower is more faithful); ``road_lerf`` = the same with the bottom ``p_k`` removed (higher is
more faithful). Cost: ``2 * steps`` forward passes per item (batched) and as many sparse
solves on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse import csc_matrix, diags
from scipy.sparse.linalg import spsolve

from explain.faithfulness.curves import ranks, run_chunked, target_probability

ROAD_NOISE = 0.01
NEIGHBOURS = (
    ((0, 1), 1 / 6), ((0, -1), 1 / 6), ((1, 0), 1 / 6), ((-1, 0), 1 / 6),
    ((1, 1), 1 / 12), ((1, -1), 1 / 12), ((-1, 1), 1 / 12), ((-1, -1), 1 / 12),
)  # fmt: skip


@dataclass(frozen=True)
class RoadScores:
    fractions: torch.Tensor  # (steps,) removed fraction
    morf: torch.Tensor  # (batch, steps) target probability, most relevant removed first
    lerf: torch.Tensor  # (batch, steps) target probability, least relevant removed first

    @property
    def road_morf(self) -> torch.Tensor:
        return self.morf.mean(dim=1)  # (batch,)

    @property
    def road_lerf(self) -> torch.Tensor:
        return self.lerf.mean(dim=1)  # (batch,)


def linear_impute(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """image (C, H, W), removed (H, W) bool -> (C, H, W) with removed pixels interpolated from
    their neighbours (without noise). Needs at least one pixel kept."""
    c, h, w = image.shape
    ys, xs = np.nonzero(removed)  # (n,) each
    n = len(ys)
    if n == 0:
        return image.copy()
    index = np.full((h, w), -1, dtype=np.int64)
    index[ys, xs] = np.arange(n)
    diagonal = np.zeros(n)
    rhs = np.zeros((n, c))  # (n, C)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    for (dy, dx), weight in NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        me, ny, nx = np.nonzero(inside)[0], ny[inside], nx[inside]
        diagonal[me] += weight
        unknown = removed[ny, nx]
        rows.append(me[unknown])
        cols.append(index[ny[unknown], nx[unknown]])
        vals.append(np.full(int(unknown.sum()), -weight))
        known = ~unknown
        rhs[me[known]] += weight * image[:, ny[known], nx[known]].T  # each pixel once per direction
    off = csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    solution = spsolve((off + diags(diagonal)).tocsc(), rhs)  # (n, C) or (n,) when C == 1
    out = image.copy()
    out[:, ys, xs] = np.asarray(solution, dtype=image.dtype).reshape(n, c).T
    return out


def road_image(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    attributions: torch.Tensor,
    targets: list[int],
    *,
    steps: int = 5,
    batch_size: int = 64,
    seed: int = 0,
) -> RoadScores:
    """inputs (batch, C, H, W); attributions (batch, C or 1, H, W)."""
    b, c, h, w = inputs.shape
    scores = attributions.detach().sum(dim=1).reshape(b, h * w)  # (batch, H*W)
    rank = ranks(scores, torch.ones_like(scores, dtype=torch.bool)).reshape(b, h, w).numpy()  # 0 = top
    fractions = torch.arange(1, steps + 1, dtype=torch.float64) / (steps + 1)  # (steps,)
    counts = [round(float(f) * h * w) for f in fractions]
    rng = np.random.default_rng(seed)
    pixels = inputs.detach().numpy()
    imputed = np.empty((b, 2, steps, c, h, w), dtype=np.float32)  # (batch, order, steps, C, H, W)
    for i in range(b):
        for k, count in enumerate(counts):
            for order, removed in enumerate((rank[i] < count, rank[i] >= h * w - count)):  # MoRF, LeRF
                filled = linear_impute(pixels[i], removed)
                noise = rng.normal(0.0, ROAD_NOISE, size=filled.shape).astype(np.float32) * removed
                imputed[i, order, k] = filled + noise
    flat = torch.from_numpy(imputed.reshape(b * 2 * steps, c, h, w))
    flat_targets = torch.tensor(targets).repeat_interleave(2 * steps)

    def run(part: slice) -> torch.Tensor:
        return target_probability(model(flat[part]), flat_targets[part])

    with torch.no_grad():
        probs = run_chunked(run, len(flat), batch_size).reshape(b, 2, steps)  # (batch, order, steps)
    return RoadScores(fractions=fractions.float(), morf=probs[:, 0], lerf=probs[:, 1])
