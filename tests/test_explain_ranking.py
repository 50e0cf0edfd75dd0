"""On the tiny default-like bundles, Integrated Gradients ranks above a random attribution on
every faithfulness score that applies (the bundles have random weights: the margins are small
but the inputs are fixed, so the results are too)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explain import faithfulness
from explain.engine import BundleExplainer
from explain.explanation import TextInputs
from explain.params import ScoreParams
from lumenserve.bundle import Bundle

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = [
    "a truly wonderful film", "dull and long and boring", "the acting was fine but the plot was thin",
    "i loved every minute of it", "not worth the ticket", "a masterpiece of quiet drama",
    "the worst sequel ever made", "charming, funny and warm",
]  # fmt: skip


def mean_scores(result_items: list, names: list[str]) -> dict[str, float]:  # type: ignore[type-arg]
    return {n: float(np.mean([i.scores[n] for i in result_items])) for n in names}


def test_integrated_gradients_beats_random_on_the_image_bundle(image_bundle: Bundle) -> None:
    explainer = BundleExplainer(image_bundle)
    g = torch.Generator().manual_seed(7)
    pixels = torch.rand(8, 3, 32, 32, generator=g)  # (8, 3, 32, 32) in [0, 1]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = ((pixels - mean) / std).float()
    params = {"insertion_steps": 10, "road_steps": 4, "infidelity": False, "render_png": False}
    result = explainer.explain({"input": x.numpy()}, method="integrated_gradients", params=params)
    names = ["deletion_auc", "insertion_auc", "road_morf", "road_lerf"]
    ig = mean_scores(result.items, names)
    with torch.no_grad():
        logits = explainer.model(x)
    noise = faithfulness.random_attributions(x, seed=7)  # (8, 1, 32, 32)
    scores = ScoreParams(insertion_steps=10, road_steps=4, infidelity=False)
    rand = faithfulness.score_batch(explainer.model, x, noise, [i.target for i in result.items], logits, scores)
    for name in names:
        assert faithfulness.more_faithful(name, ig[name], float(rand[name].mean())), (
            name,
            ig[name],
            float(rand[name].mean()),
        )


def test_integrated_gradients_beats_random_on_the_text_bundle(text_bundle: Bundle) -> None:
    explainer = BundleExplainer(text_bundle)
    x = explainer.encode_texts(TEXTS)
    result = explainer.explain(x, params={"insertion_steps": 10, "aopc": True, "render_png": False})
    names = ["deletion_auc", "insertion_auc", "comprehensiveness", "sufficiency"]
    ig = mean_scores(result.items, names)
    batch = TextInputs(torch.from_numpy(x["input_ids"]), torch.from_numpy(x["attention_mask"]))
    with torch.no_grad():
        logits = explainer.model(batch.input_ids, batch.attention_mask)
    noise = faithfulness.random_attributions(batch, seed=7)  # (8, seq)
    scores = ScoreParams(insertion_steps=10, aopc=True)
    rand = faithfulness.score_batch(explainer.model, batch, noise, [i.target for i in result.items], logits, scores)
    for name in names:
        assert faithfulness.more_faithful(name, ig[name], float(rand[name].mean())), (
            name,
            ig[name],
            float(rand[name].mean()),
        )
