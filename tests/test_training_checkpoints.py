"""Fine-tuning the user's own checkpoints, end to end: a Hugging Face text folder (tiny BERT),
Hugging Face image folders (tiny ViT and ConvNeXt) and a torchvision architecture from a
safetensors file are fine-tuned (smoke size), exported with parity, served by a real
``lumenserve serve`` process and explained through its /explain route."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from lumenserve.bundle import Bundle, load_bundle
from lumenserve.bundle.eager import build_eager_model
from tests.support.server import ServerProcess
from training.config import load_recipe
from training.export_run import export_run
from training.pipeline import run_training

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.export]
IMAGE_CLASSES = ("circle", "square", "stripes")


def _draw(kind: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, (40, 40, 3), dtype=np.uint8)  # (H, W, 3)
    if kind == "circle":
        yy, xx = np.mgrid[:40, :40]
        pixels[(yy - 20) ** 2 + (xx - 20) ** 2 < 120] = (220, 60, 60)
    elif kind == "square":
        pixels[10:30, 10:30] = (60, 220, 60)
    else:
        pixels[::6] = (60, 60, 220)
    return Image.fromarray(pixels)


def write_image_folder(root: Path, per_class: int = 14) -> Path:
    for kind in IMAGE_CLASSES:
        (root / kind).mkdir(parents=True)
        for i in range(per_class):
            _draw(kind, i).save(root / kind / f"{i}.png")
    return root


def write_tiny_bert(folder: Path) -> Path:
    """A 2-layer BERT sequence classifier (3 labels: the head is resized) with MiniLM's tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from lumenserve.assets import minilm_dir

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, num_labels=3,
    )  # fmt: skip
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_tiny_image_model(folder: Path, kind: str) -> Path:
    """A tiny ViT (32 px, patch 8) or ConvNeXt image classifier with a 5-label head (resized to the data's 3)."""
    from transformers import ConvNextConfig, ConvNextForImageClassification, ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    model: Any
    if kind == "vit":
        model = ViTForImageClassification(
            ViTConfig(
                image_size=32,
                patch_size=8,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                num_labels=5,
            )
        )
    else:
        model = ConvNextForImageClassification(
            ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, patch_size=2, num_labels=5)
        )
    model.save_pretrained(folder)
    return folder


def write_torchvision_weights(path: Path) -> Path:
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=1000)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def image_recipe(tmp: Path, folder: Path, name: str, model: dict[str, Any]) -> Path:
    recipe = {
        "name": name,
        "task": "image-classification",
        "data": {"train": {"format": "image_folder", "path": str(folder)}, "val_fraction": 0.2,
                 "test_fraction": 0.2},
        "model": {"image_size": 32, "augment": False, **model},
        "train": {"epochs": 1, "max_steps": 3, "batch_size": 8, "lr": 0.001, "evals_per_epoch": 1,
                  "label_smoothing": 0.1},
    }  # fmt: skip
    path = tmp / f"{name}.yaml"
    path.write_text(json.dumps(recipe))
    return path


def _lumenserve(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_WAIT_POLICY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "lumenserve", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _train_and_export(recipe: Path, run: Path, repo: Path) -> Bundle:
    result = run_training(load_recipe(recipe), run, progress=False)
    assert result.summary["train"]["steps"] == 3
    return export_run(run, repo)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Bundle]:
    tmp = tmp_path_factory.mktemp("checkpoints")
    repo = tmp / "repo"
    images = write_image_folder(tmp / "shapes")
    out: dict[str, Bundle] = {}
    # text: the user-checkpoint recipe through the real CLI, the folder given with --set
    bert = write_tiny_bert(tmp / "tiny-bert")
    run = tmp / "run-text"
    sets = ["--set", f"model.path={bert}", "--set", "export.name=own-bert"]
    _lumenserve("train", "configs/sentiment-checkpoint.yaml", "--smoke", *sets, "--out", str(run),
                "--export-to", str(repo), "--no-progress")  # fmt: skip
    out["own-bert"] = load_bundle(repo / "own-bert" / "1")
    for kind in ("vit", "convnext"):
        folder = write_tiny_image_model(tmp / f"tiny-{kind}", kind)
        recipe = image_recipe(tmp, images, f"own-{kind}", {"family": "transformers", "path": str(folder)})
        out[f"own-{kind}"] = _train_and_export(recipe, tmp / f"run-{kind}", repo)
    weights = write_torchvision_weights(tmp / "mnv3.safetensors")
    recipe = image_recipe(
        tmp, images, "own-mobilenet",
        {"family": "torchvision", "name": "mobilenet_v3_small", "weights_file": str(weights), "freeze": "none"},
    )  # fmt: skip
    out["own-mobilenet"] = _train_and_export(recipe, tmp / "run-mobilenet", repo)
    return out


