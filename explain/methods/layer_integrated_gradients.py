"""Token attributions: Integrated Gradients over the embedding block (LayerIntegratedGradients).

Token ids are discrete, so the path runs between the embeddings of the text and of a
baseline text in which every non-special token is replaced by ``[PAD]`` (or ``[MASK]`` /
``[UNK]``); special tokens (CLS, SEP, padding) stay, so their attribution is zero. A
token's score is the sum of its embedding attribution over the hidden dimension; the
scores sum to ``f(text)[t] - f(baseline)[t]`` up to ``convergence_delta``.
"""

from __future__ import annotations

from typing import Literal

import torch
from captum.attr import LayerIntegratedGradients as CaptumLIG
from pydantic import Field

from explain.errors import ExplainParameterError
from explain.explanation import Explanation, TextInputs
from explain.methods.base import TextExplainer
from explain.methods.integrated_gradients import Integration
from explain.params import MethodParams


class LayerIntegratedGradientsParams(MethodParams):
    n_steps: int = Field(default=32, ge=2, le=512, description="integration steps per item")
    integration: Integration = Field(default="gausslegendre", description="quadrature rule")
    internal_batch_size: int | None = Field(
        default=None, ge=1, le=4096, description="model evaluations per forward pass (None: fit the memory budget)"
    )
    baselines: Literal["pad", "mask", "unk"] = Field(
        default="pad", description="token that replaces every non-special token"
    )


class LayerIntegratedGradients(TextExplainer[LayerIntegratedGradientsParams]):
    name = "layer_integrated_gradients"
    Params = LayerIntegratedGradientsParams

    @classmethod
    def outputs(cls, text: bool) -> list[str]:
        return [*super().outputs(text), "convergence_delta"]

    def baseline_ids(self, inputs: TextInputs, kind: str) -> torch.Tensor:
        token = {"pad": self.model.pad_id, "mask": self.model.mask_id, "unk": self.model.unk_id}[kind]
        if token is None:
            raise ExplainParameterError(f"{self.name}: this tokenizer has no {kind} token")
        special = self.model.special_mask(inputs.input_ids)  # (batch, seq) bool
        return torch.where(special, inputs.input_ids, torch.full_like(inputs.input_ids, token))  # (batch, seq)

    def _explain(self, inputs: TextInputs, targets: list[int], params: LayerIntegratedGradientsParams) -> Explanation:
        internal = max(len(inputs), params.internal_batch_size or self.fit(inputs, params.n_steps * len(inputs)))
        lig = CaptumLIG(self.model, self.model.embeddings())
        attributions, delta = lig.attribute(
            inputs.input_ids,
            baselines=self.baseline_ids(inputs, params.baselines),
            additional_forward_args=(inputs.attention_mask,),
            target=targets,
            n_steps=params.n_steps,
            method=params.integration,
            internal_batch_size=internal,
            return_convergence_delta=True,
        )  # (batch, seq, hidden), (batch,)
        per_token = attributions.sum(dim=-1) * inputs.attention_mask  # (batch, seq)
        return Explanation(
            attributions=per_token.detach(),
            method=self.name,
            params=params.model_dump() | {"internal_batch_size": internal},
            targets=targets,
            convergence_delta=delta.detach(),
        )
