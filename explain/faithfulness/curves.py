"""Deletion and insertion curves (Petsiuk et al., 2018, "RISE") and their areas.

Rank the input's elements by attribution (highest signed value first: the strongest
evidence *for* the target). **Deletion** removes them in ``steps`` equal slices from the
input; **insertion** puts them back in the same order into an input with everything
removed. After each slice the model's softmax probability of the target is read; the score
is the area under that curve over the fraction in [0, 1] (trapezoid rule), in [0, 1].
``deletion_auc``: lower is more faithful; ``insertion_auc``: higher is more faithful.

- Images: a pixel's score is its attribution summed over channels; a removed pixel takes
  the value 0 in every channel, which after normalisation is the dataset's mean colour.
- Text: only real, non-special tokens are ranked; a removed token becomes ``[PAD]`` and is
  masked out of attention (``[CLS]``/``[SEP]`` stay).

Cost (forward passes, all batched): images ``items * (steps - 1) + 1`` per curve (the
original's point is the prediction pass, the all-removed image is the same for every
item); text ``items * (steps + 1)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from explain.explanation import TextInputs
from explain.text_model import TextClassifier


@dataclass(frozen=True)
class DeletionCurve:
    """A deletion or insertion curve (the name is kept from when deletion was the only one)."""

    fractions: torch.Tensor  # (steps + 1,) removed (deletion) or inserted (insertion) fraction 0 .. 1
    probabilities: torch.Tensor  # (batch, steps + 1) target probability after each slice
    auc: torch.Tensor  # (batch,) trapezoid area


def target_probability(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # logits (n, classes), targets (n,) -> (n,)
    return logits.softmax(dim=-1).gather(1, targets[:, None])[:, 0]


def _curve(probabilities: torch.Tensor, steps: int) -> DeletionCurve:
    fractions = torch.linspace(0.0, 1.0, steps + 1)  # (steps + 1,)
    auc = torch.trapezoid(probabilities, fractions, dim=1)  # (batch,)
    return DeletionCurve(fractions=fractions, probabilities=probabilities, auc=auc)


TIE_SEED = 0


def ranks(scores: torch.Tensor, eligible: torch.Tensor) -> torch.Tensor:
    """(batch, n) scores -> (batch, n) rank, 0 = most attributed; ineligible elements rank last.

    Ties are broken in a fixed random order (seeded: the same answer every time), not by
    position: a ReLU'd Grad-CAM map is 0 over whole regions, and position order would remove
    such a region row by row, a contiguous block, where any order among equals is as right."""
    batch, n = scores.shape
    ranked = torch.where(eligible, scores.double(), torch.tensor(float("-inf"), dtype=torch.float64))
    shuffle = torch.randperm(n, generator=torch.Generator().manual_seed(TIE_SEED))  # (n,)
    order = shuffle[torch.argsort(ranked[:, shuffle], dim=1, descending=True, stable=True)]  # (batch, n)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n).expand(batch, n))  # (batch, n)
    return rank


def _rank(scores: torch.Tensor, eligible: torch.Tensor, steps: int) -> torch.Tensor:
    """Keep-masks for each deletion step: (batch, steps + 1, n) bool, True = still present."""
    rank = ranks(scores, eligible)  # (batch, n)
    counts = eligible.sum(dim=1)  # (batch,)
    fractions = torch.linspace(0.0, 1.0, steps + 1)  # (steps + 1,)
    removed = torch.round(fractions[None, :] * counts[:, None]).long()  # (batch, steps + 1)
    return rank[:, None, :] >= removed[:, :, None]  # (batch, steps + 1, n)


def all_removed_logits(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The model's logits (1, classes) on the image with every pixel removed (all zeros), the same
    for every item and every method: the end of each deletion curve, the start of each insertion curve."""
    with torch.no_grad():
        return model(torch.zeros(1, *inputs.shape[1:], dtype=inputs.dtype))  # type: ignore[no-any-return]


