"""Both default recipes in smoke mode, end to end through the real CLI: data, fine-tuning,
report, export; the bundles load with the bundle reader and their parity is in the manifest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from lumenserve.bundle import Bundle, load_bundle
from lumenserve.bundle.eager import build_eager_model, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.export]
REPORT_ARTIFACTS = {
    f"report/{f}" for f in ("report.html", "curves.png", "confusion_matrix.png", "reliability.png", "samples.png")
}


def _lumenserve(*args: str, timeout: int = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_WAIT_POLICY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "lumenserve", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _check_common(bundle: Bundle, run: Path, recipe_name: str) -> None:
    manifest = bundle.manifest
    parity = {p.runtime: p for p in manifest.parity}
    assert set(parity) == {"onnx", "torchscript"}
    for record in parity.values():
        assert record.max_abs_diff <= record.tolerance == 1e-4
        assert record.batch_sizes == [1, 4]
    paths = {a.path for a in manifest.artifacts if a.kind == "report"}
    assert paths == REPORT_ARTIFACTS
    training = manifest.training
    assert training["smoke"] is True and training["recipe"]["name"] == recipe_name
    assert 0.0 <= training["test"]["accuracy"] <= 1.0 and "ece" in training["test"]
    assert training["train"]["steps"] == 4
    assert set(training["data"]["class_counts"]) == {"train", "validation", "test"}
    html = (bundle.root / "report" / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 4 and recipe_name in html
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "config.yaml").exists() and (run / "best.safetensors").exists()


def test_fashion_recipe_smoke_through_export(tmp_path: Path) -> None:
    run, repo = tmp_path / "run", tmp_path / "repo"
    out = _lumenserve("train", "configs/fashion-mobilenetv2.yaml", "--smoke", "--out", str(run),
                      "--export-to", str(repo), "--no-progress").stdout  # fmt: skip
    assert "test accuracy" in out and "parity max abs diff" in out
    bundle = load_bundle(repo / "fashion-mobilenetv2" / "1")
    _check_common(bundle, run, "fashion-mobilenetv2")
    m = bundle.manifest
    assert m.labels[:2] == ["T-shirt/top", "Trouser"] and len(m.labels) == 10
    assert m.preprocessing.kind == "image" and m.preprocessing.crop_size == 64
    assert m.architecture.family == "torchvision" and m.architecture.gradcam_layer == "features.6"  # 8 x 8 at 64 px
    data = m.training["data"]
    assert data["read"] == {"train": 60000, "test": 10000}
    # a held-out Fashion-MNIST image, preprocessed as in training: eager twin == ONNX
    from safetensors.torch import load_file

    held_out = load_file(str(run / "parity_inputs.safetensors"))["input"]  # (4, 3, 64, 64)
    session = ort.InferenceSession(str(bundle.path("onnx")), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(["logits"], {"input": held_out.numpy()})
    with torch.no_grad():
        eager = build_eager_model(bundle)(held_out).numpy()
    assert np.abs(onnx_logits - eager).max() < 1e-4

    # re-export the same run under another name
    _lumenserve("export", str(run), "--repository", str(repo), "--name", "fashion-copy")
    copy = load_bundle(repo / "fashion-copy" / "1")
    assert copy.manifest.labels == m.labels and copy.manifest.training["test"] == m.training["test"]


def test_sentiment_recipe_smoke_through_export(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _lumenserve("train", "configs/sentiment-minilm.yaml", "--smoke", "--out", str(run), "--no-progress")
    bundle = load_bundle(run / "model_repository" / "sentiment-minilm" / "1")  # --smoke's default repository
    _check_common(bundle, run, "sentiment-minilm")
    m = bundle.manifest
    assert m.labels == ["rotten", "fresh"]
    assert m.preprocessing.kind == "text" and m.preprocessing.max_length == 32
    assert [o.name for o in m.outputs] == ["logits", *[f"attention_{i}" for i in range(6)]]
    dropped = m.training["data"]["dropped"]["train"]
    assert 1000 < dropped["unknown_label"] <= 1097  # the corpus' 1,097 "plot" rows (a few are empty text first)
    tokenizer = load_tokenizer(bundle)
    enc = tokenizer(["a gorgeous, heartfelt film", "tedious"], padding=True, return_tensors="np")
    session = ort.InferenceSession(str(bundle.path("onnx")), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})[0]
    with torch.no_grad():
        eager = build_eager_model(bundle)(
            input_ids=torch.from_numpy(enc["input_ids"]), attention_mask=torch.from_numpy(enc["attention_mask"])
        ).logits.numpy()
    assert logits.shape == (2, 2) and np.abs(logits - eager).max() < 1e-4
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test"]["samples"] == sum(summary["data"]["class_counts"]["test"].values())


def test_pretrained_imagenet_mobilenet_export(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _lumenserve("export", "--pretrained", "mobilenet_v2", "--repository", str(repo), "--name", "imagenet-mobilenetv2")
    bundle = load_bundle(repo / "imagenet-mobilenetv2" / "1")
    m = bundle.manifest
    assert len(m.labels) == 1000 and m.labels[0] == "tench" and m.labels[207] == "golden retriever"
    assert m.preprocessing.kind == "image"
    assert (m.preprocessing.resize_size, m.preprocessing.crop_size) == (256, 224)
    assert m.preprocessing.mean == [0.485, 0.456, 0.406]
    assert all(p.max_abs_diff <= 1e-4 for p in m.parity) and len(m.parity) == 2
    assert m.training["source"].endswith("IMAGENET1K_V1")
