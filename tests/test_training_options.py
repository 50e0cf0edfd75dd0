"""LoRA, gradient checkpointing, bf16 autocast, effective batch size and the peak-memory figure
on a tiny BERT folder; bad recipes fail before training with one line naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from lumenserve.bundle import load_bundle
from tests.test_training_checkpoints import write_tiny_bert
from training.cli import train_command
from training.config import load_recipe
from training.export_run import export_run
from training.pipeline import run_training

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert")


def _train(bert: Path, out: Path, *sets: str) -> dict[str, Any]:
    recipe = load_recipe("configs/sentiment-checkpoint.yaml", [f"model.path={bert}", *sets], smoke=True)
    return run_training(recipe, out, smoke=True, progress=False).summary


def test_lora_trains_adapters_and_head_only_and_exports_merged(bert: Path, tmp_path: Path) -> None:
    summary = _train(bert, tmp_path / "run", "model.lora={r: 4, target_modules: [query, value]}")
    params = summary["model"]["parameters"]
    assert 0 < params["trainable"] < 0.1 * params["total"]
    lora = summary["model"]["lora"]
    assert lora["r"] == 4 and lora["merge_max_abs_diff"] < 1e-4
    adapter = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and sorted(adapter["target_modules"]) == ["query", "value"]
    bundle = export_run(tmp_path / "run", tmp_path / "repo")
    assert all(p.max_abs_diff <= p.tolerance for p in bundle.manifest.parity)
    kinds = {a.path: a.kind for a in bundle.manifest.artifacts}
    assert kinds["adapter/adapter_model.safetensors"] == "adapter" and kinds["model.onnx"] == "onnx"
    from safetensors.torch import load_file

    served_keys = load_file(str(bundle.path("safetensors"))).keys()
    assert not any("lora_" in k for k in served_keys)  # the adapters are merged: an ordinary bundle
    assert load_bundle(bundle.root).manifest.training["model"]["lora"]["r"] == 4


@pytest.mark.parametrize(
    ("sets", "check"),
    [
        ((), {"precision": "fp32", "gradient_checkpointing": False}),
        (("train.gradient_checkpointing=true",), {"precision": "fp32", "gradient_checkpointing": True}),
        (("train.precision=bf16",), {"precision": "bf16", "gradient_checkpointing": False}),
        (("train.effective_batch_size=32",), {"accumulation_steps": 2, "effective_batch_size": 32}),
    ],
)
def test_memory_options_show_in_the_summary(bert: Path, tmp_path: Path, sets: tuple[str, ...],
                                            check: dict[str, Any]) -> None:  # fmt: skip
    train = _train(bert, tmp_path / "run", *sets)["train"]
    assert {k: train[k] for k in check} == check
    assert train["peak_memory_source"] in {"cpu_peak_rss", "cpu_peak_rss_lifetime"}
    assert 50 < train["peak_memory_mb"] < 64 * 1024  # a Python process with torch, below the machine's memory
    assert train["samples_per_second"] > 0 and train["steps"] >= 2
    html = (tmp_path / "run" / "report.html").read_text()
    assert "peak memory" in html and train["precision"] in html


def test_gradient_checkpointing_keeps_the_result_on_a_torchvision_model() -> None:
    import torchvision

    from training.models import BuiltModel, enable_gradient_checkpointing

    torch.manual_seed(0)
    plain = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=3)
    checkpointed = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=3)
    checkpointed.load_state_dict(plain.state_dict())
    enable_gradient_checkpointing(BuiltModel(checkpointed, []).model)
    x = torch.randn(2, 3, 32, 32)  # (2, 3, 32, 32)
    for model in (plain, checkpointed):
        torch.manual_seed(1)  # the same dropout mask in the classifier
        model.train()
        model(x).sum().backward()
    grads = [(p.grad, q.grad) for p, q in zip(plain.parameters(), checkpointed.parameters(), strict=True)]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in grads if a is not None)
    assert checkpointed.state_dict().keys() == plain.state_dict().keys()


def _fails(args: list[str], out: Path) -> str:
    result = CliRunner().invoke(train_command, [*args, "--out", str(out), "--no-progress"])
    assert result.exit_code != 0, result.output
    lines = [line for line in result.output.strip().splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    assert not (out / "best.safetensors").exists() and not (out / "tensorboard").exists()  # before training
    return lines[0]


def test_bad_recipes_fail_before_training_naming_the_field(bert: Path, tmp_path: Path) -> None:
    recipe = "configs/sentiment-checkpoint.yaml"
    line = _fails([recipe, "--smoke", "--set", f"model.path={bert}", "--set", "model.colour=red"], tmp_path / "a")
    assert "unknown key 'model.colour'" in line
    line = _fails([recipe, "--smoke"], tmp_path / "b")
    assert "model.path" in line and "--set model.path=DIR" in line
    lora = "model.lora={target_modules: [q_proj, v_proj]}"
    line = _fails([recipe, "--smoke", "--set", f"model.path={bert}", "--set", lora], tmp_path / "c")
    assert "model.lora.target_modules" in line and "q_proj" in line and "query" in line
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((bert / "config.json").read_text())
    line = _fails([recipe, "--smoke", "--set", f"model.path={no_weights}"], tmp_path / "d")
    assert line.startswith("Error: model.path:") and "has no weights" in line
    line = _fails([recipe, "--smoke", "--set", f"model.path={bert}", "--set", "train.effective_batch_size=24"],
                  tmp_path / "e")  # fmt: skip
    assert "train.effective_batch_size" in line


def test_torchvision_weights_file_errors_and_torch_save_format(tmp_path: Path) -> None:
    import torchvision

    from training.config import ModelConfig
    from training.models import ModelError, build_image_model

    state = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=1000).state_dict()
    pt = tmp_path / "mnv3.pt"
    torch.save({"state_dict": state, "epoch": 3}, pt)
    cfg = ModelConfig(family="torchvision", name="mobilenet_v3_small", weights_file=str(pt), image_size=32)
    built = build_image_model(cfg, 4)
    assert sorted(built.head_params) == ["classifier.3.bias", "classifier.3.weight"]
    assert torch.equal(built.model.state_dict()["features.0.0.weight"], state["features.0.0.weight"])
    wrong = cfg.model_copy(update={"name": "resnet18"})
    with pytest.raises(ModelError, match=r"^model.weights_file: .* does not fit torchvision resnet18"):
        build_image_model(wrong, 4)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match=r"^model.weights_file: cannot read"):
        build_image_model(cfg.model_copy(update={"weights_file": str(junk)}), 4)
