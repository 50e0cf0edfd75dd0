"""Lime (Ribeiro et al., 2016): a sparse linear model (Lasso) fitted to the target scores of
random patch coalitions, weighted by their closeness to the image; its weights are the
patches' attributions.

Cost: ``n_samples`` forward passes per item.
"""

from __future__ import annotations

from typing import Any

from captum.attr import Lime as CaptumLime

from explain.methods.surrogate import SurrogateExplainer, SurrogateParams


class LimeParams(SurrogateParams):
    pass


class Lime(SurrogateExplainer[LimeParams]):
    name = "lime"
    Params = LimeParams

    def _captum(self) -> Any:
        return CaptumLime(self.model)
