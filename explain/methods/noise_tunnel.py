"""NoiseTunnel (SmoothGrad, Smilkov et al., 2017): average a gradient method over noisy copies.

Composes with any gradient method that exposes its Captum attribution (Saliency,
IntegratedGradients, GradientShap): ``NoiseTunnel(Saliency(model))`` is SmoothGrad.
The call takes the tunnel's own parameters plus the base method's.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from captum.attr import NoiseTunnel as CaptumNoiseTunnel
from pydantic import Field

from explain.explanation import Explanation
from explain.methods.base import ImageExplainer
from explain.params import MethodParams, validate_params


class CaptumBacked(Protocol):
    name: str
    Params: type[MethodParams]

    def captum(self) -> Any: ...

    def captum_kwargs(self, inputs: Any, params: Any) -> dict[str, Any]: ...


class NoiseTunnelParams(MethodParams):
    nt_type: Literal["smoothgrad", "smoothgrad_sq", "vargrad"] = Field(
        default="smoothgrad", description="mean, mean of squares, or variance of the noisy attributions"
    )
    nt_samples: int = Field(default=10, ge=1, le=128, description="noisy copies per item")
    stdevs: float = Field(default=0.15, gt=0.0, le=5.0, description="std of the Gaussian noise, in model-input units")
    nt_samples_batch_size: int | None = Field(
        default=None, ge=1, le=128, description="noisy copies per pass (None: fit the memory budget)"
    )


class NoiseTunnel(ImageExplainer[NoiseTunnelParams]):
    name = "noise_tunnel"
    Params = NoiseTunnelParams

    def __init__(self, base: ImageExplainer[Any]) -> None:
        if not hasattr(base, "captum"):
            raise TypeError(f"{base.name} cannot be wrapped in a noise tunnel (not a gradient method)")
        super().__init__(base.model, mean=base.mean, std=base.std, memory_budget_bytes=base.memory_budget_bytes)
        self.base = base

    def param_names(self) -> set[str]:
        return set(NoiseTunnelParams.model_fields) | self.base.param_names()

    def validate(self, params: dict[str, Any]) -> Any:
        own_names = set(NoiseTunnelParams.model_fields)
        own = validate_params(NoiseTunnelParams, self.name, {k: v for k, v in params.items() if k in own_names})
        base = validate_params(
            self.base.Params, self.base.name, {k: v for k, v in params.items() if k not in own_names}
        )
        return own, base

    def _explain(self, inputs: Any, targets: list[int], params: Any) -> Explanation:
        own, base_params = params
        base: CaptumBacked = self.base  # type: ignore[assignment]
        base_kwargs = base.captum_kwargs(inputs, base_params)
        batch = own.nt_samples_batch_size or max(1, self.fit(inputs, own.nt_samples * len(inputs)) // len(inputs))
        if "internal_batch_size" in base_kwargs:  # IG inside: Captum needs internal_batch_size >= noisy items per pass
            batch = min(batch, max(1, base_kwargs["internal_batch_size"] // len(inputs)))
            base_kwargs["internal_batch_size"] = max(base_kwargs["internal_batch_size"], batch * len(inputs))
        attributions = CaptumNoiseTunnel(base.captum()).attribute(
            inputs,
            nt_type=own.nt_type,
            nt_samples=own.nt_samples,
            nt_samples_batch_size=batch,
            stdevs=own.stdevs,
            target=targets,
            **base_kwargs,
        )  # (batch, C, H, W)
        used = (
            {"base_method": base.name}
            | own.model_dump()
            | {"nt_samples_batch_size": batch}
            | base_params.model_dump()
            | {k: v for k, v in base_kwargs.items() if k == "internal_batch_size"}
        )
        return Explanation(attributions=attributions.detach(), method=self.name, params=used, targets=targets)
