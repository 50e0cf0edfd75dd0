"""``lumenserve import`` of runtime-only sources: ONNX files and TorchScript files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from lumenserve.bundle import BundleError, load_bundle
from lumenserve.bundle.eager import build_eager_model
from lumenserve.cli import main
from tests.import_sources import (
    IMAGE_SIZE,
    MEAN,
    STD,
    import_nhwc_classifier,
    onnx_nhwc_classifier,
    onnx_text_classifier,
    traced_tensor_model,
    two_in_two_out_graph,
)
from training.importer import ImportOptions, ImportSourceError, import_model
from training.importer.options import ImageFlags, parse_input_spec


def _run(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def _snapshot(repo: Path) -> list[str]:
    return sorted(str(p.relative_to(repo)) for p in repo.rglob("*")) if repo.exists() else ["<absent>"]


def test_onnx_nhwc_image_classifier_through_the_cli(tmp_path: Path) -> None:
    source, torch_model = onnx_nhwc_classifier(tmp_path)
    repo = tmp_path / "repo"
    result = import_nhwc_classifier(source, repo, "nhwc")
    assert result.exit_code == 0, result.output
    assert "imported" in result.output and "nhwc/1" in result.output

    bundle = load_bundle(repo / "nhwc" / "1")
    m = bundle.manifest
    assert (m.task, m.architecture, m.labels) == ("image-classification", None, ["alpha", "beta", "gamma", "delta"])
    pre = m.preprocessing
    assert pre is not None and pre.kind == "image"
    assert (pre.layout, pre.channel_order, pre.channels, pre.crop_size) == ("NHWC", "BGR", 3, IMAGE_SIZE)
    assert (pre.mean, pre.std, pre.resize_size) == (list(MEAN), list(STD), round(IMAGE_SIZE / 0.875))
    assert [(t.name, t.datatype, t.shape) for t in m.inputs] == [("image", "FP32", [-1, IMAGE_SIZE, IMAGE_SIZE, 3])]
    assert [(t.name, t.datatype, t.shape) for t in m.outputs] == [("scores", "FP32", [-1, 4])]
    assert m.imported is not None and m.imported.source_kind == "onnx" and m.imported.source == source.name
    assert m.imported.check_outputs[0].shape == [2, 4]
    assert json.loads((bundle.root / "labels.json").read_text()) == m.labels
    with pytest.raises(BundleError, match="no eager model"):
        build_eager_model(bundle)

    x = np.random.default_rng(1).standard_normal((3, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    (ours,) = _run(bundle.path("onnx"), {"image": x})
    (theirs,) = _run(source, {"image": x})
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    with torch.no_grad():
        eager = torch_model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, eager, atol=1e-4, rtol=0)


def test_two_input_two_output_int64_fp16_graph(tmp_path: Path) -> None:
    source = tmp_path / "two.onnx"
    onnx.save(two_in_two_out_graph(), str(source))
    bundle = import_model(source, tmp_path / "repo", "two")
    m = bundle.manifest
    assert (m.task, m.architecture, m.preprocessing, m.labels) == ("tensor", None, None, [])
    assert [(t.name, t.datatype, t.shape) for t in m.inputs] == [("ids", "INT64", [-1, 3]), ("x", "FP16", [-1, 3])]
    assert [(t.name, t.datatype, t.shape) for t in m.outputs] == [("total", "FP16", [-1, 3]), ("count", "INT64", [-1])]
    assert m.imported is not None
    assert [(t.name, t.shape) for t in m.imported.check_outputs] == [("total", [2, 3]), ("count", [2])]

    rng = np.random.default_rng(2)
    feed = {"ids": rng.integers(0, 9, (5, 3)).astype(np.int64), "x": rng.standard_normal((5, 3)).astype(np.float16)}
    ours, theirs = _run(bundle.path("onnx"), feed), _run(source, feed)
    for a, b in zip(ours, theirs, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ours[1], feed["ids"].sum(axis=1))


def test_onnx_with_external_data(tmp_path: Path) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    source = folder / "big.onnx"
    onnx.save_model(
        two_in_two_out_graph(), str(source), save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    bundle = import_model(source, tmp_path / "repo", "ext")
    kinds = {a.path: a.kind for a in bundle.manifest.artifacts}
    assert kinds == {"model.onnx": "onnx", "model.onnx.data": "onnx_data"}  # .bin would read as a pickle
    feed = {"ids": np.arange(6, dtype=np.int64).reshape(2, 3), "x": np.ones((2, 3), np.float16)}
    for a, b in zip(_run(bundle.path("onnx"), feed), _run(source, feed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_torchscript_tensor_model_with_input_flags(tmp_path: Path) -> None:
    source, model = traced_tensor_model(tmp_path)
    options = ImportOptions(inputs=(parse_input_spec("a:FP32:-1,4"), parse_input_spec("b:fp32:-1,4")))
    bundle = import_model(source, tmp_path / "repo", "ts", options)
    m = bundle.manifest
    assert m.imported is not None and m.imported.source_kind == "torchscript"
    assert [(t.name, t.datatype, t.shape) for t in m.outputs] == [
        ("output_0", "FP32", [-1, 4]),
        ("output_1", "INT64", [-1]),
    ]
    assert [a.kind for a in m.artifacts] == ["torchscript"]
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    scripted = torch.jit.load(str(bundle.path("torchscript")))
    for ours, theirs in zip(scripted(a, b), model(a, b), strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def test_torchscript_image_classifier(tmp_path: Path) -> None:
    _, model = onnx_nhwc_classifier(tmp_path)
    source = tmp_path / "nhwc.torchscript"
    torch.jit.save(torch.jit.trace(model, (torch.randn(2, IMAGE_SIZE, IMAGE_SIZE, 3),)), str(source))
    options = ImportOptions(task="image-classification", image=ImageFlags(image_size=IMAGE_SIZE, layout="NHWC"))
    bundle = import_model(source, tmp_path / "repo", "ts-image", options)
    m = bundle.manifest
    assert (m.task, m.labels, m.architecture) == ("image-classification", ["0", "1", "2", "3"], None)
    assert [(t.name, t.shape) for t in m.inputs] == [("x", [-1, IMAGE_SIZE, IMAGE_SIZE, 3])]
    assert [(t.name, t.datatype, t.shape) for t in m.outputs] == [("logits", "FP32", [-1, 4])]
    assert m.preprocessing is not None and m.preprocessing.kind == "image" and m.preprocessing.layout == "NHWC"
    x = torch.randn(3, IMAGE_SIZE, IMAGE_SIZE, 3)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(bundle.path("torchscript")))(x), model(x), atol=1e-5, rtol=0)


def test_onnx_text_classifier_with_a_fixed_sequence_axis(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from lumenserve.assets import minilm_dir

    source = onnx_text_classifier(tmp_path, seq=16)
    options = ImportOptions(task="text-classification", tokenizer_dir=minilm_dir())
    bundle = import_model(source, tmp_path / "repo", "text", options)
    m = bundle.manifest
    assert (m.task, m.labels, m.architecture) == ("text-classification", ["0", "1"], None)
    pre = m.preprocessing
    assert pre is not None and pre.kind == "text"
    assert (pre.tokenizer_dir, pre.max_length, pre.pad_to_max_length) == ("tokenizer", 16, True)
    assert [(t.name, t.shape) for t in m.inputs] == [("input_ids", [-1, 16]), ("attention_mask", [-1, 16])]
    assert any(a.kind == "tokenizer" for a in m.artifacts)
    tokenizer = AutoTokenizer.from_pretrained(bundle.subdir("tokenizer"))
    enc = tokenizer(["good", "not good at all"], padding="max_length", max_length=16, return_tensors="np")
    feed = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    np.testing.assert_array_equal(_run(bundle.path("onnx"), feed)[0], _run(source, feed)[0])
    with pytest.raises(ImportSourceError, match="fixed at 16"):
        import_model(source, tmp_path / "repo", "text", options.model_copy(update={"max_length": 32}))


def _refused(tmp_path: Path, source: Path, match: str, options: ImportOptions | None = None) -> str:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "keep").mkdir(exist_ok=True)
    before = _snapshot(repo)
    with pytest.raises(ImportSourceError, match=match) as info:
        import_model(source, repo, "bad", options)
    message = str(info.value)
    assert "\n" not in message
    assert str(source) in message or (options is not None and str(options.labels_file) in message)
    assert _snapshot(repo) == before
    return message


def test_onnx_opset_too_new_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "new.onnx"
    onnx.save(two_in_two_out_graph(opset=99), str(source))
    assert "re-export with opset" in _refused(tmp_path, source, "opset 99")


def test_onnx_operator_onnxruntime_cannot_run_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "custom.onnx"
    onnx.save(two_in_two_out_graph(domain_op="Sparkle"), str(source))
    assert "re-export" in _refused(tmp_path, source, "ONNX Runtime .* cannot run it")


def test_labels_that_do_not_fit_the_output_are_refused(tmp_path: Path) -> None:
    source, _ = onnx_nhwc_classifier(tmp_path)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(["a", "b", "c"]))
    options = ImportOptions(
        task="image-classification", labels_file=labels, image=ImageFlags(image_size=IMAGE_SIZE, layout="NHWC")
    )
    message = _refused(tmp_path, source, "3 labels but", options)
    assert str(labels) in message and "one label per class" in message


def test_wrong_layout_is_refused_with_the_fix(tmp_path: Path) -> None:
    source, _ = onnx_nhwc_classifier(tmp_path)
    options = ImportOptions(task="image-classification", image=ImageFlags(image_size=IMAGE_SIZE))
    assert "fix those flags" in _refused(tmp_path, source, "--layout NCHW", options)


def test_text_task_without_tokenizer_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "two.onnx"
    onnx.save(two_in_two_out_graph(), str(source))
    assert "--tokenizer DIR" in _refused(
        tmp_path, source, "needs a tokenizer", ImportOptions(task="text-classification")
    )


def test_pickles_are_refused(tmp_path: Path) -> None:
    whole_model = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), str(whole_model))
    assert "never loaded" in _refused(tmp_path, whole_model, "pickle")
    legacy = tmp_path / "model.pkl"
    torch.save(torch.nn.Linear(2, 2), str(legacy), _use_new_zipfile_serialization=False)
    assert "safetensors" in _refused(tmp_path, legacy, "pickle")


def test_torchscript_tensor_model_needs_input_specs(tmp_path: Path) -> None:
    source, _ = traced_tensor_model(tmp_path)
    assert "['a', 'b']" in _refused(tmp_path, source, "--input NAME:DATATYPE:SHAPE")


def test_cli_refusal_is_one_line_without_traceback(tmp_path: Path) -> None:
    pickled = tmp_path / "weights.pth"
    torch.save({"w": torch.zeros(2)}, str(pickled))
    repo = tmp_path / "repo"
    result = CliRunner().invoke(main, ["import", str(pickled), "--repository", str(repo)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert result.output.startswith(f"Error: {pickled}: a torch.save pickle")
    assert not repo.exists()


def test_failed_import_into_a_new_repository_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "custom.onnx"  # fails after staging: ONNX Runtime refuses the operator
    onnx.save(two_in_two_out_graph(domain_op="Sparkle"), str(source))
    with pytest.raises(ImportSourceError):
        import_model(source, tmp_path / "fresh", "bad")
    assert not (tmp_path / "fresh").exists()
