"""The attribution methods on tiny hand-checkable models (no bundles needed)."""

from __future__ import annotations

import pytest
import torch

from explain.errors import ExplainParameterError, UnsupportedMethodError
from explain.methods import REGISTRY, ModelContext, build_explainer, supported_methods
from explain.methods.attention import attention_rollout
from explain.methods.base import IMAGE, TEXT
from explain.methods.grad_cam import GradCam
from explain.methods.integrated_gradients import IntegratedGradients
from explain.methods.noise_tunnel import NoiseTunnel
from explain.methods.saliency import Saliency

C, H, W, K = 3, 4, 4, 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def linear() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(C * H * W, K)).eval()


def weights(model: torch.nn.Sequential) -> torch.Tensor:
    layer = model[1]
    assert isinstance(layer, torch.nn.Linear)
    return layer.weight.detach().view(K, C, H, W)  # (classes, C, H, W)


def test_saliency_of_a_linear_model_is_abs_w_per_item_target(linear: torch.nn.Sequential) -> None:
    x = torch.randn(3, C, H, W)
    expl = Saliency(linear).explain(x, [0, 2, 1])
    w = weights(linear)
    assert expl.targets == [0, 2, 1]
    for i, t in enumerate([0, 2, 1]):
        assert torch.allclose(expl.attributions[i], w[t].abs(), atol=1e-6)
    signed = Saliency(linear).explain(x, [1, 1, 1], abs=False)
    assert torch.allclose(signed.attributions[0], w[1], atol=1e-6)


def test_default_target_is_the_predicted_class(linear: torch.nn.Sequential) -> None:
    x = torch.randn(4, C, H, W)
    expl = Saliency(linear).explain(x)
    assert expl.targets == linear(x).argmax(dim=1).tolist()


def test_integrated_gradients_completeness_per_item() -> None:
    torch.manual_seed(1)
    mlp = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(C * H * W, 16), torch.nn.Tanh(), torch.nn.Linear(16, K)
    ).eval()
    x = torch.randn(3, C, H, W)
    targets = [2, 0, 1]
    expl = IntegratedGradients(mlp).explain(x, targets, n_steps=64)
    with torch.no_grad():
        gap = mlp(x)[range(3), targets] - mlp(torch.zeros_like(x))[range(3), targets]  # (batch,)
    total = expl.attributions.sum(dim=(1, 2, 3))  # (batch,)
    assert expl.convergence_delta is not None
    assert torch.allclose(total - gap, expl.convergence_delta, atol=1e-5)
    assert expl.convergence_delta.abs().max() < 1e-3
    assert expl.params["n_steps"] == 64 and expl.params["internal_batch_size"] >= 3


def test_integrated_gradients_of_linear_model_is_w_times_x(linear: torch.nn.Sequential) -> None:
    x = torch.randn(2, C, H, W)
    expl = IntegratedGradients(linear).explain(x, [1, 2], n_steps=8)
    w = weights(linear)
    assert torch.allclose(expl.attributions[0], w[1] * x[0], atol=1e-5)
    assert torch.allclose(expl.attributions[1], w[2] * x[1], atol=1e-5)


