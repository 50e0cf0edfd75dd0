"""Token occlusion: each real token's score is the drop of the target logit when that token
alone is replaced by ``[PAD]`` (or ``[MASK]`` / ``[UNK]``), with Captum's FeatureAblation.

A perturbation method: no gradients, so it works for any text classifier. Special tokens
(CLS, SEP, padding) are never replaced and score 0. Cost: one forward pass per token
position and item, ``perturbations_per_eval`` positions per pass.
"""

from __future__ import annotations

from typing import Literal

import torch
from captum.attr import FeatureAblation
from pydantic import Field

from explain.errors import ExplainParameterError
from explain.explanation import Explanation, TextInputs
from explain.methods.base import TextExplainer
from explain.params import MethodParams


class TokenOcclusionParams(MethodParams):
    baselines: Literal["pad", "mask", "unk"] = Field(default="pad", description="token that replaces each token")
    perturbations_per_eval: int | None = Field(
        default=None, ge=1, le=1024, description="token positions per forward pass (None: fit the memory budget)"
    )


class TokenOcclusion(TextExplainer[TokenOcclusionParams]):
    """Token occlusion: the target-logit drop when each token alone is replaced."""

    name = "occlusion"
    Params = TokenOcclusionParams
    gradients = False
    needs_eager = False

    def _explain(self, inputs: TextInputs, targets: list[int], params: TokenOcclusionParams) -> Explanation:
        token = {"pad": self.model.pad_id, "mask": self.model.mask_id, "unk": self.model.unk_id}[params.baselines]
        if token is None:
            raise ExplainParameterError(f"{self.name}: this tokenizer has no {params.baselines} token")
        ids = inputs.input_ids  # (batch, seq)
        special = self.model.special_mask(ids) | (inputs.attention_mask == 0)  # (batch, seq) never replaced
        baseline = torch.where(special, ids, torch.full_like(ids, token))  # (batch, seq)
        seq = ids.shape[1]
        per_eval = params.perturbations_per_eval or max(
            1, self.fit(inputs, seq * len(inputs), with_grad=False) // len(inputs)
        )
        scores = FeatureAblation(self.model).attribute(
            ids,
            baselines=baseline,
            additional_forward_args=(inputs.attention_mask,),
            target=targets,
            feature_mask=torch.arange(seq).expand_as(ids),  # one feature per position
            perturbations_per_eval=per_eval,
        )  # (batch, seq)
        return Explanation(
            attributions=(scores * ~special).detach().float(),
            method=self.name,
            params=params.model_dump() | {"perturbations_per_eval": per_eval},
            targets=targets,
        )
