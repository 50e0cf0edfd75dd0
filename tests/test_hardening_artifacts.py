"""Artifacts: only safetensors / ONNX / TorchScript load, each sha256-checked against the
manifest; no pickle, no symlink or path leaving the bundle or the repository, no URL sources,
no network during load; archives stay inside their folder."""

from __future__ import annotations

import ast
import asyncio
import hashlib
import json
import os
import pickle
import shutil
import socket
import zipfile
from pathlib import Path
from typing import Any

import pytest

from lumenserve.bundle import Bundle, BundleError, check_model_name, list_models, list_versions, load_bundle
from serving.errors import InvalidInput
from serving.metrics import ServingMetrics
from serving.repository import ModelRepository
from serving.settings import ServingSettings

ROOT = Path(__file__).resolve().parent.parent


def copy_bundle(bundle: Bundle, repo: Path, name: str | None = None) -> Path:
    target = repo / (name or bundle.name) / str(bundle.version)
    shutil.copytree(bundle.root, target)
    if name:
        edit_manifest(target, lambda m: m.update(name=name))
    return target


def edit_manifest(folder: Path, change: Any) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def artifact(manifest: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(a for a in manifest["artifacts"] if a["kind"] == kind)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def bundle_dir(image_bundle: Bundle, tmp_path: Path) -> Path:
    return copy_bundle(image_bundle, tmp_path / "repo")


def test_an_untouched_copy_loads(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    assert {a.kind for a in bundle.manifest.artifacts} >= {"onnx", "torchscript", "safetensors"}


def test_a_changed_byte_fails_the_checksum(bundle_dir: Path) -> None:
    onnx = bundle_dir / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"checksum mismatch for 'model.onnx'"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".pkl", ".bin", ".ckpt"])
def test_pickle_files_are_refused_by_name(bundle_dir: Path, suffix: str) -> None:
    evil = bundle_dir / f"weights{suffix}"
    evil.write_bytes(pickle.dumps({"w": 1}))
    edit_manifest(
        bundle_dir, lambda m: m["artifacts"].append({"path": evil.name, "kind": "safetensors", "sha256": sha(evil)})
    )
    with pytest.raises(BundleError, match="refusing pickle artifact"):
        load_bundle(bundle_dir)


def test_a_pickle_disguised_as_onnx_is_refused_by_content(bundle_dir: Path) -> None:
    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, ("echo pwned",))

    onnx = bundle_dir / "model.onnx"
    onnx.write_bytes(pickle.dumps(Exploit(), protocol=4))
    edit_manifest(bundle_dir, lambda m: artifact(m, "onnx").update(sha256=sha(onnx)))
    with pytest.raises(BundleError, match="file content is a pickle"):
        load_bundle(bundle_dir)


def test_a_torch_save_archive_posing_as_torchscript_is_refused(bundle_dir: Path) -> None:
    import torch

    fake = bundle_dir / "model.torchscript"
    torch.save({"state": torch.zeros(2)}, fake)  # a zip holding data.pkl, no TorchScript code
    edit_manifest(bundle_dir, lambda m: artifact(m, "torchscript").update(sha256=sha(fake)))
    with pytest.raises(BundleError, match=r"a torch\.save pickle, not TorchScript"):
        load_bundle(bundle_dir)


