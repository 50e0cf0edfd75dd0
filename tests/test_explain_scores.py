"""The faithfulness scores beyond deletion AUC, on hand-checkable models where the right answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explain import faithfulness
from explain.errors import ExplainParameterError
from explain.explanation import TextInputs
from explain.methods.integrated_gradients import IntegratedGradients
from explain.methods.saliency import Saliency
from explain.params import ScoreParams, validate_params
from explain.text_model import TextClassifier
from tests.bag_of_words import bag_of_words

pytestmark = pytest.mark.usefixtures("one_torch_thread")

C, H, W, K = 3, 8, 8, 3


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + float(np.exp(-v)))


@pytest.fixture
def linear() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(C * H * W, K)).eval()


@pytest.fixture
def four_pixels() -> torch.nn.Sequential:
    """logits = [sum(x), 0] over a 1x1x4 image: the target-0 probability is sigmoid(sum of the pixels present)."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2, bias=False)).eval()
    with torch.no_grad():
        layer = model[1]
        assert isinstance(layer, torch.nn.Linear)
        layer.weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]))
    return model


def test_insertion_and_deletion_auc_exact_values(four_pixels: torch.nn.Sequential) -> None:
    x = torch.tensor([1.0, 2.0, -1.0, 0.5]).view(1, 1, 1, 4)
    truth = x.clone()  # w * x with w = 1: ranked pixels 1, 0, 3, 2
    ins = faithfulness.insertion_curve_image(four_pixels, x, truth, [0], steps=2)
    dele = faithfulness.deletion_curve_image(four_pixels, x, truth, [0], steps=2)
    # insertion: nothing (sum 0), the top two (2 + 1), everything (2.5)
    expected_ins = [0.5, sigmoid(3.0), sigmoid(2.5)]
    # deletion: everything, without the top two (-1 + 0.5), nothing
    expected_del = [sigmoid(2.5), sigmoid(-0.5), 0.5]
    assert ins.probabilities[0].tolist() == pytest.approx(expected_ins, abs=1e-6)
    assert dele.probabilities[0].tolist() == pytest.approx(expected_del, abs=1e-6)
    trapezoid = lambda p: 0.25 * p[0] + 0.5 * p[1] + 0.25 * p[2]  # noqa: E731
    assert float(ins.auc[0]) == pytest.approx(trapezoid(expected_ins), abs=1e-6)
    assert float(dele.auc[0]) == pytest.approx(trapezoid(expected_del), abs=1e-6)


def test_insertion_auc_prefers_the_true_attribution(linear: torch.nn.Sequential) -> None:
    torch.manual_seed(3)
    x = torch.randn(6, C, H, W)
    targets = linear(x).argmax(dim=1).tolist()
    truth = IntegratedGradients(linear).explain(x, targets, n_steps=8).attributions  # = w[t] * x
    rand = torch.rand(6, 1, H, W, generator=torch.Generator().manual_seed(1))
    true_auc = faithfulness.insertion_curve_image(linear, x, truth, targets, steps=16).auc
    random_auc = faithfulness.insertion_curve_image(linear, x, rand, targets, steps=16).auc
    anti_auc = faithfulness.insertion_curve_image(linear, x, -truth, targets, steps=16).auc
    assert bool((true_auc > random_auc).all()) and bool((random_auc > anti_auc).all()), (true_auc, random_auc)
    with torch.no_grad():  # the curve ends at the model's own probability
        reused = faithfulness.insertion_curve_image(linear, x, truth, targets, steps=16, logits=linear(x))
    assert torch.allclose(reused.auc, true_auc, atol=1e-6)


def test_linear_imputation_is_exact_on_a_plane_and_keeps_known_pixels() -> None:
    ys, xs = np.mgrid[0:9, 0:9]
    plane = np.stack([0.3 * ys - 0.2 * xs + 1.0, 0.1 * xs, -0.05 * ys]).astype(np.float64)  # (3, 9, 9)
    removed = np.zeros((9, 9), dtype=bool)
    removed[2:6, 3:7] = True  # an interior hole
    removed[7, 1] = True
    filled = faithfulness.linear_impute(plane, removed)
    assert np.allclose(filled, plane, atol=1e-9)  # the weighted neighbour mean of a plane is the plane
    noisy = plane + np.random.default_rng(0).normal(size=plane.shape)
    again = faithfulness.linear_impute(noisy, removed)
    assert np.array_equal(again[:, ~removed], noisy[:, ~removed])
    # each imputed pixel is the weighted mean of its 8 neighbours (1/6 direct, 1/12 diagonal)
    y, x = 3, 4
    window = again[:, y - 1 : y + 2, x - 1 : x + 2]
    weights = np.array([[1, 2, 1], [2, 0, 2], [1, 2, 1]]) / 12.0
    assert np.allclose((window * weights).sum(axis=(1, 2)), again[:, y, x], atol=1e-9)


