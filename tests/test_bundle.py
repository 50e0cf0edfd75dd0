"""The bundle reader accepts a valid bundle and refuses each kind of bad one by name."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from lumenserve.bundle import BundleError, load_bundle, version_dir
from lumenserve.bundle.reader import sha256_file
from tests.support.toy_bundle import make_toy_bundle


def _rewrite_manifest(bundle_root: Path, edit) -> None:  # type: ignore[no-untyped-def]
    path = bundle_root / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_valid_bundle_loads(tmp_path: Path) -> None:
    bundle = make_toy_bundle(tmp_path)
    again = load_bundle(bundle.root)
    assert again.manifest.name == "toy" and again.version == 1
    assert again.path("onnx").name == "model.onnx"
    assert version_dir(tmp_path, "toy") == bundle.root
    assert make_toy_bundle(tmp_path).version == 2  # writer publishes the next version


def test_wrong_checksum_refused(tmp_path: Path) -> None:
    bundle = make_toy_bundle(tmp_path)
    (bundle.root / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(BundleError, match=r"checksum mismatch for 'model.onnx'"):
        load_bundle(bundle.root)


def test_missing_file_refused(tmp_path: Path) -> None:
    bundle = make_toy_bundle(tmp_path)
    (bundle.root / "model.safetensors").unlink()
    with pytest.raises(BundleError, match=r"artifact 'model.safetensors' is missing"):
        load_bundle(bundle.root)


def test_unknown_format_version_refused(tmp_path: Path) -> None:
    bundle = make_toy_bundle(tmp_path)
    _rewrite_manifest(bundle.root, lambda m: m.update(format_version=99))
    with pytest.raises(BundleError, match=r"unsupported bundle format version 99"):
        load_bundle(bundle.root)


@pytest.mark.parametrize("bad_path", ["../outside.onnx", "/etc/passwd", "sub/../../x.onnx"])
def test_path_escaping_bundle_refused(tmp_path: Path, bad_path: str) -> None:
    bundle = make_toy_bundle(tmp_path)
    outside = tmp_path / "toy" / "outside.onnx"
    outside.write_bytes(b"x")

    def edit(m: dict) -> None:  # type: ignore[type-arg]
        m["artifacts"][0]["path"] = bad_path

    _rewrite_manifest(bundle.root, edit)
    with pytest.raises(BundleError, match=r"escapes the bundle folder"):
        load_bundle(bundle.root)


def test_symlink_escaping_bundle_refused(tmp_path: Path) -> None:
    bundle = make_toy_bundle(tmp_path)
    secret = tmp_path / "secret.onnx"
    secret.write_bytes(b"not yours")
    onnx = bundle.root / "model.onnx"
    onnx.unlink()
    onnx.symlink_to(secret)
    with pytest.raises(BundleError, match=r"escapes the bundle folder"):
        load_bundle(bundle.root)


def _swap_artifact(bundle_root: Path, kind: str, new_name: str, content: bytes) -> None:
    (bundle_root / new_name).write_bytes(content)

    def edit(m: dict) -> None:  # type: ignore[type-arg]
        for a in m["artifacts"]:
            if a["kind"] == kind:
                a["path"] = new_name
                a["sha256"] = sha256_file(bundle_root / new_name)

    _rewrite_manifest(bundle_root, edit)


def test_pickle_by_suffix_refused(tmp_path: Path) -> None:
    bundle = make_toy_bundle(tmp_path)
    _swap_artifact(bundle.root, "safetensors", "weights.pth", b"anything")
    with pytest.raises(BundleError, match=r"refusing pickle artifact 'weights.pth'"):
        load_bundle(bundle.root)


def test_pickle_by_content_refused(tmp_path: Path) -> None:
    bundle = make_toy_bundle(tmp_path)
    _swap_artifact(bundle.root, "safetensors", "weights.safetensors2", pickle.dumps({"w": 1}, protocol=4))
    with pytest.raises(BundleError, match=r"refusing pickle artifact .*content is a pickle"):
        load_bundle(bundle.root)


def test_torch_save_posing_as_torchscript_refused(tmp_path: Path) -> None:
    bundle = make_toy_bundle(tmp_path)
    fake = bundle.root / "fake.torchscript"
    torch.save({"w": torch.zeros(2)}, fake)
    _swap_artifact(bundle.root, "torchscript", "fake2.torchscript", fake.read_bytes())
    with pytest.raises(BundleError, match=r"torch.save pickle, not TorchScript"):
        load_bundle(bundle.root)


def test_unknown_artifact_kind_refused(tmp_path: Path) -> None:
    bundle = make_toy_bundle(tmp_path)
    _rewrite_manifest(bundle.root, lambda m: m["artifacts"][0].update(kind="pickle"))
    with pytest.raises(BundleError, match=r"invalid manifest: artifacts.0.kind"):
        load_bundle(bundle.root)


def test_invalid_json_refused(tmp_path: Path) -> None:
    bundle = make_toy_bundle(tmp_path)
    (bundle.root / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match=r"not valid JSON"):
        load_bundle(bundle.root)


@pytest.mark.parametrize("name", ["..", "a/b", "a\x00b", " spaced", ""])
def test_bad_model_names_refused(tmp_path: Path, name: str) -> None:
    make_toy_bundle(tmp_path)
    with pytest.raises(BundleError, match=r"invalid model name"):
        version_dir(tmp_path, name)
