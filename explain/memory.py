"""Choose internal batch sizes so an explanation's peak memory stays under a budget.

Gradient methods evaluate the model on many copies of each input (IG: ``n_steps`` per
item). Captum's ``internal_batch_size=None`` runs them all at once (ResNet-18, 50 steps:
2.4 GB). We measure, once per model and input shape, the bytes of activations one item
produces in a forward pass (sum of every leaf module's output), double it for the
gradients kept for backward, and fit as many copies as the budget allows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

DEFAULT_BUDGET_BYTES = 1024 * 1024 * 1024
"""Default memory budget for one explanation's model evaluations (1 GiB; MobileNetV2 at 224 px
measures ~80 MB of activations per copy, so IG runs ~6 copies per pass)."""


def activation_bytes_per_item(model: torch.nn.Module, run_one: Callable[[], object]) -> int:
    """Bytes of leaf-module outputs for one forward of a single item (``run_one`` does the call)."""
    total = 0

    def hook(_module: torch.nn.Module, _inputs: object, output: object) -> None:
        nonlocal total
        outs = output if isinstance(output, tuple | list) else (output,)
        for out in outs:
            if isinstance(out, torch.Tensor):
                total += out.numel() * out.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            run_one()
    finally:
        for handle in handles:
            handle.remove()
    return max(total, 1)


def fit_batch(per_item_bytes: int, wanted: int, budget_bytes: int, *, with_grad: bool = True) -> int:
    """How many model evaluations to run together: ``1 <= n <= wanted`` within ``budget_bytes``."""
    cost = per_item_bytes * (2 if with_grad else 1)
    return max(1, min(wanted, budget_bytes // max(cost, 1)))