def run_chunked(fn: Callable[[slice], torch.Tensor], total: int, chunk: int) -> torch.Tensor:
    return torch.cat([fn(slice(i, min(i + chunk, total))) for i in range(0, total, chunk)])


def _image_curve(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    attributions: torch.Tensor,
    targets: list[int],
    *,
    steps: int,
    insertion: bool,
    batch_size: int,
    logits: torch.Tensor | None,
    empty_logits: torch.Tensor | None = None,
) -> DeletionCurve:
    b, _, h, w = inputs.shape  # (batch, C, H, W)
    scores = attributions.detach().sum(dim=1).reshape(b, h * w)  # (batch, H*W)
    keep = _rank(scores, torch.ones_like(scores, dtype=torch.bool), steps)  # (batch, steps+1, H*W)
    present = ~keep if insertion else keep  # insertion: the top-ranked pixels are the ones present
    inner = present[:, 1:steps].reshape(b * (steps - 1), 1, h, w)  # (batch*(steps-1), 1, H, W)
    target_t = torch.tensor(targets)  # (batch,)
    flat_targets = target_t.repeat_interleave(steps - 1)  # (batch*(steps-1),)
    item = torch.arange(b).repeat_interleave(steps - 1)  # (batch*(steps-1),)

    def run(part: slice) -> torch.Tensor:
        masked = inputs[item[part]] * inner[part]  # (chunk, C, H, W)
        return target_probability(model(masked), flat_targets[part])

    with torch.no_grad():
        original = target_probability(model(inputs) if logits is None else logits, target_t)  # (batch,)
        empty = (all_removed_logits(model, inputs) if empty_logits is None else empty_logits.reshape(1, -1)).expand(
            b, -1
        )  # (batch, classes)
        nothing = target_probability(empty, target_t)  # (batch,)
        middle = run_chunked(run, b * (steps - 1), batch_size).reshape(b, steps - 1)  # (batch, steps-1)
    first, last = (nothing, original) if insertion else (original, nothing)
    probs = torch.cat([first[:, None], middle, last[:, None]], dim=1)  # (batch, steps+1)
    return _curve(probs, steps)


def deletion_curve_image(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    attributions: torch.Tensor,
    targets: list[int],
    *,
    steps: int = 10,
    batch_size: int = 64,
    logits: torch.Tensor | None = None,
    empty_logits: torch.Tensor | None = None,
) -> DeletionCurve:
    """inputs (batch, C, H, W); attributions (batch, C or 1, H, W); ``logits`` (batch, classes):
    the model's answer on the untouched ``inputs`` if the caller has it (the curve's first point);
    ``empty_logits`` (1, classes): :func:`all_removed_logits` if the caller has it (the last point)."""
    return _image_curve(
        model,
        inputs,
        attributions,
        targets,
        steps=steps,
        insertion=False,
        batch_size=batch_size,
        logits=logits,
        empty_logits=empty_logits,
    )


def insertion_curve_image(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    attributions: torch.Tensor,
    targets: list[int],
    *,
    steps: int = 10,
    batch_size: int = 64,
    logits: torch.Tensor | None = None,
    empty_logits: torch.Tensor | None = None,
) -> DeletionCurve:
    """Like :func:`deletion_curve_image`, inserting the most attributed pixels first into the
    all-zero image; ``logits`` stand in for the curve's last point."""
    return _image_curve(
        model,
        inputs,
        attributions,
        targets,
        steps=steps,
        insertion=True,
        batch_size=batch_size,
        logits=logits,
        empty_logits=empty_logits,
    )


