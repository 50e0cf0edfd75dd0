"""Max-sensitivity (Yeh et al., 2019; ``captum.metrics.sensitivity_max``), images only, opt-in.

``sensitivity_max = max_j ||E(x + d_j) - E(x)|| / ||E(x)||`` over ``n`` perturbations ``d_j``
drawn uniformly from the L-infinity ball of radius ``r`` (model-input units), where ``E``
is the explanation method with the request's parameters. Lower is better (a stable
explanation). Cost: the method runs ``n + 1`` more times (Captum re-explains ``x``), i.e.
``(n + 1) x`` the method's own forward and backward passes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from captum.metrics import sensitivity_max as captum_sensitivity_max

ExplainFn = Callable[[torch.Tensor, list[int]], torch.Tensor]
"""(inputs (n, C, H, W), one target per row) -> attributions (n, ...)."""


def sensitivity_max_image(
    explain_fn: ExplainFn,
    inputs: torch.Tensor,
    targets: list[int],
    *,
    n_perturb_samples: int = 4,
    perturb_radius: float = 0.02,
    batch_size: int = 64,
    seed: int = 0,
) -> torch.Tensor:
    """(batch,) max-sensitivity of ``explain_fn`` around each item."""

    def explanation(
        x: torch.Tensor | tuple[torch.Tensor, ...], target: list[int] | torch.Tensor
    ) -> tuple[torch.Tensor]:
        image = x[0] if isinstance(x, tuple) else x  # Captum passes its inputs as a tuple
        rows = target.tolist() if isinstance(target, torch.Tensor) else list(target)
        return (explain_fn(image.detach(), [int(t) for t in rows]),)  # a tuple, as Captum iterates it

    torch.manual_seed(seed)  # Captum draws the perturbations from the global generator
    scores = captum_sensitivity_max(
        explanation,
        inputs.detach(),
        perturb_radius=perturb_radius,
        n_perturb_samples=n_perturb_samples,
        max_examples_per_batch=min(len(inputs) * n_perturb_samples, max(len(inputs), batch_size)),
        target=list(targets),
    )  # (batch,)
    return scores.detach()