class TinyCnn(torch.nn.Module):
    """Class 1 = mean brightness of 3x3 blobs above 0.5 (class 0 its negation)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.fill_(1 / 9)
            torch.nn.init.constant_(self.conv.bias, -0.5)  # type: ignore[arg-type]
        self.head = torch.nn.Linear(1, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[-1.0], [1.0]]))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.conv(x))  # (batch, 1, H, W)
        return self.head(a.mean(dim=(2, 3)))  # (batch, 2)


def test_grad_cam_peaks_on_a_planted_bright_patch() -> None:
    x = torch.zeros(2, 1, 16, 16)
    x[0, :, 3:7, 9:13] = 1.0  # item 0: patch top right
    x[1, :, 10:14, 2:6] = 1.0  # item 1: patch bottom left
    expl = GradCam(TinyCnn()).explain(x, [1, 1])
    assert expl.params["layer"] == "conv"  # the last Conv2d by default
    assert expl.attributions.shape == (2, 1, 16, 16)
    for i, (rows, cols) in enumerate([(range(3, 7), range(9, 13)), (range(10, 14), range(2, 6))]):
        peak = int(expl.attributions[i, 0].argmax())
        assert peak // 16 in rows and peak % 16 in cols
        assert expl.attributions[i, 0, 0, 0] == 0  # far from the patch: no evidence


def test_grad_cam_layer_parameter_and_unknown_layer() -> None:
    cam = GradCam(TinyCnn())
    x = torch.rand(1, 1, 8, 8)
    assert cam.explain(x, [1], layer="conv").params["layer"] == "conv"
    with pytest.raises(ExplainParameterError, match="no layer named 'nope'"):
        cam.explain(x, [1], layer="nope")


def test_noise_tunnel_composes_with_saliency_and_ig(linear: torch.nn.Sequential) -> None:
    x = torch.randn(2, C, H, W)
    smooth = NoiseTunnel(Saliency(linear)).explain(x, [0, 1], nt_samples=4, stdevs=0.5)
    # Saliency of a linear model ignores the noise: SmoothGrad returns |w| again.
    assert torch.allclose(smooth.attributions[1], weights(linear)[1].abs(), atol=1e-5)
    assert smooth.params["base_method"] == "saliency" and smooth.params["nt_samples"] == 4
    ig = NoiseTunnel(IntegratedGradients(linear)).explain(x, [0, 1], nt_samples=3, n_steps=4)
    assert ig.attributions.shape == x.shape and ig.params["n_steps"] == 4


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("integrated_gradients", {"n_steps": 0}, "n_steps"),
        ("integrated_gradients", {"n_steps": 100_000}, "n_steps"),
        ("integrated_gradients", {"internal_batch_size": -1}, "internal_batch_size"),
        ("integrated_gradients", {"baselines": "purple"}, "baselines"),
        ("integrated_gradients", {"n_step": 5}, "unknown parameter 'n_step'"),
        ("gradient_shap", {"baselines": "zero,zero"}, "baselines"),
        ("occlusion", {"window": 9}, "larger than the image"),
        ("occlusion", {"window": 2, "stride": 3}, "stride 3 > window 2"),
        ("smoothgrad", {"nt_samples": 0}, "nt_samples"),
        ("smoothgrad", {"stdevs": -1}, "stdevs"),
        ("saliency", {"abs": "sometimes"}, "abs"),
    ],
)
def test_bad_parameters_are_refused_with_a_clear_message(
    linear: torch.nn.Sequential, method: str, params: dict[str, object], message: str
) -> None:
    explainer = build_explainer(method, ModelContext(linear, IMAGE))
    with pytest.raises(ExplainParameterError, match=message):
        explainer.explain(torch.randn(1, C, H, W), None, **params)


def test_bad_targets_are_refused(linear: torch.nn.Sequential) -> None:
    x = torch.randn(2, C, H, W)
    with pytest.raises(ExplainParameterError, match="targets has 1 entries for 2 items"):
        Saliency(linear).explain(x, [0])
    with pytest.raises(ExplainParameterError, match="class index"):
        Saliency(linear).explain(x, [0, K])


def test_occlusion_cost_is_capped() -> None:
    big = torch.rand(1, 1, 200, 200)
    with pytest.raises(ExplainParameterError, match="forward passes"):
        build_explainer("occlusion", ModelContext(TinyCnn(), IMAGE)).explain(big, [0], window=2, stride=1)


def test_registry_says_which_task_supports_which_method(linear: torch.nn.Sequential) -> None:
    assert "grad_cam" in supported_methods(IMAGE) and "grad_cam" not in supported_methods(TEXT)
    assert {"attention", "integrated_gradients"} <= set(supported_methods(TEXT))
    with pytest.raises(UnsupportedMethodError, match="does not apply to a text-classification"):
        build_explainer("grad_cam", ModelContext(linear, TEXT))
    with pytest.raises(UnsupportedMethodError, match="unknown explain method"):
        build_explainer("no_such_method", ModelContext(linear, IMAGE))
    assert all(by_task for by_task in REGISTRY.values())


def test_attention_rollout_rows_sum_to_one_and_identity_attention_is_identity() -> None:
    raw = torch.rand(2, 3, 4, 5, 5)  # (batch, layers, heads, seq, seq)
    attention = raw / raw.sum(dim=-1, keepdim=True)
    rollout = attention_rollout(attention)
    assert rollout.shape == (2, 5, 5)
    assert torch.allclose(rollout.sum(dim=-1), torch.ones(2, 5), atol=1e-5)
    eye = torch.eye(5).expand(1, 2, 3, 5, 5)
    assert torch.allclose(attention_rollout(eye), torch.eye(5)[None], atol=1e-6)