def test_road_ranks_the_true_attribution_above_random_and_reversed(linear: torch.nn.Sequential) -> None:
    torch.manual_seed(4)
    x = torch.randn(6, C, H, W)
    targets = linear(x).argmax(dim=1).tolist()
    truth = IntegratedGradients(linear).explain(x, targets, n_steps=8).attributions  # w[t] * x: the exact contributions
    rand = torch.rand(6, 1, H, W, generator=torch.Generator().manual_seed(2))
    true_road = faithfulness.road_image(linear, x, truth, targets, steps=4)
    rand_road = faithfulness.road_image(linear, x, rand, targets, steps=4)
    anti_road = faithfulness.road_image(linear, x, -truth, targets, steps=4)
    assert true_road.morf.shape == (6, 4) and true_road.fractions.tolist() == pytest.approx([0.2, 0.4, 0.6, 0.8])
    # MoRF: lower is better; LeRF: higher is better (compared on the mean over the items)
    assert true_road.road_morf.mean() < rand_road.road_morf.mean() < anti_road.road_morf.mean()
    assert true_road.road_lerf.mean() > rand_road.road_lerf.mean() > anti_road.road_lerf.mean()
    # removing the least relevant pixels first keeps the prediction better than removing the most relevant
    assert bool((true_road.road_lerf > true_road.road_morf).all())


def test_sensitivity_max_is_zero_for_a_constant_gradient_and_positive_otherwise(
    linear: torch.nn.Sequential,
) -> None:
    x = torch.randn(3, C, H, W)
    saliency = Saliency(linear)
    flat = faithfulness.sensitivity_max_image(
        lambda inputs, rows: saliency.explain(inputs, rows).attributions, x, [0, 1, 2], n_perturb_samples=4
    )
    assert flat.shape == (3,) and float(flat.abs().max()) < 1e-6  # the gradient of a linear model never moves
    mlp = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(C * H * W, 16), torch.nn.Tanh(), torch.nn.Linear(16, K)
    )
    curved = Saliency(mlp.eval())
    moved = faithfulness.sensitivity_max_image(
        lambda inputs, rows: curved.explain(inputs, rows).attributions, x, [0, 1, 2], n_perturb_samples=4
    )
    assert bool((moved > 1e-4).all())
    # IG of a linear model is w * x: perturbing x by d moves it by w * d, at most radius * |w| / |w * x|
    ig = IntegratedGradients(linear)
    radius = 0.05
    ig_sens = faithfulness.sensitivity_max_image(
        lambda inputs, rows: ig.explain(inputs, rows, n_steps=4).attributions,
        x,
        [0, 1, 2],
        n_perturb_samples=4,
        perturb_radius=radius,
    )
    w = linear[1].weight.detach().view(K, C, H, W)  # type: ignore[union-attr]
    for i in range(3):
        bound = float(torch.linalg.norm(radius * w[i]) / torch.linalg.norm(w[i] * x[i]))
        assert 0.0 < float(ig_sens[i]) <= bound * 1.0001


@pytest.fixture
def bag() -> TextClassifier:
    return bag_of_words()


