"""Deletion AUC, infidelity and the renderers, checked on hand-made inputs."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from explain import faithfulness, render
from explain.explanation import TextInputs
from explain.methods.integrated_gradients import IntegratedGradients

C, H, W, K = 3, 8, 8, 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def linear() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(C * H * W, K)).eval()


def test_random_attributions_per_pixel_per_token_and_on_a_coarse_grid() -> None:
    x = torch.zeros(2, C, H, W)
    pixel = faithfulness.random_attributions(x, seed=1)
    assert pixel.shape == (2, 1, H, W) and len(pixel.unique()) == 2 * H * W  # one value per pixel
    assert torch.equal(pixel, faithfulness.random_attributions(x, seed=1))  # seeded
    coarse = faithfulness.random_attributions(x, seed=1, cells=2)  # (2, 1, H, W) from a 2 x 2 grid
    grid = torch.rand(2, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    assert coarse.shape == (2, 1, H, W)
    assert torch.equal(coarse[:, :, [0, 0, -1, -1], [0, -1, 0, -1]], grid.reshape(2, 1, 4))  # corners: the cells
    text = TextInputs(torch.ones(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.long))
    assert faithfulness.random_attributions(text, seed=1).shape == (2, 5)
    with pytest.raises(ValueError, match="images only"):
        faithfulness.random_attributions(text, cells=2)


def test_deletion_auc_is_lower_for_the_true_attribution_than_for_random(linear: torch.nn.Sequential) -> None:
    torch.manual_seed(3)
    x = torch.randn(6, C, H, W)
    targets = linear(x).argmax(dim=1).tolist()
    truth = IntegratedGradients(linear).explain(x, targets).attributions  # = w[t] * x for a linear model
    true_curve = faithfulness.deletion_curve_image(linear, x, truth, targets, steps=16)
    random_auc = faithfulness.random_deletion_auc_image(linear, x, targets, steps=16)
    anti_auc = faithfulness.deletion_curve_image(linear, x, -truth, targets, steps=16).auc
    assert true_curve.probabilities.shape == (6, 17)
    assert bool((true_curve.auc < random_auc).all()), (true_curve.auc, random_auc)
    assert bool((random_auc < anti_auc).all())  # removing the counter-evidence first raises the probability
    # the curve starts at the model's own probability and ends at the all-removed input's
    with torch.no_grad():
        p0 = linear(x).softmax(-1)[range(6), targets]
        p1 = linear(torch.zeros_like(x)).softmax(-1)[range(6), targets]
    assert torch.allclose(true_curve.probabilities[:, 0], p0, atol=1e-6)
    assert torch.allclose(true_curve.probabilities[:, -1], p1, atol=1e-6)
    assert bool(((true_curve.auc >= 0) & (true_curve.auc <= 1)).all())
    # the caller's prediction pass stands in for the first point: same curve, one pass fewer
    with torch.no_grad():
        reused = faithfulness.deletion_curve_image(linear, x, truth, targets, steps=16, logits=linear(x))
    assert torch.allclose(reused.probabilities, true_curve.probabilities, atol=1e-6)


def test_infidelity_prefers_the_true_attribution(linear: torch.nn.Sequential) -> None:
    x = torch.randn(2, C, H, W)
    targets = [0, 1]
    layer = linear[1]
    assert isinstance(layer, torch.nn.Linear)
    w = layer.weight.detach().view(K, C, H, W)
    truth = torch.stack([w[0], w[1]])  # the exact gradient: infidelity 0 for a linear model
    exact = faithfulness.infidelity_image(linear, x, truth, targets, n_perturb_samples=8)
    noise = faithfulness.infidelity_image(linear, x, torch.randn_like(x), targets, n_perturb_samples=8)
    assert float(exact.max()) < 1e-6 < float(noise.min())


def test_overlay_png_has_the_original_image_size_and_marks_the_hot_spot() -> None:
    attributions = np.zeros((3, 8, 8), dtype=np.float32)
    attributions[:, 0:2, 6:8] = 1.0  # top-right corner
    photo = np.full((64, 48, 3), 128, dtype=np.uint8)  # (H, W, 3) of a bigger original
    png = render.overlay_png(attributions, photo)
    decoded = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert decoded.shape == (64, 48, 3)
    assert not np.array_equal(decoded[2, 45], photo[2, 45])  # coloured where attributed
    assert np.array_equal(decoded[60, 2], photo[60, 2])  # untouched far away
    with pytest.raises(ValueError, match="colormap"):
        render.RenderParams(colormap="no-such-map")


def test_denormalize_inverts_the_normalisation() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (4, 5, 3)).astype(np.uint8)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    normalised = (pixels.transpose(2, 0, 1) / 255.0 - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    assert np.abs(render.denormalize(normalised.astype(np.float32), mean, std).astype(int) - pixels).max() <= 1


def test_token_views_escape_html_and_decode() -> None:
    tokens = ["[CLS]", "<script>", "fine", "[SEP]"]
    scores = np.array([0.0, 1.0, -0.5, 0.0])
    snippet = render.token_html(tokens, scores)
    assert "<script>" not in snippet and "&lt;script&gt;" in snippet
    assert snippet.count('class="ls-token"') == 4 and 'title="-0.5"' in snippet
    strip = Image.open(io.BytesIO(render.token_png(tokens * 30, np.tile(scores, 30))))
    assert strip.width == 640 and strip.height > 40  # wrapped onto several lines


def test_attention_pngs_decode() -> None:
    attention = np.random.default_rng(0).random((2, 3, 5, 5))
    grid = Image.open(io.BytesIO(render.attention_grid_png(attention, cell=40)))
    assert grid.size == (28 + 3 * 44, 16 + 2 * 44)
    rollout = Image.open(io.BytesIO(render.rollout_png(np.eye(5), ["a", "b", "c", "d", "e"])))
    assert rollout.width > 100 and rollout.height > 100
