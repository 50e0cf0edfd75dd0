"""Faithfulness scores: how much an explanation can be trusted, as numbers.

**Deletion AUC** (Petsiuk et al., 2018, "RISE"), for every method. Rank the input's
elements by attribution (highest signed value first: the strongest evidence *for* the
target), remove them in ``steps`` equal slices, and after each slice read the model's
softmax probability of the target. The score is the area under that curve over the
removed fraction in [0, 1] (trapezoid rule), so it lies in [0, 1].
**Lower is more faithful**: the elements the explanation calls important really carry
the prediction, so the probability falls fast. Compare it with the AUC of a random
ordering of the same input (about the curve's mean) to judge it.

- Images: a pixel's score is its attribution summed over channels; a removed pixel takes
  the value 0 in every channel, which after normalisation is the dataset's mean colour.
- Text: only real, non-special tokens are ranked; a removed token becomes ``[PAD]`` and is
  masked out of attention (``[CLS]``/``[SEP]`` stay).

**Infidelity** (Yeh et al., 2019; ``captum.metrics.infidelity``), images only: the mean
squared gap between ``attribution . noise`` and the change of the target logit under small
Gaussian noise (std ``INFIDELITY_STD``), with the attribution rescaled optimally
(``normalize=True``, so the scale of the attribution does not matter). Lower is better;
0 means the attribution predicts the model's response to noise exactly. Cost:
``n_perturb_samples`` forward passes per item.

**Convergence delta** (integrated-gradient methods) is reported by the method itself: the
gap between the attribution sum and ``f(x) - f(baseline)``; small means the integral was
computed accurately, not that the explanation is right.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from captum.metrics import infidelity as captum_infidelity

from explain.explanation import TextInputs
from explain.text_model import TextClassifier

INFIDELITY_STD = 0.1


@dataclass(frozen=True)
class DeletionCurve:
    fractions: torch.Tensor  # (steps + 1,) removed fraction 0 .. 1
    probabilities: torch.Tensor  # (batch, steps + 1) target probability after each slice
    auc: torch.Tensor  # (batch,) trapezoid area, lower = more faithful


def _target_probability(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # logits (n, classes), targets (n,) -> (n,)
    return logits.softmax(dim=-1).gather(1, targets[:, None])[:, 0]


def _curve(probabilities: torch.Tensor, steps: int) -> DeletionCurve:
    fractions = torch.linspace(0.0, 1.0, steps + 1)  # (steps + 1,)
    auc = torch.trapezoid(probabilities, fractions, dim=1)  # (batch,)
    return DeletionCurve(fractions=fractions, probabilities=probabilities, auc=auc)


def _rank(scores: torch.Tensor, eligible: torch.Tensor, steps: int) -> torch.Tensor:
    """Keep-masks for each deletion step: (batch, steps + 1, n) bool, True = still present.

    scores, eligible: (batch, n). Ties are broken by position so results are deterministic.
    """
    batch, n = scores.shape
    ranked = torch.where(eligible, scores.double(), torch.tensor(float("-inf"), dtype=torch.float64))
    order = torch.argsort(ranked, dim=1, descending=True, stable=True)  # (batch, n)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n).expand(batch, n))  # (batch, n): 0 = most attributed
    counts = eligible.sum(dim=1)  # (batch,)
    fractions = torch.linspace(0.0, 1.0, steps + 1)  # (steps + 1,)
    removed = torch.round(fractions[None, :] * counts[:, None]).long()  # (batch, steps + 1)
    return rank[:, None, :] >= removed[:, :, None]  # (batch, steps + 1, n)


def _run_chunked(fn: Callable[[slice], torch.Tensor], total: int, chunk: int) -> torch.Tensor:
    return torch.cat([fn(slice(i, min(i + chunk, total))) for i in range(0, total, chunk)])


def deletion_curve_image(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    attributions: torch.Tensor,
    targets: list[int],
    *,
    steps: int = 10,
    batch_size: int = 64,
    logits: torch.Tensor | None = None,
) -> DeletionCurve:
    """inputs (batch, C, H, W); attributions (batch, C or 1, H, W); ``logits`` (batch, classes):
    the model's answer on the untouched ``inputs`` if the caller has it (the curve's first point).

    The last point (every pixel removed) is the same all-zero image for every item: one pass."""
    b, c, h, w = inputs.shape  # (batch, C, H, W)
    scores = attributions.detach().sum(dim=1).reshape(b, h * w)  # (batch, H*W)
    keep = _rank(scores, torch.ones_like(scores, dtype=torch.bool), steps)  # (batch, steps+1, H*W)
    inner = keep[:, 1:steps].reshape(b * (steps - 1), 1, h, w)  # (batch*(steps-1), 1, H, W)
    target_t = torch.tensor(targets)  # (batch,)
    flat_targets = target_t.repeat_interleave(steps - 1)  # (batch*(steps-1),)
    item = torch.arange(b).repeat_interleave(steps - 1)  # (batch*(steps-1),)

    def run(part: slice) -> torch.Tensor:
        masked = inputs[item[part]] * inner[part]  # (chunk, C, H, W)
        return _target_probability(model(masked), flat_targets[part])

    with torch.no_grad():
        first = _target_probability(model(inputs) if logits is None else logits, target_t)  # (batch,)
        empty = model(torch.zeros(1, c, h, w, dtype=inputs.dtype)).expand(b, -1)  # (batch, classes)
        last = _target_probability(empty, target_t)  # (batch,)
        middle = _run_chunked(run, b * (steps - 1), batch_size).reshape(b, steps - 1)  # (batch, steps-1)
    probs = torch.cat([first[:, None], middle, last[:, None]], dim=1)  # (batch, steps+1)
    return _curve(probs, steps)


def deletion_curve_text(
    model: TextClassifier,
    inputs: TextInputs,
    token_scores: torch.Tensor,
    targets: list[int],
    *,
    steps: int = 10,
    batch_size: int = 64,
) -> DeletionCurve:
    """token_scores (batch, seq)."""
    ids, mask = inputs.input_ids, inputs.attention_mask  # (batch, seq) each
    b, s = ids.shape
    eligible = (mask > 0) & ~model.special_mask(ids)  # (batch, seq)
    keep = _rank(token_scores.detach(), eligible, steps).reshape(b * (steps + 1), s)  # (batch*(steps+1), seq)
    keep = keep | ~eligible.repeat_interleave(steps + 1, dim=0)  # specials and padding are never removed
    flat_targets = torch.tensor(targets).repeat_interleave(steps + 1)
    item = torch.arange(b).repeat_interleave(steps + 1)

    def run(part: slice) -> torch.Tensor:
        k = keep[part]  # (chunk, seq)
        part_ids = torch.where(k, ids[item[part]], torch.full_like(k, model.pad_id, dtype=ids.dtype))
        part_mask = mask[item[part]] * k  # (chunk, seq)
        return _target_probability(model(part_ids, part_mask), flat_targets[part])

    with torch.no_grad():
        probs = _run_chunked(run, b * (steps + 1), batch_size)
    return _curve(probs.reshape(b, steps + 1), steps)


def random_deletion_auc_image(
    model: torch.nn.Module, inputs: torch.Tensor, targets: list[int], *, steps: int = 10, seed: int = 0
) -> torch.Tensor:
    """The deletion AUC of a random pixel ordering (a reference to compare a method's AUC with): (batch,)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(inputs.shape[0], 1, *inputs.shape[2:], generator=g)  # (batch, 1, H, W)
    return deletion_curve_image(model, inputs, noise, targets, steps=steps).auc


def infidelity_image(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    attributions: torch.Tensor,
    targets: list[int],
    *,
    n_perturb_samples: int = 8,
    batch_size: int = 64,
    seed: int = 0,
) -> torch.Tensor:
    """Captum's infidelity with Gaussian noise (std ``INFIDELITY_STD``), normalised: (batch,)."""
    g = torch.Generator().manual_seed(seed)

    def perturb(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn(x.shape, generator=g) * INFIDELITY_STD  # (n, C, H, W)
        return noise, x - noise

    full = attributions.detach().expand_as(inputs)  # Grad-CAM's single channel applies to every channel
    with torch.no_grad():
        scores = captum_infidelity(
            model,
            perturb,
            inputs,
            full,
            target=targets,
            n_perturb_samples=n_perturb_samples,
            max_examples_per_batch=max(1, batch_size // max(1, n_perturb_samples)),
            normalize=True,
        )  # (batch,)
    return scores.detach()