def test_unknown_artifact_kinds_are_refused(bundle_dir: Path) -> None:
    edit_manifest(bundle_dir, lambda m: artifact(m, "onnx").update(kind="pickle"))
    with pytest.raises(BundleError, match="invalid manifest"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize(
    "path", ["../../outside.onnx", "/etc/passwd", "sub/../../x.onnx", "a\\..\\..\\x", "x\x00.onnx"]
)
def test_artifact_paths_cannot_leave_the_bundle(bundle_dir: Path, path: str) -> None:
    (bundle_dir.parent.parent / "outside.onnx").write_bytes((bundle_dir / "model.onnx").read_bytes())
    edit_manifest(bundle_dir, lambda m: artifact(m, "onnx").update(path=path))
    with pytest.raises(BundleError, match="escapes the bundle folder"):
        load_bundle(bundle_dir)


def test_an_artifact_symlink_leaving_the_bundle_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.onnx"
    shutil.move(bundle_dir / "model.onnx", outside)
    (bundle_dir / "model.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match="escapes the bundle folder"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize("url", ["https://example.com/model.onnx", "s3://bucket/model.onnx", "file:///etc/passwd"])
def test_url_sources_are_never_fetched(bundle_dir: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access during load: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    edit_manifest(bundle_dir, lambda m: artifact(m, "onnx").update(path=url))
    with pytest.raises(BundleError, match=r"missing|escapes"):
        load_bundle(bundle_dir)


def test_loading_and_serving_a_bundle_opens_no_network_connection(
    image_bundle: Bundle, text_bundle: Bundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No phone-home: verify, build both runtimes, tokenise and predict with sockets forbidden."""
    from lumenserve.bundle.eager import load_tokenizer
    from serving.runtimes.onnx import OnnxRuntime
    from serving.runtimes.torchscript import TorchScriptRuntime

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    assert os.environ.get("ORT_DISABLE_TELEMETRY") == "1" and os.environ.get("HF_HUB_OFFLINE") == "1"
    for bundle in (load_bundle(image_bundle.root), load_bundle(text_bundle.root)):
        for runtime in (
            OnnxRuntime(bundle, device="cpu", intra_threads=1, inter_threads=1),
            TorchScriptRuntime(bundle, device="cpu", threads=0),
        ):
            if bundle.manifest.task == "text-classification":
                encoded = load_tokenizer(bundle)(["hello"], return_tensors="np")
                feed = {k: encoded[k].astype("int64") for k in ("input_ids", "attention_mask")}
            else:
                import numpy as np

                feed = {"input": np.zeros((1, 3, 32, 32), dtype=np.float32)}  # (batch, C, H, W)
            assert "logits" in runtime.predict(feed)


def test_network_client_libraries_stay_out_of_the_loading_code() -> None:
    """Static check: the bundle reader, runtimes and repository import no URL-fetching library."""
    banned = {"urllib.request", "requests", "httpx", "http.client", "aiohttp", "urllib3", "huggingface_hub"}
    files = [
        *sorted((ROOT / "lumenserve" / "bundle").glob("*.py")),
        *sorted((ROOT / "serving" / "runtimes").glob("*.py")),
        ROOT / "serving" / "repository.py",
        ROOT / "serving" / "model.py",
    ]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not banned & set(names), f"{path.relative_to(ROOT)} imports {banned & set(names)}"


# ---- repository level ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["..", "../x", "a/b", "x\x00", "tiny image", " tiny", "tiny\n", "", ".", "a..b"])
def test_model_names_that_could_leave_the_repository_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="invalid model name"):
        check_model_name(name)
    repo = tmp_path / "repo"
    repo.mkdir()
    repository = ModelRepository(ServingSettings(repository=repo), ServingMetrics())
    with pytest.raises(InvalidInput, match="invalid model name"):
        asyncio.run(repository.load(name))


def test_symlinked_model_and_version_folders_are_not_served(image_bundle: Bundle, tmp_path: Path) -> None:
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    copy_bundle(image_bundle, outside, name="evil")  # a valid bundle outside the repository
    copy_bundle(image_bundle, repo, name="good")
    (repo / "evil").symlink_to(outside / "evil", target_is_directory=True)
    (repo / "good" / "2").symlink_to(outside / "evil" / "1", target_is_directory=True)
    assert list_models(repo) == ["good"]
    assert list_versions(repo / "good") == [1]
    repository = ModelRepository(ServingSettings(repository=repo), ServingMetrics())
    with pytest.raises(InvalidInput, match="leaves the model repository"):
        asyncio.run(repository.load("evil"))


# ---- archives (TorchServe .mar) -----------------------------------------------------------
def test_built_archives_hold_no_entry_that_could_leave_the_extraction_folder(
    image_bundle: Bundle, tmp_path: Path
) -> None:
    from serving.torchserve.archive import build_archive

    mar = build_archive(image_bundle, tmp_path / "store")
    with zipfile.ZipFile(mar) as archive:
        infos = archive.infolist()
    assert infos
    for info in infos:
        name = info.filename
        assert not name.startswith(("/", "\\")) and ".." not in Path(name).parts and ":" not in name, name
        assert (info.external_attr >> 16) & 0o170000 != 0o120000, f"{name} is a symlink"


def test_handler_refuses_a_bundle_symlinked_out_of_the_extracted_archive(image_bundle: Bundle, tmp_path: Path) -> None:
    from serving.torchserve.config import BUNDLE_DIR_IN_MAR
    from serving.torchserve.service import find_bundle

    extracted, outside = tmp_path / "extracted", tmp_path / "outside"
    copy_bundle(image_bundle, outside)
    (extracted / BUNDLE_DIR_IN_MAR / image_bundle.name).mkdir(parents=True)
    (extracted / BUNDLE_DIR_IN_MAR / image_bundle.name / "1").symlink_to(outside / image_bundle.name / "1")
    with pytest.raises(BundleError, match="leaves the extracted archive"):
        find_bundle(extracted)
    shutil.rmtree(extracted)
    copy_bundle(image_bundle, extracted / BUNDLE_DIR_IN_MAR)
    assert find_bundle(extracted) == extracted / BUNDLE_DIR_IN_MAR / image_bundle.name / "1"
