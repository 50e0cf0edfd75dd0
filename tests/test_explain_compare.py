"""Several methods in one request: the same answers as one by one, with fewer model passes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from explain.engine import BundleExplainer, ExplainResult
from explain.errors import ExplainParameterError
from lumenserve.bundle import Bundle

pytestmark = pytest.mark.usefixtures("one_torch_thread")

METHODS = ["saliency", "grad_cam", "integrated_gradients"]
PARAMS = {"integrated_gradients.n_steps": 8, "relu": False, "insertion_steps": 4, "colormap": "viridis"}


@pytest.fixture(scope="module")
def image_explainer(image_bundle: Bundle) -> BundleExplainer:
    return BundleExplainer(image_bundle)


@contextmanager
def counting(model: torch.nn.Module) -> Iterator[list[int]]:
    """Count the model's forward calls (one per pass, whatever its batch)."""
    calls = [0]

    def count(_module: torch.nn.Module, _inputs: object) -> None:
        calls[0] += 1

    handle = model.register_forward_pre_hook(count)
    try:
        yield calls
    finally:
        handle.remove()


def same(a: ExplainResult, b: ExplainResult) -> None:
    assert a.method == b.method and a.params == b.params
    for x, y in zip(a.items, b.items, strict=True):
        assert x.target == y.target and x.predicted == y.predicted
        assert np.allclose(x.attributions, y.attributions, atol=1e-6)
        assert x.scores.keys() == y.scores.keys() and x.scores == pytest.approx(y.scores, abs=1e-6)
        assert x.pngs == y.pngs


def test_compare_equals_the_methods_one_by_one_with_fewer_passes(image_explainer: BundleExplainer) -> None:
    x = image_explainer.probe_inputs()  # (2, 3, 32, 32)
    decoded = []

    def originals() -> list[np.ndarray]:
        decoded.append(1)
        return [np.zeros((40, 40, 3), np.uint8)] * 2

    warm = {"methods": ",".join(METHODS), "integrated_gradients.n_steps": 8, "render_png": False}
    image_explainer.explain_methods(x, params=warm)  # the explainers measure their memory use once, on first use
    with counting(image_explainer.model) as single_calls:
        singles = []
        for method in METHODS:
            own = {
                k.split(".")[-1]: v for k, v in PARAMS.items() if not k.startswith("integrated") or "integ" in method
            }
            if method != "grad_cam":
                own.pop("relu")
            singles.append(image_explainer.explain(x, method=method, targets=[1, 0], params=own, images=originals))
    assert len(decoded) == 3
    with counting(image_explainer.model) as compared_calls:
        compared = image_explainer.explain_methods(
            x, targets=[1, 0], params={"methods": ",".join(METHODS), **PARAMS}, images=originals
        )
    assert [r.method for r in compared] == METHODS and len(decoded) == 4  # the originals decoded once
    for a, b in zip(compared, singles, strict=True):
        same(a, b)
    assert compared[1].params["relu"] is False and compared[2].params["n_steps"] == 8
    assert compared[0].items[0].insertion_auc is not None
    # one prediction pass and one all-removed image (deletion and insertion curves) for all methods
    assert compared_calls[0] == single_calls[0] - 2 * (len(METHODS) - 1), (compared_calls, single_calls)


def test_methods_parameter_errors(image_explainer: BundleExplainer) -> None:
    x = image_explainer.probe_inputs()
    with pytest.raises(ExplainParameterError, match="none of saliency, grad_cam takes it"):
        image_explainer.explain_methods(x, params={"methods": "saliency,grad_cam", "n_steps": 8})
    with pytest.raises(ExplainParameterError, match="'occlusion' is not one of the methods"):
        image_explainer.explain_methods(x, params={"methods": "saliency,grad_cam", "occlusion.window": 4})
    with pytest.raises(ExplainParameterError, match="each method once"):
        image_explainer.explain_methods(x, method="saliency, saliency")
    with pytest.raises(ExplainParameterError, match="either method or methods"):
        image_explainer.explain_methods(x, method="saliency", params={"methods": "grad_cam"})
    with pytest.raises(ExplainParameterError, match="use explain_methods"):
        image_explainer.explain(x, method="saliency,grad_cam")
    one = image_explainer.explain_methods(x, method=["grad_cam"], params={"deletion_steps": 0, "infidelity": False})
    assert len(one) == 1 and one[0].items[0].scores == {}