def _text_curve(
    model: TextClassifier,
    inputs: TextInputs,
    token_scores: torch.Tensor,
    targets: list[int],
    *,
    steps: int,
    insertion: bool,
    batch_size: int,
) -> DeletionCurve:
    ids, mask = inputs.input_ids, inputs.attention_mask  # (batch, seq) each
    b, s = ids.shape
    eligible = (mask > 0) & ~model.special_mask(ids)  # (batch, seq)
    keep = _rank(token_scores.detach(), eligible, steps).reshape(b * (steps + 1), s)  # (batch*(steps+1), seq)
    present = ~keep if insertion else keep
    present = present | ~eligible.repeat_interleave(steps + 1, dim=0)  # specials and padding are never removed
    return _curve(masked_text_probabilities(model, inputs, present, targets, batch_size).reshape(b, steps + 1), steps)


def masked_text_probabilities(
    model: TextClassifier, inputs: TextInputs, present: torch.Tensor, targets: list[int], batch_size: int = 64
) -> torch.Tensor:
    """present (batch * k, seq) bool, k variants per item in item order -> (batch * k,) target probability;
    an absent token becomes ``[PAD]`` and is masked out of attention."""
    ids, mask = inputs.input_ids, inputs.attention_mask  # (batch, seq) each
    per_item = present.shape[0] // ids.shape[0]
    flat_targets = torch.tensor(targets).repeat_interleave(per_item)
    item = torch.arange(ids.shape[0]).repeat_interleave(per_item)

    def run(part: slice) -> torch.Tensor:
        k = present[part]  # (chunk, seq)
        part_ids = torch.where(k, ids[item[part]], torch.full_like(k, model.pad_id, dtype=ids.dtype))
        part_mask = mask[item[part]] * k  # (chunk, seq)
        return target_probability(model(part_ids, part_mask), flat_targets[part])

    with torch.no_grad():
        return run_chunked(run, present.shape[0], batch_size)


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
    return _text_curve(model, inputs, token_scores, targets, steps=steps, insertion=False, batch_size=batch_size)


def insertion_curve_text(
    model: TextClassifier,
    inputs: TextInputs,
    token_scores: torch.Tensor,
    targets: list[int],
    *,
    steps: int = 10,
    batch_size: int = 64,
) -> DeletionCurve:
    """token_scores (batch, seq); starts from the text with every real token removed."""
    return _text_curve(model, inputs, token_scores, targets, steps=steps, insertion=True, batch_size=batch_size)


def random_attributions(inputs: torch.Tensor | TextInputs, seed: int = 0, *, cells: int | None = None) -> torch.Tensor:
    """A random attribution, the reference every method's scores are compared with: uniform noise
    in [0, 1), one value per pixel (images: (batch, 1, H, W)) or per token (text: (batch, seq)),
    so every ordering of the pixels or tokens is equally likely.

    ``cells`` (images only): noise on a ``cells x cells`` grid, upsampled bilinearly to the image
    like Grad-CAM's map: a random map as coarse as a method's (Grad-CAM at a layer of that
    resolution), since how blocky a ranking is moves the scores by itself."""
    g = torch.Generator().manual_seed(seed)
    if isinstance(inputs, TextInputs):
        if cells is not None:
            raise ValueError("cells: a coarse random map applies to images only")
        return torch.rand(inputs.input_ids.shape, generator=g)  # (batch, seq)
    if cells is None:
        return torch.rand(inputs.shape[0], 1, *inputs.shape[2:], generator=g)  # (batch, 1, H, W)
    coarse = torch.rand(inputs.shape[0], 1, cells, cells, generator=g)  # (batch, 1, cells, cells)
    return torch.nn.functional.interpolate(coarse, size=tuple(inputs.shape[2:]), mode="bilinear")  # (batch, 1, H, W)


def random_deletion_auc_image(
    model: torch.nn.Module, inputs: torch.Tensor, targets: list[int], *, steps: int = 10, seed: int = 0
) -> torch.Tensor:
    """The deletion AUC of a random pixel ordering (a reference to compare a method's AUC with): (batch,)."""
    return deletion_curve_image(model, inputs, random_attributions(inputs, seed), targets, steps=steps).auc