@pytest.fixture(scope="module")
def server(bundles: dict[str, Bundle]) -> Iterator[ServerProcess]:
    repo = next(iter(bundles.values())).root.parent.parent
    with ServerProcess(repo, env={"LUMENSERVE_GRACE_PERIOD": "5"}) as running:
        yield running


def test_heads_sized_from_the_data_and_parity_recorded(bundles: dict[str, Bundle]) -> None:
    for name, bundle in bundles.items():
        m = bundle.manifest
        assert {p.runtime for p in m.parity} == {"onnx", "torchscript"}, name
        assert all(p.max_abs_diff <= p.tolerance for p in m.parity), name
        assert len(m.labels) == (2 if name == "own-bert" else 3), name
    text = bundles["own-bert"].manifest
    assert text.labels == ["rotten", "fresh"] and text.architecture.family == "transformers"
    assert text.training["recipe"]["model"]["path"].endswith("tiny-bert")
    for kind in ("vit", "convnext"):
        arch = bundles[f"own-{kind}"].manifest.architecture
        assert arch.family == "transformers" and arch.head == "image-classification"
        assert arch.model_type == kind and arch.num_labels == 3
    assert bundles["own-convnext"].manifest.architecture.gradcam_layer == "model.convnext.encoder.stages.1"
    mobile = bundles["own-mobilenet"].manifest.architecture
    assert mobile.family == "torchvision" and mobile.name == "mobilenet_v3_small" and mobile.num_classes == 3


def test_eager_rebuild_matches_onnx_for_hf_image_bundles(bundles: dict[str, Bundle]) -> None:
    import onnxruntime as ort

    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))  # (2, 3, 32, 32)
    for name in ("own-vit", "own-convnext", "own-mobilenet"):
        bundle = bundles[name]
        with torch.no_grad():
            eager = build_eager_model(bundle)(x)  # (2, 3): a tensor, not an output object
        session = ort.InferenceSession(str(bundle.path("onnx")), providers=["CPUExecutionProvider"])
        (onnx_logits,) = session.run(["logits"], {"input": x.numpy()})
        assert eager.shape == (2, 3) and np.abs(onnx_logits - eager.numpy()).max() < 1e-4, name


def _post(server: ServerProcess, model: str, route: str, doc: dict[str, Any]) -> dict[str, Any]:
    reply = httpx.post(f"http://{server.http_url}/v2/models/{model}/{route}", json=doc, timeout=180)
    assert reply.status_code == 200, reply.text
    return {o["name"]: o for o in reply.json()["outputs"]}


@pytest.mark.parametrize("model", ["own-vit", "own-convnext", "own-mobilenet"])
def test_image_bundles_serve_and_explain(server: ServerProcess, model: str) -> None:
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    tensor = {"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": x.reshape(-1).tolist()}
    served = _post(server, model, "infer", {"inputs": [tensor]})
    assert served["logits"]["shape"] == [1, 3] and all(np.isfinite(served["logits"]["data"]))
    params = {"method": "integrated_gradients", "n_steps": 8, "deletion_steps": 0, "infidelity": False}
    explained = _post(server, model, "explain", {"parameters": params, "inputs": [tensor]})
    attributions = np.asarray(explained["attributions"]["data"], dtype=np.float32)
    assert explained["attributions"]["shape"] == [1, 3, 32, 32] and np.abs(attributions).sum() > 0
    assert 0 <= explained["target"]["data"][0] < 3


def test_text_bundle_serves_and_explains(server: ServerProcess) -> None:
    texts = {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a fine film", "dull and long"]}
    served = _post(server, "own-bert", "infer", {"inputs": [texts]})
    assert served["logits"]["shape"] == [2, 2]
    params = {"method": "integrated_gradients", "n_steps": 8, "deletion_steps": 0, "infidelity": False}
    explained = _post(server, "own-bert", "explain", {"parameters": params, "inputs": [texts]})
    assert explained["attributions"]["shape"][0] == 2 and explained["tokens"]["data"][0] == "[CLS]"
