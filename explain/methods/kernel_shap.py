"""KernelShap (Lundberg & Lee, 2017): Shapley values of the image patches estimated by a
weighted linear regression over random coalitions (the Shapley kernel as weights).

Cost: ``n_samples`` forward passes per item.
"""

from __future__ import annotations

from typing import Any

from captum.attr import KernelShap as CaptumKernelShap

from explain.methods.surrogate import SurrogateExplainer, SurrogateParams


class KernelShapParams(SurrogateParams):
    pass


class KernelShap(SurrogateExplainer[KernelShapParams]):
    name = "kernel_shap"
    Params = KernelShapParams

    def _captum(self) -> Any:
        return CaptumKernelShap(self.model)
