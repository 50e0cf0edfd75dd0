"""The manifest fields added for imported models: optional, validated, and bundles written
before them still load."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from lumenserve.bundle import ImagePreprocessing, Manifest

SHA = "0" * 64


def _tensor_manifest(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "format_version": 1,
        "name": "m",
        "version": 1,
        "task": "tensor",
        "inputs": [{"name": "x", "datatype": "FP16", "shape": [-1, 3]}],
        "outputs": [{"name": "y", "datatype": "INT64", "shape": [-1]}],
        "artifacts": [{"path": "model.onnx", "kind": "onnx", "sha256": SHA}],
    }
    return {**raw, **changes}


def _old_image_manifest() -> dict[str, Any]:
    """A manifest as the exporter wrote it before the import fields existed."""
    return {
        "format_version": 1,
        "name": "old",
        "version": 3,
        "task": "image-classification",
        "architecture": {"family": "torchvision", "name": "mobilenet_v2", "num_classes": 2, "gradcam_layer": None},
        "labels": ["a", "b"],
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 8, 8]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 2]}],
        "preprocessing": {
            "kind": "image",
            "resize_size": 9,
            "crop_size": 8,
            "mean": [0, 0, 0],
            "std": [1, 1, 1],
            "channels": 3,
            "interpolation": "bilinear",
        },
        "artifacts": [{"path": "model.onnx", "kind": "onnx", "sha256": SHA}],
        "parity": [],
        "training": {},
        "created_at": "2026-01-01T00:00:00+00:00",
    }


def test_manifests_written_before_the_import_fields_still_load() -> None:
    m = Manifest.model_validate(_old_image_manifest())
    assert m.imported is None
    assert isinstance(m.preprocessing, ImagePreprocessing)
    assert (m.preprocessing.layout, m.preprocessing.channel_order) == ("NCHW", "RGB")


def test_tensor_manifest_needs_no_architecture_labels_or_preprocessing() -> None:
    m = Manifest.model_validate(_tensor_manifest())
    assert (m.architecture, m.labels, m.preprocessing) == (None, [], None)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"preprocessing": {"kind": "text", "tokenizer_dir": "t", "max_length": 8}}, "takes no preprocessing"),
        ({"artifacts": [{"path": "labels.json", "kind": "config", "sha256": SHA}]}, "needs an onnx or torchscript"),
        ({"task": "image-classification", "labels": ["a", "b"]}, "preprocessing kind None"),
    ],
)
def test_tensor_manifest_rules(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Manifest.model_validate(_tensor_manifest(**changes))


def test_classification_needs_labels_and_bgr_needs_three_channels() -> None:
    raw = _old_image_manifest()
    with pytest.raises(ValidationError, match="needs at least 2 labels"):
        Manifest.model_validate({**raw, "architecture": None, "labels": []})
    with pytest.raises(ValidationError, match="BGR needs 3 channels"):
        ImagePreprocessing(resize_size=8, crop_size=8, mean=[0.5], std=[0.5], channels=1, channel_order="BGR")