def test_aopc_comprehensiveness_and_sufficiency_exact_and_ordered(bag: TextClassifier) -> None:
    ids = torch.tensor([[1, 5, 9, 12, 17, 20, 23, 28, 31, 35, 38, 2], [1, 4, 8, 15, 2, 0, 0, 0, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    batch = TextInputs(ids, mask)
    targets = [1, 0]
    table = bag.hf.table.detach()
    truth = table[ids, torch.tensor(targets)[:, None]] * mask  # (batch, seq) each token's own logit
    with torch.no_grad():
        logits = bag(ids, mask)
    got = faithfulness.aopc_text(bag, batch, truth, targets, logits=logits)

    def probability(item: int, keep: list[int]) -> float:
        row = ids[item : item + 1].clone()
        m = mask[item : item + 1].clone()
        for j in range(row.shape[1]):
            if j not in keep:
                row[0, j], m[0, j] = 0, 0
        with torch.no_grad():
            return float(bag(row, m).softmax(-1)[0, targets[item]])

    for item in range(2):
        real = [j for j in range(ids.shape[1]) if int(ids[item, j]) > 2]
        order = sorted(real, key=lambda j: (-float(truth[item, j]), j))
        specials = [j for j in range(ids.shape[1]) if int(ids[item, j]) in (1, 2)]
        full = probability(item, real + specials)
        comp, suff = [], []
        for q in faithfulness.AOPC_BINS:
            k = min(len(real), max(1, round(q * len(real))))
            comp.append(full - probability(item, [j for j in real if j not in order[:k]] + specials))
            suff.append(full - probability(item, order[:k] + specials))
        assert float(got.comprehensiveness[item]) == pytest.approx(float(np.mean(comp)), abs=1e-6)
        assert float(got.sufficiency[item]) == pytest.approx(float(np.mean(suff)), abs=1e-6)
    rand = torch.rand(ids.shape, generator=torch.Generator().manual_seed(5))
    random_scores = faithfulness.aopc_text(bag, batch, rand, targets, logits=logits)
    reversed_scores = faithfulness.aopc_text(bag, batch, -truth, targets, logits=logits)
    # the long text separates the orderings; the 3-token one may tie (a random top token can be the true one)
    assert got.comprehensiveness[0] > random_scores.comprehensiveness[0] > reversed_scores.comprehensiveness[0]
    assert got.sufficiency[0] < random_scores.sufficiency[0] < reversed_scores.sufficiency[0]
    assert bool((got.comprehensiveness >= random_scores.comprehensiveness).all())
    assert bool((got.sufficiency <= reversed_scores.sufficiency).all())


def test_text_insertion_auc_prefers_the_true_attribution(bag: TextClassifier) -> None:
    ids = torch.tensor([[1, 5, 9, 12, 17, 20, 23, 28, 31, 35, 38, 2]])
    mask = torch.ones_like(ids)
    table = bag.hf.table.detach()
    truth = table[ids, 1]  # (1, seq)
    batch = TextInputs(ids, mask)
    true_ins = faithfulness.insertion_curve_text(bag, batch, truth, [1], steps=5)
    anti_ins = faithfulness.insertion_curve_text(bag, batch, -truth, [1], steps=5)
    with torch.no_grad():
        p_full = float(bag(ids, mask).softmax(-1)[0, 1])
        p_none = float(
            bag(torch.tensor([[1] + [0] * 10 + [2]]), torch.tensor([[1] + [0] * 10 + [1]])).softmax(-1)[0, 1]
        )
    assert float(true_ins.probabilities[0, 0]) == pytest.approx(p_none, abs=1e-6)
    assert float(true_ins.probabilities[0, -1]) == pytest.approx(p_full, abs=1e-6)
    assert float(true_ins.auc[0]) > float(anti_ins.auc[0])


def test_score_selection_names_and_bounds(linear: torch.nn.Sequential, bag: TextClassifier) -> None:
    x = torch.randn(2, C, H, W)
    with torch.no_grad():
        logits = linear(x)
    attributions = torch.randn(2, C, H, W)
    every = ScoreParams(insertion_steps=4, road_steps=2, sensitivity_max=True, sensitivity_samples=2)
    scores = faithfulness.score_batch(
        linear, x, attributions, [0, 1], logits, every, explain_fn=lambda inputs, rows: torch.ones_like(inputs)
    )
    assert list(scores) == ["deletion_auc", "insertion_auc", "road_morf", "road_lerf", "infidelity", "sensitivity_max"]
    assert all(v.shape == (2,) for v in scores.values())
    assert set(scores) <= set(faithfulness.SCORE_NAMES)
    with pytest.raises(ExplainParameterError, match="text only"):
        faithfulness.score_batch(linear, x, attributions, [0, 1], logits, ScoreParams(aopc=True))
    text = TextInputs(torch.tensor([[1, 5, 9, 2]]), torch.ones(1, 4, dtype=torch.long))
    with pytest.raises(ExplainParameterError, match="images only"):
        faithfulness.score_batch(bag, text, torch.ones(1, 4), [0], torch.zeros(1, 2), ScoreParams(road_steps=3))
    text_scores = faithfulness.score_batch(
        bag, text, torch.ones(1, 4), [0], bag(text.input_ids, text.attention_mask), ScoreParams(aopc=True)
    )
    assert list(text_scores) == ["deletion_auc", "comprehensiveness", "sufficiency"]
    for bad, match in [({"road_steps": 20}, "road_steps"), ({"insertion_steps": 1}, "insertion_steps"),
                       ({"sensitivity_radius": 0}, "sensitivity_radius")]:  # fmt: skip
        with pytest.raises(ExplainParameterError, match=match):
            validate_params(ScoreParams, "saliency", bad)
