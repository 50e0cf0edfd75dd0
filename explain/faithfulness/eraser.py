"""AOPC comprehensiveness and sufficiency (DeYoung et al., 2020, "ERASER"), text only.

For each bin ``q`` in ``AOPC_BINS`` (1, 5, 10, 20 and 50 % of the real, non-special
tokens, at least one token), take the ``k_q`` tokens ranked highest by attribution:

- ``comprehensiveness = mean_q [ p_t(x) - p_t(x without the top k_q) ]``: higher is more
  faithful (removing what the explanation calls important hurts the prediction);
- ``sufficiency = mean_q [ p_t(x) - p_t(only the top k_q) ]``: lower is more faithful (the
  important tokens alone keep the prediction).

``p_t`` is the softmax probability of the explained class; a removed token becomes
``[PAD]`` and is masked out of attention, special tokens always stay. Cost: ``2 *
len(AOPC_BINS)`` forward passes per item, batched; ``p_t(x)`` is the prediction pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from explain.explanation import TextInputs
from explain.faithfulness.curves import masked_text_probabilities, ranks, target_probability
from explain.text_model import TextClassifier

AOPC_BINS = (0.01, 0.05, 0.10, 0.20, 0.50)


@dataclass(frozen=True)
class AopcScores:
    comprehensiveness: torch.Tensor  # (batch,)
    sufficiency: torch.Tensor  # (batch,)


def aopc_text(
    model: TextClassifier,
    inputs: TextInputs,
    token_scores: torch.Tensor,
    targets: list[int],
    *,
    logits: torch.Tensor,
    batch_size: int = 64,
) -> AopcScores:
    """token_scores (batch, seq); logits (batch, classes) of the untouched inputs."""
    ids, mask = inputs.input_ids, inputs.attention_mask  # (batch, seq) each
    b, s = ids.shape
    eligible = (mask > 0) & ~model.special_mask(ids)  # (batch, seq)
    rank = ranks(token_scores.detach(), eligible)  # (batch, seq)
    counts = eligible.sum(dim=1, keepdim=True)  # (batch, 1)
    bins = torch.tensor(AOPC_BINS, dtype=torch.float64)  # (bins,)
    top_k = torch.clamp(torch.round(bins[None, :] * counts), min=1)  # (batch, bins)
    top_k = torch.minimum(top_k, counts).long()
    in_top = rank[:, None, :] < top_k[:, :, None]  # (batch, bins, seq)
    fixed = ~eligible[:, None, :]  # specials and padding: always present
    without_top = (~in_top | fixed).reshape(b * len(AOPC_BINS), s)
    only_top = (in_top | fixed).reshape(b * len(AOPC_BINS), s)
    present = torch.cat([without_top.reshape(b, -1, s), only_top.reshape(b, -1, s)], dim=1)  # (batch, 2*bins, seq)
    probs = masked_text_probabilities(model, inputs, present.reshape(-1, s), targets, batch_size)
    probs = probs.reshape(b, 2, len(AOPC_BINS))  # (batch, comprehensiveness|sufficiency, bins)
    full = target_probability(logits, torch.tensor(targets))[:, None]  # (batch, 1)
    return AopcScores(
        comprehensiveness=(full - probs[:, 0]).mean(dim=1),
        sufficiency=(full - probs[:, 1]).mean(dim=1),
    )
