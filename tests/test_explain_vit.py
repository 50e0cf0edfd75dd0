"""Vision-transformer explanations on a tiny Hugging Face ViT: attention maps, rollouts, token-grid Grad-CAM."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from explain.engine import BundleExplainer
from explain.errors import ExplainParameterError
from explain.image_model import HfImageClassifier, as_image_classifier, find_vision_transformer
from explain.methods import ModelContext, build_explainer
from explain.methods.base import IMAGE
from lumenserve.bundle import Bundle

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE, PATCH, LABELS = 32, 8, 3  # a 4 x 4 patch grid, like the tiny image bundle's 32 px input


def tiny_vit(layers: int = 2, heads: int = 2, seed: int = 0) -> torch.nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=SIZE,
        patch_size=PATCH,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=64,
        num_labels=LABELS,
    )
    return ViTForImageClassification._from_config(config, attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def vit() -> torch.nn.Module:
    return tiny_vit()


@pytest.fixture(scope="module")
def vit_explainer(image_bundle: Bundle, vit: torch.nn.Module) -> BundleExplainer:
    return BundleExplainer(image_bundle, eager_model=vit)


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def context(model: torch.nn.Module) -> ModelContext:
    wrapped = as_image_classifier(model)
    return ModelContext(model=wrapped, task=IMAGE, vision_transformer=find_vision_transformer(wrapped))


def test_the_engine_recognises_a_vit_and_leaves_cnns_alone(
    vit_explainer: BundleExplainer, image_bundle: Bundle
) -> None:
    assert isinstance(vit_explainer.model, HfImageClassifier)
    info = vit_explainer.vision_transformer
    assert info is not None and info.grid == (4, 4) and info.patches == 16
    assert {"attention", "gradient_rollout", "grad_cam", "integrated_gradients"} <= set(vit_explainer.methods)
    assert set(vit_explainer.method_schemas()) == set(vit_explainer.methods)
    cnn = BundleExplainer(image_bundle)
    assert cnn.vision_transformer is None and not {"attention", "gradient_rollout"} & set(cnn.methods)
    # patch tokens are row-major after the prefix token: token 1 + r * w + c is grid cell (r, c)
    tokens = torch.arange(17.0)[None]  # (1, 17): [CLS] then 16 patches
    assert info.patch_tokens(tokens)[0, 1, 2].item() == 1 + 1 * 4 + 2


def test_attention_maps_and_rollout_as_overlays(vit_explainer: BundleExplainer, vit: torch.nn.Module) -> None:
    x = vit_explainer.probe_inputs()  # (2, 3, 32, 32)
    result = vit_explainer.explain(x, method="attention", params={"insertion_steps": 4})
    assert result.params["patch_grid"] == [4, 4]
    for item in result.items:
        assert set(item.pngs) == {"overlay_png", "attention_grid_png"}
        assert png_size(item.pngs["overlay_png"]) == (32, 32)
        cell = 48  # 4 x 4 grids are drawn at the smallest cell size
        assert png_size(item.pngs["attention_grid_png"]) == (28 + 2 * (cell + 4), 16 + 2 * (cell + 4))
        assert item.attributions.shape == (1, 32, 32)
        assert item.deletion_auc is not None and item.insertion_auc is not None and item.infidelity is not None
    explanation = build_explainer("attention", context(vit)).explain(torch.from_numpy(x["input"]))
    with torch.no_grad():
        raw = torch.stack(vit(pixel_values=torch.from_numpy(x["input"]), output_attentions=True).attentions, 1)
    per_head = explanation.extras["attention_grid"]  # (batch, layers, heads, 4, 4)
    assert per_head.shape == (2, 2, 2, 4, 4)
    assert torch.allclose(per_head[1, 1, 0], raw[1, 1, 0, 0, 1:].reshape(4, 4))  # [CLS] -> each patch
    # the rollout's [CLS] row sums to 1 over all tokens, so the patches hold at most 1
    patch_mass = F.avg_pool2d(explanation.attributions, PATCH).sum(dim=(1, 2, 3))  # (batch,)
    assert bool(((patch_mass > 0) & (patch_mass < 1)).all())


def test_gradient_rollout_one_layer_matches_the_rule_and_follows_the_target() -> None:
    model = tiny_vit(layers=1, seed=1)
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    method = build_explainer("gradient_rollout", context(model))
    maps = [method.explain(x, [t]).attributions for t in range(LABELS)]
    assert maps[0].shape == (1, 1, SIZE, SIZE) and not torch.allclose(maps[0], maps[1])
    out = model(pixel_values=x, output_attentions=True)
    attention = out.attentions[0]  # (1, heads, 17, 17)
    (grad,) = torch.autograd.grad(out.logits[0, 2], attention)
    fused = (grad * attention).clamp(min=0).mean(dim=1)[0]  # (17, 17)
    relevance = torch.eye(17) + fused  # one layer: R = I + A_bar
    expected = F.interpolate(relevance[0, 1:].reshape(1, 1, 4, 4), size=(SIZE, SIZE), mode="bilinear")
    assert torch.allclose(maps[2], expected.detach(), atol=1e-6)


def test_grad_cam_through_the_token_grid(vit: torch.nn.Module) -> None:
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    method = build_explainer("grad_cam", context(vit))
    explanation = method.explain(x, [0, 2], relu=False)
    assert explanation.params["layer"] == "vit.layers.1.layernorm_before"
    assert explanation.attributions.shape == (2, 1, SIZE, SIZE)
    seen = []
    handle = vit.vit.layers[1].layernorm_before.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        logits = vit(pixel_values=x).logits
        (grad,) = torch.autograd.grad(logits[0, 0] + logits[1, 2], seen[0])  # (2, 17, C)
    finally:
        handle.remove()
    acts = seen[0].detach()[:, 1:].reshape(2, 4, 4, -1)  # drop [CLS]: (2, h, w, C)
    weights = grad[:, 1:].reshape(2, 4, 4, -1).mean(dim=(1, 2))  # (2, C)
    cam = torch.einsum("bhwc,bc->bhw", acts, weights)
    expected = F.interpolate(cam[:, None], size=(SIZE, SIZE), mode="bilinear")
    assert torch.allclose(explanation.attributions, expected, atol=1e-5)
    relu = method.explain(x, [0, 2]).attributions
    assert float(relu.min()) >= 0.0
    with pytest.raises(ExplainParameterError, match="no layer named"):
        method.explain(x, [0, 2], layer="vit.nothing")


def test_vit_compare_shares_the_prediction(vit_explainer: BundleExplainer) -> None:
    x = vit_explainer.probe_inputs()
    results = vit_explainer.explain_methods(
        x, method="attention,gradient_rollout,grad_cam", params={"deletion_steps": 4, "infidelity": False}
    )
    assert [r.method for r in results] == ["attention", "gradient_rollout", "grad_cam"]
    assert all(set(r.items[0].scores) == {"deletion_auc"} for r in results)
    assert results[0].items[0].target == results[2].items[0].target
