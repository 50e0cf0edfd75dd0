"""Infidelity (Yeh et al., 2019; ``captum.metrics.infidelity``), images only.

The mean squared gap between ``attribution . noise`` and the change of the target logit
under small Gaussian noise (std ``INFIDELITY_STD``), with the attribution rescaled
optimally (``normalize=True``, so the scale of the attribution does not matter). Lower is
better; 0 means the attribution predicts the model's response to noise exactly.
Cost: ``n_perturb_samples`` forward passes per item (batched) and one for the inputs.
"""

from __future__ import annotations

import torch
from captum.metrics import infidelity as captum_infidelity

INFIDELITY_STD = 0.1


def infidelity_image(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    attributions: torch.Tensor,
    targets: list[int],
    *,
    n_perturb_samples: int = 8,
    batch_size: int = 64,
    seed: int = 0,
) -> torch.Tensor:
    """Captum's infidelity with Gaussian noise (std ``INFIDELITY_STD``), normalised: (batch,)."""
    g = torch.Generator().manual_seed(seed)

    def perturb(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn(x.shape, generator=g) * INFIDELITY_STD  # (n, C, H, W)
        return noise, x - noise

    full = attributions.detach().expand_as(inputs)  # Grad-CAM's single channel applies to every channel
    with torch.no_grad():
        scores = captum_infidelity(
            model,
            perturb,
            inputs,
            full,
            target=targets,
            n_perturb_samples=n_perturb_samples,
            max_examples_per_batch=max(1, batch_size // max(1, n_perturb_samples)),
            normalize=True,
        )  # (batch,)
    return scores.detach()
