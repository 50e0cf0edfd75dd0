"""The exporter writes verified bundles whose parity is recorded and whose eager twin rebuilds."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from lumenserve.bundle import Bundle, load_bundle
from lumenserve.bundle.eager import build_eager_model, load_tokenizer
from training.export import DEFAULT_TOLERANCE

pytestmark = pytest.mark.export


@pytest.mark.parametrize("fixture", ["image_bundle", "text_bundle"])
def test_parity_recorded_and_within_tolerance(fixture: str, request: pytest.FixtureRequest) -> None:
    bundle: Bundle = request.getfixturevalue(fixture)
    bundle = load_bundle(bundle.root)
    runtimes = {p.runtime: p for p in bundle.manifest.parity}
    assert set(runtimes) == {"onnx", "torchscript"}
    for record in runtimes.values():
        assert record.max_abs_diff <= DEFAULT_TOLERANCE
        assert len(record.batch_sizes) >= 2


def test_image_eager_twin_matches_onnx(image_bundle: Bundle) -> None:
    model = build_eager_model(image_bundle)
    x = torch.randn(3, 3, 32, 32)
    session = ort.InferenceSession(str(image_bundle.path("onnx")), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(["logits"], {"input": x.numpy()})
    with torch.no_grad():
        eager = model(x).numpy()
    assert np.abs(onnx_logits - eager).max() < 1e-4


def test_text_bundle_has_dynamic_axes_and_attentions(text_bundle: Bundle) -> None:
    tokenizer = load_tokenizer(text_bundle)
    enc = tokenizer(["one", "a much longer sentence than the first"], padding=True, return_tensors="np")
    session = ort.InferenceSession(str(text_bundle.path("onnx")), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    seq = enc["input_ids"].shape[1]
    assert outputs[0].shape == (2, 2)
    assert [o.name for o in session.get_outputs()] == ["logits", "attention_0", "attention_1"]
    assert outputs[1].shape == (2, 2, seq, seq)
    model = build_eager_model(text_bundle)
    with torch.no_grad():
        eager = model(
            input_ids=torch.from_numpy(enc["input_ids"]), attention_mask=torch.from_numpy(enc["attention_mask"])
        )
    assert np.abs(eager.logits.numpy() - outputs[0]).max() < 1e-4


@pytest.mark.parametrize(
    ("arch", "size", "expected"),
    [
        ("mobilenet_v2", 224, "features.18"),  # the last stage is 7 x 7
        ("mobilenet_v2", 64, "features.6"),  # the last stage is 2 x 2; features.6 is 8 x 8
        ("resnet18", 32, "layer1"),  # 8 x 8; layer2..4 are 4, 2, 1 cells a side
        ("resnet18", 16, "layer1"),  # none reaches 7: the largest map (4 x 4)
    ],
)
def test_default_gradcam_layer_follows_the_input_size(arch: str, size: int, expected: str) -> None:
    import torchvision

    from training.export import cam_layer_for_size
    from training.export_run import gradcam_candidates

    model = torchvision.models.get_model(arch, weights=None, num_classes=3)
    image = torch.zeros(1, 3, size, size)
    assert cam_layer_for_size(model, gradcam_candidates(model), image) == expected
    assert model.training  # the probe leaves the mode as it found it
    assert cam_layer_for_size(model, ["fc", "avgpool.missing"], image) is None  # no spatial map
