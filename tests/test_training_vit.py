"""The from-scratch vision-transformer recipe (configs/fashion-vit.yaml) with a reduced but real
budget, end to end: the real CLI trains and exports it with parity, a real server serves it,
and its ViT explanations of held-out Fashion-MNIST test images remove the evidence faster
than a random attribution does (lower deletion AUC, scored by the same curve code)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from explain import faithfulness
from lumenserve.assets import fashion_mnist_dir
from lumenserve.bundle import Bundle, ImagePreprocessing, load_bundle
from lumenserve.bundle.eager import build_eager_model
from serving.codecs.image import ImageCodec
from tests.support.server import ServerProcess
from training.config import ConfigError, load_recipe
from training.data.idx import read_idx
from training.models import ModelError, build_model

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "configs/fashion-vit.yaml"
METHODS = ("attention", "gradient_rollout", "grad_cam")
ITEMS = 32  # held-out test images explained
STEPS = 10  # deletion slices (the server's default)
# 16,000 training images in 500 steps of 32 (about 40 s on this 2-core machine under load).
BUDGET = ("data.max_train_samples=8000", "data.max_eval_samples=500", "data.max_test_samples=1000",
          "train.epochs=2", "train.batch_size=32", "train.evals_per_epoch=1")  # fmt: skip


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    tmp = tmp_path_factory.mktemp("vit")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_WAIT_POLICY", None)
    sets = [a for s in BUDGET for a in ("--set", s)]
    args = ["train", RECIPE, *sets, "--out", str(tmp / "run"), "--export-to", str(tmp / "repo"), "--no-progress"]
    proc = subprocess.run([sys.executable, "-m", "lumenserve", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return load_bundle(tmp / "repo" / "fashion-vit" / "1")


@pytest.fixture(scope="module")
def server(bundle: Bundle) -> Iterator[ServerProcess]:
    with ServerProcess(bundle.root.parent.parent, env={"LUMENSERVE_GRACE_PERIOD": "5"}) as running:
        yield running


def held_out_pngs(count: int) -> list[bytes]:
    """The last ``count`` Fashion-MNIST test images (never trained on) as grayscale PNGs."""
    images = read_idx(fashion_mnist_dir() / "t10k-images-idx3-ubyte.gz")[-count:]  # (count, 28, 28)
    out = []
    for pixels in images:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


@pytest.mark.slow
@pytest.mark.export
def test_the_recipe_learns_and_exports_a_vit_with_parity(bundle: Bundle) -> None:
    m = bundle.manifest
    assert {p.runtime for p in m.parity} == {"onnx", "torchscript"}
    assert all(p.max_abs_diff <= p.tolerance == 1e-4 for p in m.parity)
    arch = m.architecture
    assert arch is not None and arch.family == "transformers" and arch.model_type == "vit"
    assert arch.head == "image-classification" and arch.num_labels == 10
    pre = m.preprocessing
    assert isinstance(pre, ImagePreprocessing) and (pre.channels, pre.crop_size, pre.mean) == (1, 28, [0.0])
    assert m.inputs[0].shape == [-1, 1, 28, 28]
    assert m.training["recipe"]["model"]["architecture_config"]["patch_size"] == 4
    assert m.training["test"]["accuracy"] > 0.5  # it learned (chance is 0.1)
    config = json.loads((bundle.root / "hf_config" / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_channels"]) == (4, 64, 1)


@pytest.mark.slow
@pytest.mark.export
def test_vit_explanations_beat_random_on_held_out_images(bundle: Bundle, server: ServerProcess) -> None:
    pngs = held_out_pngs(ITEMS)
    raw = b"".join(len(p).to_bytes(4, "little") + p for p in pngs)
    image = {"name": "image", "shape": [ITEMS], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}
    params = {"methods": ",".join(METHODS), "deletion_steps": STEPS, "infidelity": False}
    header = {"parameters": params, "inputs": [image]}
    head = json.dumps(header).encode()
    reply = httpx.post(f"http://{server.http_url}/v2/models/fashion-vit/explain", content=head + raw,
                       headers={"Inference-Header-Content-Length": str(len(head))}, timeout=300)  # fmt: skip
    assert reply.status_code == 200, reply.text
    out = {o["name"]: o for o in reply.json()["outputs"]}
    targets = [int(t) for t in out["target"]["data"]]
    assert out["attention/attention_grid_png"]["shape"] == [ITEMS]
    for method in METHODS:
        assert out[f"{method}/attributions"]["shape"] == [ITEMS, 1, 28, 28]
        assert len(out[f"{method}/overlay_png"]["data"]) == ITEMS

    # the random reference: the same images, preprocessed as the server does, the same curve code
    pre = bundle.manifest.preprocessing
    assert isinstance(pre, ImagePreprocessing)
    x = torch.from_numpy(ImageCodec(pre, max_pixels=10**6)(pngs))  # (ITEMS, 1, 28, 28)
    model = build_eager_model(bundle)
    with torch.no_grad():
        served = np.asarray(out["logits"]["data"], dtype=np.float32).reshape(ITEMS, 10)
        assert np.abs(model(x).numpy() - served).max() < 1e-3  # the images the server explained
        seeds = [faithfulness.random_deletion_auc_image(model, x, targets, steps=STEPS, seed=s) for s in range(4)]
        random_auc = float(torch.stack(seeds).mean())  # over 4 noise draws x ITEMS images
    for method in METHODS:
        auc = float(np.mean(out[f"{method}/deletion_auc"]["data"]))
        assert auc < random_auc, f"{method}: deletion AUC {auc:.3f} not below random {random_auc:.3f}"


def test_architecture_config_mistakes_name_the_field() -> None:
    def error(*sets: str) -> str:
        with pytest.raises((ConfigError, ModelError)) as caught:
            recipe = load_recipe(RECIPE, list(sets), smoke=True)
            build_model(recipe.task, recipe.model, ["a", "b"])
        return str(caught.value)

    assert "model.architecture_config.hiden_size: ViTConfig has no such field" in error(
        "model.architecture_config.hiden_size=64"
    )
    assert "model.architecture_config.model_type: unknown transformers model type 'vitt'" in error(
        "model.architecture_config.model_type=vitt"
    )
    assert "no image-classification head for 'gpt2'" in error("model.architecture_config.model_type=gpt2")
    assert "hidden_size: 30 is not a multiple of 4 heads" in error("model.architecture_config.hidden_size=30")
    assert "num_channels: 1 (grayscale) or 3 (RGB), got 2" in error("model.architecture_config.num_channels=2")
    assert "model.image_mean: the model takes 1 channel(s)" in error("model.image_mean=[0.1, 0.2, 0.3]")
    assert "model.image_size: 32 differs from model.architecture_config.image_size 28" in error("model.image_size=32")
    assert "model.freeze: a model built from model.architecture_config" in error("model.freeze=head")
    assert "not both" in error("model.path=/data/vit")
    assert "the head is sized from the data's labels" in error("model.architecture_config.num_labels=3")
    assert "model_type: required" in error("model.architecture_config={patch_size: 4}")
    with pytest.raises(ConfigError, match="only for transformers models"):
        load_recipe(RECIPE, ["model.family=torchvision", "model.name=resnet18"])
    recipe = load_recipe(RECIPE, ["model.architecture_config.hidden_size=32"], smoke=True)
    built = build_model(recipe.task, recipe.model, ["a", "b", "c"])
    assert built.preprocessing is not None and built.preprocessing.channels == 1
    assert built.head_params == ["model.classifier.weight", "model.classifier.bias"]
    assert built.model.model.config._attn_implementation == "eager"
    assert built.model(torch.zeros(2, 1, 28, 28)).shape == (2, 3)  # (batch, labels)
