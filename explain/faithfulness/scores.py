"""The faithfulness scores a request selects, computed for a batch: name -> (batch,) tensor."""

from __future__ import annotations

import torch

from explain.errors import ExplainParameterError
from explain.explanation import TextInputs
from explain.faithfulness.curves import (
    all_removed_logits,
    deletion_curve_image,
    deletion_curve_text,
    insertion_curve_image,
    insertion_curve_text,
)
from explain.faithfulness.eraser import aopc_text
from explain.faithfulness.infidelity import infidelity_image
from explain.faithfulness.road import road_image
from explain.faithfulness.sensitivity import ExplainFn, sensitivity_max_image
from explain.params import HIGHER_IS_BETTER, SCORE_NAMES, ScoreParams
from explain.text_model import TextClassifier


def more_faithful(name: str, score: float, reference: float) -> bool:
    """Whether ``score`` is strictly better than ``reference`` on the score ``name`` (higher for
    ``HIGHER_IS_BETTER``, lower for the others); a tie is not better."""
    return score > reference if name in HIGHER_IS_BETTER else score < reference


def check_applies(p: ScoreParams, *, text: bool) -> None:
    """Refuse a score asked for explicitly that does not apply to this kind of input."""
    if text and p.road_steps:
        raise ExplainParameterError("road_steps: ROAD imputes pixels and applies to images only")
    if text and p.sensitivity_max:
        raise ExplainParameterError("sensitivity_max perturbs pixels and applies to images only")
    if not text and p.aopc:
        raise ExplainParameterError("aopc (comprehensiveness, sufficiency) removes tokens and applies to text only")


def score_batch(
    model: torch.nn.Module,
    batch: torch.Tensor | TextInputs,
    attributions: torch.Tensor,
    targets: list[int],
    logits: torch.Tensor,
    p: ScoreParams,
    *,
    explain_fn: ExplainFn | None = None,
    shared: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The selected scores, each (batch,). ``logits`` (batch, classes) are the prediction pass on
    ``batch``; ``explain_fn`` re-runs the method (needed only for ``sensitivity_max``);
    ``shared`` keeps what every method scored on the same batch reuses (the all-removed image's
    logits): pass the same dict for each method of one request."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(batch, TextInputs):
        check_applies(p, text=True)
        assert isinstance(model, TextClassifier)
        if p.deletion_steps:
            out["deletion_auc"] = deletion_curve_text(model, batch, attributions, targets, steps=p.deletion_steps).auc
        if p.insertion_steps:
            curve = insertion_curve_text(model, batch, attributions, targets, steps=p.insertion_steps)
            out["insertion_auc"] = curve.auc
        if p.aopc:
            aopc = aopc_text(model, batch, attributions, targets, logits=logits)
            out["comprehensiveness"], out["sufficiency"] = aopc.comprehensiveness, aopc.sufficiency
        return out
    check_applies(p, text=False)
    shared = {} if shared is None else shared
    if (p.deletion_steps or p.insertion_steps) and "all_removed_logits" not in shared:
        shared["all_removed_logits"] = all_removed_logits(model, batch)  # (1, classes)
    empty = shared.get("all_removed_logits")
    if p.deletion_steps:
        curve = deletion_curve_image(
            model, batch, attributions, targets, steps=p.deletion_steps, logits=logits, empty_logits=empty
        )
        out["deletion_auc"] = curve.auc
    if p.insertion_steps:
        curve = insertion_curve_image(
            model, batch, attributions, targets, steps=p.insertion_steps, logits=logits, empty_logits=empty
        )
        out["insertion_auc"] = curve.auc
    if p.road_steps:
        road = road_image(model, batch, attributions, targets, steps=p.road_steps)
        out["road_morf"], out["road_lerf"] = road.road_morf, road.road_lerf
    if p.infidelity:
        out["infidelity"] = infidelity_image(
            model, batch, attributions, targets, n_perturb_samples=p.infidelity_samples
        )
    if p.sensitivity_max:
        if explain_fn is None:
            raise ExplainParameterError("sensitivity_max needs the method to re-run; none was given")
        out["sensitivity_max"] = sensitivity_max_image(
            explain_fn,
            batch,
            targets,
            n_perturb_samples=p.sensitivity_samples,
            perturb_radius=p.sensitivity_radius,
        )
    return {name: out[name] for name in SCORE_NAMES if name in out}
