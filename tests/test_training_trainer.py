"""The trainer, models, metrics and recipe handling on tiny models (fast, hand-checkable)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from training.config import ConfigError, ModelConfig, TrainConfig, load_recipe
from training.evaluate import calibration, classification_metrics
from training.models import apply_freezing, build_image_model
from training.trainer import BEST_WEIGHTS, ResumeError, Trainer, warmup_cosine

RECIPES = Path(__file__).resolve().parents[1] / "configs"


def _data(n: int = 48, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)  # (N, 4)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()  # (N,) three classes
    return TensorDataset(x, y)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_warmup_then_cosine_schedule() -> None:
    f = warmup_cosine(total_steps=100, warmup_fraction=0.1, min_ratio=0.1)
    assert f(0) < f(5) < f(9) <= 1.0
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(100) == pytest.approx(0.1)


def test_training_learns_and_keeps_best_checkpoint(tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=6, batch_size=8, lr=0.05, evals_per_epoch=1, warmup_fraction=0.0)
    model = _model()
    result = Trainer(model, _data(), cfg, val_set=_data(32, seed=1), labels=["a", "b", "c"], run_dir=tmp_path,
                     progress=False).fit()  # fmt: skip
    vals = [r["val_accuracy"] for r in result.state.history if "val_accuracy" in r]
    assert len(vals) == 6
    assert max(vals) >= 0.7 > vals[0] - 0.2
    assert result.state.best_metric == max(vals)
    assert (tmp_path / BEST_WEIGHTS).exists()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    lrs = [r["lr"] for r in result.state.history if "lr" in r]
    assert lrs[-1] < lrs[0]


def test_gradient_accumulation_matches_the_larger_batch() -> None:
    a, b = _model(), _model()
    Trainer(a, _data(), TrainConfig(epochs=2, batch_size=8, lr=0.01), progress=False).fit()
    Trainer(b, _data(), TrainConfig(epochs=2, batch_size=4, grad_accum_steps=2, lr=0.01), progress=False).fit()
    assert torch.allclose(_flat(a), _flat(b), atol=1e-5)


def test_resume_reproduces_an_uninterrupted_run(tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.02, seed=3)
    straight = _model()
    Trainer(straight, _data(), cfg, run_dir=tmp_path / "a", progress=False).fit()
    Trainer(_model(), _data(), cfg, run_dir=tmp_path / "b", progress=False).fit(stop_after_epochs=1)
    resumed_model = _model(seed=99)  # weights come from the checkpoint
    trainer = Trainer(resumed_model, _data(), cfg, run_dir=tmp_path / "b", progress=False)
    trainer.resume(tmp_path / "b")
    assert trainer.state.epoch == 1 and trainer.state.step == 6
    trainer.fit()
    assert trainer.state.step == 18
    assert torch.allclose(_flat(straight), _flat(resumed_model), atol=1e-6)
    with pytest.raises(ResumeError, match=r"last\.safetensors, trainer_state\.pt missing"):
        Trainer(_model(), _data(), cfg, progress=False).resume(tmp_path / "empty")


def test_early_stopping_after_patience() -> None:
    cfg = TrainConfig(epochs=20, batch_size=16, lr=1e-9, early_stopping_patience=2, warmup_fraction=0.0)
    result = Trainer(_model(), _data(), cfg, val_set=_data(16, 2), labels=["a", "b", "c"], progress=False).fit()
    assert result.state.stopped_early
    assert result.state.step == 3 * 3  # 3 evaluations of 3 steps each: best, then two without improvement


def test_pretrained_image_model_and_freezing() -> None:
    import torchvision

    from lumenserve.assets import seed_torch_hub

    seed_torch_hub()
    built = build_image_model(ModelConfig(family="torchvision", name="mobilenet_v2", weights="IMAGENET1K_V1",
                                          image_size=64), num_classes=5)  # fmt: skip
    reference = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    state = built.model.state_dict()
    assert built.head_params == ["classifier.1.weight", "classifier.1.bias"]
    assert torch.equal(state["features.0.0.weight"], reference["features.0.0.weight"])
    assert state["classifier.1.weight"].shape == (5, 1280)
    assert built.preprocessing is not None
    assert (built.preprocessing.crop_size, built.preprocessing.resize_size) == (64, 73)  # 224/256 ratio kept
    assert built.categories is not None and len(built.categories) == 1000
    counts = apply_freezing(built, "last_blocks", 2)
    trainable = {n for n, p in built.model.named_parameters() if p.requires_grad}
    assert {n.split(".")[1] for n in trainable if n.startswith("features.")} == {"17", "18"}
    assert "classifier.1.weight" in trainable and counts["trainable"] < counts["total"]
    apply_freezing(built, "head", 0)
    assert {n for n, p in built.model.named_parameters() if p.requires_grad} == set(built.head_params)


def test_metrics_by_hand() -> None:
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]], dtype=np.float32)
    targets = np.array([0, 1, 1, 1])
    m = classification_metrics(probs, targets, ["neg", "pos"])
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["confusion_matrix"] == [[1, 0], [1, 2]]
    assert m["per_class"]["neg"]["precision"] == pytest.approx(0.5)
    assert m["per_class"]["pos"]["recall"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    # ECE: bins of confidence 0.9 (correct), 0.8 (wrong), 0.7 (right), 0.6 (right) -> each alone in its bin
    expected = (abs(1 - 0.9) + abs(0 - 0.8) + abs(1 - 0.7) + abs(1 - 0.6)) / 4
    assert calibration(probs, targets)["ece"] == pytest.approx(expected, abs=1e-6)
    assert math.isclose(sum(b["count"] for b in m["reliability"]), 4)


def test_recipe_overrides_and_smoke(tmp_path: Path) -> None:
    recipe = load_recipe(RECIPES / "fashion-mobilenetv2.yaml", ["train.lr=0.01", "data.max_train_samples=100"])
    assert recipe.train.lr == 0.01 and recipe.data.max_train_samples == 100
    smoke = load_recipe(RECIPES / "sentiment-minilm.yaml", smoke=True)
    assert smoke.train.max_steps == 4 and smoke.data.max_train_samples == 64
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_recipe(RECIPES / "sentiment-minilm.yaml", ["train.lr"])
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        load_recipe(RECIPES / "sentiment-minilm.yaml", ["train.epochs=0"])
    with pytest.raises(ConfigError, match=r"model\.unknown_key"):
        load_recipe(RECIPES / "sentiment-minilm.yaml", ["model.unknown_key=1"])


def test_throughput_bench_runs_as_a_function() -> None:
    from bench.train_throughput import run

    result = run(model_name="mobilenet_v3_small", image_size=32, samples=32, batch_size=16, rounds=2, threads=1)
    assert len(result["bare_rounds"]) == len(result["trainer_rounds"]) == 2
    assert result["bare_samples_per_s"] > 0 and result["trainer_samples_per_s"] > 0
    assert result["ratio"] == pytest.approx(result["trainer_samples_per_s"] / result["bare_samples_per_s"])
