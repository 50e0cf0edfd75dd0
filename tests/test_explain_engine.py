"""BundleExplainer on the tiny real bundles: every method, PNG sizes, scores, twin check."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from explain.engine import BundleExplainer
from explain.errors import ExplainParameterError, UnsupportedMethodError
from lumenserve.bundle import Bundle

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def image_explainer(image_bundle: Bundle) -> BundleExplainer:
    return BundleExplainer(image_bundle)


@pytest.fixture(scope="module")
def text_explainer(text_bundle: Bundle) -> BundleExplainer:
    return BundleExplainer(text_bundle)


def onnx_runtime(bundle: Bundle):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    session = ort.InferenceSession(str(bundle.path("onnx")), providers=["CPUExecutionProvider"])
    return lambda inputs: session.run(["logits"], inputs)[0]


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


def test_twin_check_passes_against_onnx_and_refuses_a_different_model(image_bundle: Bundle) -> None:
    explainer = BundleExplainer(image_bundle)
    check = explainer.twin_check(onnx_runtime(image_bundle))
    assert check.ok and check.max_abs_diff < 1e-4 and explainer.refusal is None
    runtime = onnx_runtime(image_bundle)
    bad = explainer.twin_check(lambda inputs: runtime(inputs) + 0.01)
    assert not bad.ok and bad.max_abs_diff == pytest.approx(0.01, rel=1e-3)
    with pytest.raises(UnsupportedMethodError, match="differs from the served runtime"):
        explainer.explain(explainer.probe_inputs())

    def broken(inputs: dict[str, np.ndarray]) -> np.ndarray:
        raise RuntimeError("session gone")

    assert not explainer.twin_check(broken).ok
    assert "session gone" in (explainer.refusal or "")
    assert explainer.twin_check(runtime).ok and explainer.refusal is None  # a later pass re-enables


@pytest.mark.parametrize(
    "method", ["saliency", "integrated_gradients", "gradient_shap", "occlusion", "grad_cam", "smoothgrad"]
)
def test_every_image_method_renders_at_input_size_with_scores(image_explainer: BundleExplainer, method: str) -> None:
    x = image_explainer.probe_inputs()  # (2, 3, 32, 32)
    result = image_explainer.explain(
        x, method=method, targets=[2, 0], params={"n_steps": 8} if "integ" in method else {}
    )
    assert result.method == method and len(result.items) == 2
    assert [item.target for item in result.items] == [2, 0]
    for item in result.items:
        assert png_size(item.pngs["overlay_png"]) == (32, 32)
        assert item.deletion_auc is not None and 0.0 <= item.deletion_auc <= 1.0
        assert item.infidelity is not None and item.infidelity >= 0
        assert item.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
        assert item.predicted == int(np.argmax(item.logits))
    assert (result.items[0].convergence_delta is not None) == (method == "integrated_gradients")
    assert result.params["deletion_steps"] == 10 and result.params["colormap"] == "inferno"


def test_deletion_steps_zero_skips_the_deletion_curve(image_explainer: BundleExplainer) -> None:
    x = image_explainer.probe_inputs()
    result = image_explainer.explain(x, method="saliency", params={"deletion_steps": 0, "infidelity": False})
    assert [item.deletion_auc for item in result.items] == [None, None]
    assert all(item.infidelity is None and "overlay_png" in item.pngs for item in result.items)
    assert result.params["deletion_steps"] == 0


def test_overlay_is_drawn_on_the_original_image_at_its_size(image_explainer: BundleExplainer) -> None:
    x = image_explainer.probe_inputs()
    originals = [np.zeros((48, 40, 3), np.uint8), np.zeros((20, 64, 3), np.uint8)]
    result = image_explainer.explain(x, method="grad_cam", images=originals, params={"colormap": "viridis"})
    assert [png_size(i.pngs["overlay_png"]) for i in result.items] == [(40, 48), (64, 20)]
    assert result.params["layer"] == "features.12"  # the manifest's gradcam_layer


def test_memory_budget_bounds_the_internal_batch(image_bundle: Bundle) -> None:
    small = BundleExplainer(image_bundle, memory_budget_bytes=1)
    x = small.probe_inputs()
    used = small.explain(x, method="integrated_gradients", params={"n_steps": 16}).params
    assert used["internal_batch_size"] == 2  # the smallest Captum allows: one row per item
    roomy = BundleExplainer(image_bundle).explain(x, method="integrated_gradients", params={"n_steps": 16}).params
    assert roomy["internal_batch_size"] == 32


def test_image_request_errors(image_explainer: BundleExplainer) -> None:
    x = image_explainer.probe_inputs()
    with pytest.raises(ExplainParameterError, match=r"FP32 \[B, 3, 32, 32\]"):
        image_explainer.explain({"input": np.zeros((1, 3, 16, 16), np.float32)})
    with pytest.raises(ExplainParameterError, match="missing input 'input'"):
        image_explainer.explain({"pixels": x["input"]})
    with pytest.raises(ExplainParameterError, match="alpha"):
        image_explainer.explain(x, params={"alpha": 3})
    with pytest.raises(ExplainParameterError, match="deletion_steps"):
        image_explainer.explain(x, params={"deletion_steps": 1})
    with pytest.raises(UnsupportedMethodError, match="attention"):
        image_explainer.explain(x, method="attention")
    with pytest.raises(ExplainParameterError, match="base_method"):
        image_explainer.explain(x, method="noise_tunnel", params={"base_method": "occlusion"})


def test_text_integrated_gradients_completeness_and_token_views(text_explainer: BundleExplainer) -> None:
    x = text_explainer.encode_texts(["a truly wonderful film", "dull <b>and</b> long"])
    result = text_explainer.explain(x, targets=[1, 0], params={"n_steps": 64})
    assert result.method == "integrated_gradients" and result.params["algorithm"] == "layer_integrated_gradients"
    model = text_explainer.model
    ids, mask = torch.from_numpy(x["input_ids"]), torch.from_numpy(x["attention_mask"])
    special = model.special_mask(ids)  # type: ignore[operator]
    baseline = torch.where(special, ids, torch.full_like(ids, model.pad_id))  # type: ignore[arg-type]
    with torch.no_grad():
        gap = model(ids, mask)[[0, 1], [1, 0]] - model(baseline, mask)[[0, 1], [1, 0]]  # (batch,)
    for i, item in enumerate(result.items):
        n = int(mask[i].sum())
        assert item.tokens is not None and len(item.tokens) == n == item.attributions.shape[0]
        assert item.tokens[0] == "[CLS]" and item.tokens[-1] == "[SEP]"
        assert item.attributions[0] == 0 and item.attributions[-1] == 0  # specials are kept in the baseline
        assert item.convergence_delta is not None
        assert float(item.attributions.sum()) - float(gap[i]) == pytest.approx(item.convergence_delta, abs=1e-4)
        assert png_size(item.pngs["token_png"])[0] == 640
        assert item.token_html and item.token_html.count('ls-token"') == n
        assert item.infidelity is None and "infidelity" not in result.params
    assert "&lt;" in (result.items[1].token_html or "")


def test_text_attention_views(text_explainer: BundleExplainer) -> None:
    x = text_explainer.encode_texts(["short one", "a somewhat longer sentence here"])
    result = text_explainer.explain(x, method="attention")
    raw = text_explainer.model.attentions(torch.from_numpy(x["input_ids"]), torch.from_numpy(x["attention_mask"]))  # type: ignore[operator]
    assert raw.shape[1:3] == (2, 2)  # (batch, layers, heads, seq, seq)
    short = result.items[0]
    assert short.tokens is not None and set(short.pngs) == {"token_png", "attention_grid_png", "rollout_png"}
    n = len(short.tokens)
    assert png_size(short.pngs["attention_grid_png"]) == (28 + 2 * (max(48, 6 * n) + 4), 16 + 2 * (max(48, 6 * n) + 4))
    assert png_size(short.pngs["rollout_png"])[0] > 100
    assert float(short.attributions.sum()) == pytest.approx(1.0, abs=1e-4)  # the CLS row of the rollout


def test_text_request_errors(text_explainer: BundleExplainer) -> None:
    x = text_explainer.encode_texts(["hello"])
    with pytest.raises(UnsupportedMethodError, match="grad_cam"):
        text_explainer.explain(x, method="grad_cam")
    with pytest.raises(ExplainParameterError, match="input_ids must lie"):
        text_explainer.explain({"input_ids": x["input_ids"] + 10**7, "attention_mask": x["attention_mask"]})
    with pytest.raises(ExplainParameterError, match="n_steps"):
        text_explainer.explain(x, params={"n_steps": "many"})
    with pytest.raises(ExplainParameterError, match="targets has 2 entries"):
        text_explainer.explain(x, targets=[0, 1])
