"""Faithfulness scores: how much an explanation can be trusted, as numbers.

One file per measure; docs/explain.md defines each with its formula and cost.
:func:`score_batch` computes the ones a request selects (:class:`explain.params.ScoreParams`);
:func:`random_attributions` is the reference a method should beat, :func:`more_faithful` says
which of two values of a score is better.

| score | file | better | inputs |
|---|---|---|---|
| ``deletion_auc`` / ``insertion_auc`` | curves.py | lower / higher | images, text |
| ``road_morf`` / ``road_lerf`` | road.py | lower / higher | images |
| ``comprehensiveness`` / ``sufficiency`` | eraser.py | higher / lower | text |
| ``infidelity`` | infidelity.py | lower | images |
| ``sensitivity_max`` | sensitivity.py | lower | images |

**Convergence delta** (integrated-gradient methods) is reported by the method itself: the
gap between the attribution sum and ``f(x) - f(baseline)``; small means the integral was
computed accurately, not that the explanation is right.
"""

from explain.faithfulness.curves import (
    DeletionCurve,
    deletion_curve_image,
    deletion_curve_text,
    insertion_curve_image,
    insertion_curve_text,
    random_attributions,
    random_deletion_auc_image,
)
from explain.faithfulness.eraser import AOPC_BINS, AopcScores, aopc_text
from explain.faithfulness.infidelity import INFIDELITY_STD, infidelity_image
from explain.faithfulness.road import ROAD_NOISE, RoadScores, linear_impute, road_image
from explain.faithfulness.scores import check_applies, more_faithful, score_batch
from explain.faithfulness.sensitivity import sensitivity_max_image
from explain.params import HIGHER_IS_BETTER, SCORE_NAMES

__all__ = [
    "AOPC_BINS",
    "HIGHER_IS_BETTER",
    "INFIDELITY_STD",
    "ROAD_NOISE",
    "SCORE_NAMES",
    "AopcScores",
    "DeletionCurve",
    "RoadScores",
    "aopc_text",
    "check_applies",
    "deletion_curve_image",
    "deletion_curve_text",
    "infidelity_image",
    "insertion_curve_image",
    "insertion_curve_text",
    "linear_impute",
    "more_faithful",
    "random_attributions",
    "random_deletion_auc_image",
    "road_image",
    "score_batch",
    "sensitivity_max_image",
]
