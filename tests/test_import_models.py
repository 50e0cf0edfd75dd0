"""``lumenserve import`` of sources with eager weights: Hugging Face folders and torchvision
architecture + weights. Each bundle keeps safetensors weights and records export parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from lumenserve.bundle import load_bundle
from lumenserve.bundle.eager import build_eager_model, load_tokenizer
from tests.import_sources import IMAGE_SIZE, MEAN, STD, hf_text_folder, torchvision_weights, vit_folder
from training.importer import ImportOptions, ImportSourceError, import_model
from training.importer.options import ImageFlags

TOLERANCE = 1e-4


def _onnx(path: Path, feed: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def _parity_ok(bundle_parity: list, runtimes: set[str]) -> None:
    assert {p.runtime for p in bundle_parity} == runtimes
    assert all(p.max_abs_diff <= p.tolerance == TOLERANCE for p in bundle_parity)


@pytest.mark.export
@pytest.mark.slow
def test_hf_text_classifier_folder(tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    folder = hf_text_folder(tmp_path / "hf-text", ["neg", "neu", "pos"])
    bundle = import_model(folder, tmp_path / "repo", "sentiment")
    m = bundle.manifest
    assert (m.task, m.labels) == ("text-classification", ["neg", "neu", "pos"])
    assert m.architecture is not None and m.architecture.family == "transformers"
    assert m.architecture.model_type == "distilbert" and m.architecture.head == "sequence-classification"
    assert m.preprocessing is not None and m.preprocessing.kind == "text" and m.preprocessing.max_length == 64
    assert [t.name for t in m.inputs] == ["input_ids", "attention_mask"] and m.outputs[0].shape == [-1, 3]
    assert {a.kind for a in m.artifacts} >= {"onnx", "torchscript", "safetensors", "tokenizer", "config"}
    assert m.imported is not None and m.imported.source_kind == "hf" and m.imported.source_sha256 is None
    _parity_ok(m.parity, {"onnx", "torchscript"})

    source = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation="eager").eval()
    enc = load_tokenizer(bundle)(
        ["a fine day", "the worst film I have seen this year"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        expected = source(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.numpy()
        rebuilt = build_eager_model(bundle)(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    feed = {"input_ids": enc["input_ids"].numpy(), "attention_mask": enc["attention_mask"].numpy()}
    np.testing.assert_allclose(_onnx(bundle.path("onnx"), feed), expected, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(rebuilt.numpy(), expected, atol=1e-6, rtol=0)


@pytest.mark.export
@pytest.mark.slow
def test_hf_vit_image_classifier_folder(tmp_path: Path) -> None:
    from transformers import AutoModelForImageClassification

    folder = vit_folder(tmp_path / "vit", ["cat", "dog", "fox"])
    bundle = import_model(folder, tmp_path / "repo", "vit")
    m = bundle.manifest
    assert (m.task, m.labels) == ("image-classification", ["cat", "dog", "fox"])
    assert m.architecture is not None and m.architecture.family == "transformers"
    assert m.architecture.head == "image-classification" and m.architecture.model_type == "vit"
    pre = m.preprocessing
    assert pre is not None and pre.kind == "image"
    assert (pre.crop_size, pre.resize_size, pre.layout, pre.channels) == (IMAGE_SIZE, IMAGE_SIZE, "NCHW", 3)
    assert (pre.mean, pre.std) == (list(MEAN), list(STD))
    assert m.inputs[0].shape == [-1, 3, IMAGE_SIZE, IMAGE_SIZE] and m.outputs[0].shape == [-1, 3]
    _parity_ok(m.parity, {"onnx", "torchscript"})

    x = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(5))
    source = AutoModelForImageClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        expected = source(pixel_values=x).logits.numpy()
        rebuilt = build_eager_model(bundle)(x).numpy()  # images -> logits, like torchvision bundles
    np.testing.assert_allclose(_onnx(bundle.path("onnx"), {"input": x.numpy()}), expected, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(rebuilt, expected, atol=1e-6, rtol=0)

    from explain.engine import BundleExplainer  # the kept eager weights make gradient methods work

    explainer = BundleExplainer(bundle)
    assert explainer.twin_check(lambda feed: _onnx(bundle.path("onnx"), feed)).ok
    result = explainer.explain({"input": x.numpy()}, method="saliency")
    assert [item.predicted for item in result.items] == expected.argmax(axis=1).tolist()
    assert result.items[0].attributions.shape[-2:] == (IMAGE_SIZE, IMAGE_SIZE) and result.items[0].pngs


@pytest.mark.export
@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_torchvision_architecture_and_weights(tmp_path: Path, suffix: str) -> None:
    weights = tmp_path / f"resnet18{suffix}"
    source = torchvision_weights(weights, classes=5)
    options = ImportOptions(architecture="resnet18", image=ImageFlags(image_size=IMAGE_SIZE, mean=MEAN, std=STD))
    bundle = import_model(weights, tmp_path / "repo", "resnet", options)
    m = bundle.manifest
    assert m.task == "image-classification" and m.labels == ["0", "1", "2", "3", "4"]
    assert m.architecture is not None and m.architecture.family == "torchvision"
    assert (m.architecture.name, m.architecture.num_classes, m.architecture.gradcam_layer) == (
        "resnet18",
        5,
        "layer1.1.conv2",  # at 32 px the deepest conv with a map of 7 x 7 or more (8 x 8)
    )
    assert m.preprocessing is not None and m.preprocessing.kind == "image" and m.preprocessing.mean == list(MEAN)
    assert not any(a.path.endswith((".pth", ".pt")) for a in m.artifacts)
    assert m.imported is not None and m.imported.source_kind == "torchvision"
    assert ("converted to safetensors" in m.imported.notes[0]) == (suffix == ".pth")
    _parity_ok(m.parity, {"onnx", "torchscript"})

    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = source(x).numpy()
        rebuilt = build_eager_model(bundle)(x).numpy()
    np.testing.assert_allclose(_onnx(bundle.path("onnx"), {"input": x.numpy()}), expected, atol=TOLERANCE, rtol=0)
    np.testing.assert_array_equal(rebuilt, expected)
    assert load_bundle(bundle.root).manifest == m


def _refused(repo: Path, source: Path, match: str, options: ImportOptions | None = None) -> str:
    repo.mkdir(exist_ok=True)
    before = sorted(repo.rglob("*"))
    with pytest.raises(ImportSourceError, match=match) as info:
        import_model(source, repo, "bad", options)
    assert "\n" not in str(info.value)
    assert sorted(repo.rglob("*")) == before
    return str(info.value)


def test_hf_unsupported_head_is_refused(tmp_path: Path) -> None:
    folder = hf_text_folder(tmp_path / "mlm", ["a", "b"], head="masked-lm")
    message = _refused(tmp_path / "repo", folder, "unsupported head")
    assert "DistilBertForMaskedLM" in message and str(folder / "config.json") in message


def test_hf_folder_without_tokenizer_is_refused(tmp_path: Path) -> None:
    folder = hf_text_folder(tmp_path / "no-tok", ["a", "b"], with_tokenizer=False)
    assert "tokenizer.save_pretrained" in _refused(tmp_path / "repo", folder, "no tokenizer")


def test_hf_pickled_weights_are_refused(tmp_path: Path) -> None:
    folder = hf_text_folder(tmp_path / "pickled", ["a", "b"])
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    assert "safe_serialization=True" in _refused(tmp_path / "repo", folder, "pickled weights are never loaded")


def test_torchvision_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    weights = tmp_path / "resnet18.safetensors"
    torchvision_weights(weights)
    options = ImportOptions(architecture="squeezenet1_1", image=ImageFlags(image_size=IMAGE_SIZE))
    assert "do not fit squeezenet1_1" in _refused(tmp_path / "repo", weights, str(weights), options)


def test_torchvision_pickled_module_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "whole.pth"
    torch.save(torch.nn.Linear(2, 2), str(path))
    options = ImportOptions(architecture="resnet18")
    assert "never loaded" in _refused(tmp_path / "repo", path, "not a weights-only state dict", options)
