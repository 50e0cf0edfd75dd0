"""Integrated Gradients (Sundararajan et al., 2017) over pixels, with its convergence delta.

Completeness: per item, the attributions sum to ``f(x)[t] - f(baseline)[t]`` up to the
returned ``convergence_delta`` (the integration error; shrink it with more ``n_steps``).
The delta costs no forward pass of its own: the inputs' logits are the prediction pass's and
the baseline's are computed once per baseline kind and batch shape.
"""

from __future__ import annotations

import threading
from typing import Any, Literal

import torch
from captum.attr import IntegratedGradients as CaptumIG
from pydantic import Field

from explain.explanation import Explanation
from explain.methods.base import ImageExplainer
from explain.params import MethodParams

Integration = Literal["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle"]
ImageBaseline = Literal["zero", "black", "white"]
BASELINE_CACHE_ENTRIES = 8
"""Baseline batches (kind, shape) whose logits an explainer keeps."""


class IntegratedGradientsParams(MethodParams):
    n_steps: int = Field(default=32, ge=2, le=512, description="integration steps per item")
    integration: Integration = Field(default="gausslegendre", description="quadrature rule")
    internal_batch_size: int | None = Field(
        default=None, ge=1, le=4096, description="model evaluations per forward pass (None: fit the memory budget)"
    )
    baselines: ImageBaseline = Field(
        default="zero", description="reference image: zero (mean colour), black (pixel 0) or white (pixel 1)"
    )


class IntegratedGradients(ImageExplainer[IntegratedGradientsParams]):
    name = "integrated_gradients"
    Params = IntegratedGradientsParams

    def __init__(self, model: torch.nn.Module, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self._baseline_cache: dict[tuple[str, tuple[int, ...], torch.dtype], torch.Tensor] = {}
        self._baseline_lock = threading.Lock()

    @classmethod
    def outputs(cls, text: bool) -> list[str]:
        return [*super().outputs(text), "convergence_delta"]

    def captum(self) -> CaptumIG:
        return CaptumIG(self.model)

    def captum_kwargs(self, inputs: Any, params: IntegratedGradientsParams) -> dict[str, Any]:
        return {
            "baselines": self.baseline(params.baselines, inputs),
            "n_steps": params.n_steps,
            "method": params.integration,
            "internal_batch_size": max(
                len(inputs), params.internal_batch_size or self.fit(inputs, params.n_steps * len(inputs))
            ),
        }

    def _explain(self, inputs: Any, targets: list[int], params: IntegratedGradientsParams) -> Explanation:
        return self._explain_given(inputs, targets, params, self.logits(inputs))

    def _explain_given(
        self, inputs: Any, targets: list[int], params: IntegratedGradientsParams, logits: torch.Tensor
    ) -> Explanation:
        kwargs = self.captum_kwargs(inputs, params)
        attributions = self.captum().attribute(inputs, target=targets, **kwargs).detach()  # (batch, C, H, W)
        rows = torch.arange(len(targets))
        gap = logits[rows, targets] - self._baseline_logits(params.baselines, kwargs["baselines"])[rows, targets]
        used = params.model_dump() | {"internal_batch_size": kwargs["internal_batch_size"]}
        return Explanation(
            attributions=attributions,
            method=self.name,
            params=used,
            targets=targets,
            convergence_delta=attributions.reshape(len(targets), -1).sum(1) - gap,  # (batch,)
        )

    def _baseline_logits(self, name: str, baselines: torch.Tensor) -> torch.Tensor:
        """The model's logits (batch, classes) on a baseline batch: the same for every request of
        this shape, so computed once. Captum's own convergence delta runs the model on the inputs
        and the baselines again; the inputs' logits come from the prediction pass instead."""
        key = (name, tuple(baselines.shape), baselines.dtype)
        with self._baseline_lock:
            cached = self._baseline_cache.get(key)
        if cached is None:
            cached = self.logits(baselines)  # (batch, classes)
            with self._baseline_lock:
                if len(self._baseline_cache) >= BASELINE_CACHE_ENTRIES:
                    self._baseline_cache.pop(next(iter(self._baseline_cache)))
                self._baseline_cache[key] = cached
        return cached
