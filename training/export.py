"""Export a fine-tuned model to a bundle: ONNX + TorchScript + safetensors, proven by parity.

Export is a function that proves its own parity (the timm way): the ONNX checker runs, and
ONNX Runtime and TorchScript outputs are compared with eager on held-out inputs at two batch
sizes (and, for text, two sequence lengths). The max abs difference is recorded in the
manifest and export fails loudly above ``tolerance`` (default 1e-4).
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

import lumenserve.env  # noqa: F401  (ORT_DISABLE_TELEMETRY before onnxruntime)
from lumenserve.bundle import Bundle, ImagePreprocessing, finish_bundle, new_staging_dir, tree_artifacts
from lumenserve.bundle.manifest import ArtifactKind

DEFAULT_TOLERANCE = 1e-4
PARITY_BATCH_SIZES = (1, 4)
MIN_CAM_SIDE = 7
"""Grad-CAM's default layer is the deepest whose map has at least this many cells per side at
the bundle's input size: the last stage of MobileNetV2 or ResNet at 224 px (7 x 7), an earlier
stage at small sizes (MobileNetV2 at 64 px: ``features.6``, 8 x 8, not the last stage's 2 x 2)."""


class ExportParityError(RuntimeError):
    """An exported artifact's outputs differ from eager by more than the tolerance."""


def cam_layer_for_size(model: torch.nn.Module, candidates: Sequence[str], image: torch.Tensor) -> str | None:
    """The deepest of ``candidates`` (module paths, shallow to deep) whose output on ``image``
    (1, C, H, W) is at least ``MIN_CAM_SIDE`` per side; if none is, the one with the largest
    map (the deeper on ties); None when no candidate gives a spatial map."""
    modules = dict(model.named_modules())
    sides: dict[str, int] = {}

    def record(name: str) -> Any:
        def hook(_module: torch.nn.Module, _args: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor) and out.dim() == 4:  # (batch, channels, h, w)
                sides[name] = min(out.shape[-2:])

        return hook

    handles = [modules[n].register_forward_hook(record(n)) for n in candidates if n in modules]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(image)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    spatial = [n for n in candidates if n in sides]
    if not spatial:
        return None
    large = [n for n in spatial if sides[n] >= MIN_CAM_SIDE]
    return large[-1] if large else max(reversed(spatial), key=lambda n: sides[n])


class _TextWrapper(torch.nn.Module):
    """(input_ids, attention_mask) -> (logits, attention_0, ..., attention_{L-1})."""

    def __init__(self, model: torch.nn.Module, with_attentions: bool) -> None:
        super().__init__()
        self.model = model
        self.with_attentions = with_attentions

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_attentions=self.with_attentions)
        # logits: (batch, labels); each attention: (batch, heads, seq, seq)
        return (out.logits, *(out.attentions or ()))


def _quiet() -> warnings.catch_warnings:  # type: ignore[type-arg]
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore")
    return ctx


def _to_onnx(
    module: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic: tuple[dict[int, Any], ...],
) -> None:
    ctx = _quiet()
    try:
        torch.onnx.export(
            module,
            example,
            str(path),
            dynamo=True,
            external_data=False,
            verbose=False,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=dynamic,
        )
    finally:
        ctx.__exit__(None, None, None)
    onnx.checker.check_model(str(path), full_check=True)


def _to_torchscript(module: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> None:
    ctx = _quiet()
    try:
        traced = torch.jit.trace(module, example, check_trace=False, strict=False)
        torch.jit.save(traced, str(path))
    finally:
        ctx.__exit__(None, None, None)


def _max_diff(reference: Sequence[torch.Tensor], other: Sequence[np.ndarray | torch.Tensor]) -> float:
    diffs = [float(np.max(np.abs(np.asarray(o) - r.numpy()))) for r, o in zip(reference, other, strict=True)]
    return max(diffs)


def _check_parity(
    module: torch.nn.Module,
    onnx_path: Path,
    ts_path: Path,
    batches: Sequence[tuple[torch.Tensor, ...]],
    input_names: list[str],
    tolerance: float,
) -> list[dict[str, Any]]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ctx = _quiet()
    try:
        scripted = torch.jit.load(str(ts_path))
    finally:
        ctx.__exit__(None, None, None)
    worst = {"onnx": 0.0, "torchscript": 0.0}
    with torch.no_grad():
        for batch in batches:
            expected = module(*batch)
            expected = expected if isinstance(expected, tuple) else (expected,)
            got_onnx = session.run(None, {n: t.numpy() for n, t in zip(input_names, batch, strict=True)})
            got_ts = scripted(*batch)
            got_ts = got_ts if isinstance(got_ts, tuple) else (got_ts,)
            worst["onnx"] = max(worst["onnx"], _max_diff(expected, got_onnx))
            worst["torchscript"] = max(worst["torchscript"], _max_diff(expected, [t.numpy() for t in got_ts]))
    sizes = sorted({int(b[0].shape[0]) for b in batches})
    for runtime, diff in worst.items():
        if diff > tolerance:
            raise ExportParityError(
                f"{runtime} export differs from eager by {diff:.3g} (tolerance {tolerance:g}) on batch sizes {sizes}"
            )
    return [
        {"runtime": rt, "batch_sizes": sizes, "max_abs_diff": diff, "tolerance": tolerance}
        for rt, diff in worst.items()
    ]


def _finish(
    staging: Path,
    artifacts: list[tuple[str, ArtifactKind]],
    extra_files: Sequence[tuple[Path, str, ArtifactKind]],
    fields: dict[str, Any],
) -> Bundle:
    for src, rel, kind in extra_files:
        dest = staging / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        artifacts.append((rel, kind))
    return finish_bundle(staging, artifacts, **fields)


def export_image_model(
    model: torch.nn.Module,
    *,
    arch_name: str,
    labels: list[str],
    preprocessing: ImagePreprocessing,
    repo: str | Path,
    name: str,
    training: dict[str, Any] | None = None,
    sample_inputs: torch.Tensor | None = None,
    gradcam_layer: str | Sequence[str] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    extra_files: Sequence[tuple[Path, str, ArtifactKind]] = (),
    imported: dict[str, Any] | None = None,
    hf_config: Any = None,
) -> Bundle:
    """Write ``REPO/NAME/N`` for a torchvision classifier (``get_model(arch_name, num_classes=...)``),
    or, with ``hf_config``, a transformers image classifier wrapped in ``HFImageClassifier``.

    ``sample_inputs``: held-out preprocessed images (batch, C, H, W) for the parity check;
    random inputs of the right shape when None. ``gradcam_layer``: the default Grad-CAM layer,
    or candidate layers (shallow to deep) to pick it from at the input size (``cam_layer_for_size``).
    """
    model = model.eval().cpu()
    c, size = preprocessing.channels, preprocessing.crop_size
    if sample_inputs is None:
        sample_inputs = torch.randn(max(PARITY_BATCH_SIZES), c, size, size, generator=torch.Generator().manual_seed(0))
    held_out = sample_inputs.float().cpu()  # (batch, C, H, W)
    if gradcam_layer is not None and not isinstance(gradcam_layer, str):
        gradcam_layer = cam_layer_for_size(model, gradcam_layer, held_out[:1])
    batches = [(held_out[: min(b, len(held_out))],) for b in PARITY_BATCH_SIZES]
    staging = new_staging_dir(repo, name)
    try:
        batch = torch.export.Dim("batch", min=1, max=4096)
        _to_onnx(model, (held_out[:2],), staging / "model.onnx", ["input"], ["logits"], ({0: batch},))
        _to_torchscript(model, (held_out[:2],), staging / "model.torchscript")
        from safetensors.torch import save_model

        save_model(model, str(staging / "model.safetensors"))
        parity = _check_parity(
            model, staging / "model.onnx", staging / "model.torchscript", batches, ["input"], tolerance
        )
        (staging / "labels.json").write_text(json.dumps(labels, indent=1))
        artifacts: list[tuple[str, ArtifactKind]] = [
            ("model.onnx", "onnx"),
            ("model.torchscript", "torchscript"),
            ("model.safetensors", "safetensors"),
            ("labels.json", "config"),
        ]
        architecture: dict[str, Any] = {
            "family": "torchvision",
            "name": arch_name,
            "num_classes": len(labels),
            "gradcam_layer": gradcam_layer,
        }
        if hf_config is not None:
            hf_config.save_pretrained(staging / "hf_config")
            artifacts += tree_artifacts(staging, "hf_config", "config")
            architecture = {
                "family": "transformers",
                "config_dir": "hf_config",
                "num_labels": len(labels),
                "model_type": str(getattr(hf_config, "model_type", arch_name)),
                "head": "image-classification",
                "gradcam_layer": gradcam_layer,
            }
        fields = {
            "name": name,
            "task": "image-classification",
            "architecture": architecture,
            "labels": labels,
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, c, size, size]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, len(labels)]}],
            "preprocessing": preprocessing.model_dump(),
            "parity": parity,
            "training": training or {},
            "imported": imported,
        }
        return _finish(staging, artifacts, extra_files, fields)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def export_text_model(
    model: torch.nn.Module,
    tokenizer: Any,
    *,
    labels: list[str],
    max_length: int,
    repo: str | Path,
    name: str,
    training: dict[str, Any] | None = None,
    sample_texts: Sequence[str] | None = None,
    with_attentions: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
    extra_files: Sequence[tuple[Path, str, ArtifactKind]] = (),
    imported: dict[str, Any] | None = None,
) -> Bundle:
    """Write ``REPO/NAME/N`` for a transformers sequence classifier (built with eager attention).

    ONNX gets dynamic batch and sequence axes and, with ``with_attentions``, one extra output
    per layer ``attention_{i}`` of shape (batch, heads, seq, seq).
    """
    model = model.eval().cpu()
    config: Any = model.config
    layers = int(config.num_hidden_layers) if with_attentions else 0
    heads = int(config.num_attention_heads)
    wrapper = _TextWrapper(model, with_attentions).eval()
    texts = list(
        sample_texts
        or [
            "a short sentence",
            "another, somewhat longer sentence for the parity check of the export",
            "three",
            "the fourth held-out example",
        ]
    )
    while len(texts) < max(PARITY_BATCH_SIZES):
        texts.append(texts[len(texts) % max(1, len(texts))])

    def encode(batch: Sequence[str], length: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        enc = tokenizer(
            list(batch),
            padding="max_length" if length else True,
            truncation=True,
            max_length=length or max_length,
            return_tensors="pt",
        )
        return enc["input_ids"].long(), enc["attention_mask"].long()  # (batch, seq) each

    batches = [encode(texts[:1], None), encode(texts[:4], None), encode(texts[:4], min(max_length, 24))]
    output_names = ["logits", *[f"attention_{i}" for i in range(layers)]]
    staging = new_staging_dir(repo, name)
    try:
        batch_dim = torch.export.Dim("batch", min=1, max=4096)
        seq_dim = torch.export.Dim("seq", min=2, max=max(max_length, 8))
        example = encode(texts[:2], min(max_length, 16))
        dynamic = ({0: batch_dim, 1: seq_dim}, {0: batch_dim, 1: seq_dim})
        _to_onnx(wrapper, example, staging / "model.onnx", ["input_ids", "attention_mask"], output_names, dynamic)
        _to_torchscript(wrapper, example, staging / "model.torchscript")
        from safetensors.torch import save_model

        save_model(model, str(staging / "model.safetensors"))
        parity = _check_parity(
            wrapper,
            staging / "model.onnx",
            staging / "model.torchscript",
            batches,
            ["input_ids", "attention_mask"],
            tolerance,
        )
        config.save_pretrained(staging / "hf_config")
        tokenizer.save_pretrained(staging / "tokenizer")
        artifacts: list[tuple[str, ArtifactKind]] = [
            ("model.onnx", "onnx"),
            ("model.torchscript", "torchscript"),
            ("model.safetensors", "safetensors"),
            *tree_artifacts(staging, "hf_config", "config"),
            *tree_artifacts(staging, "tokenizer", "tokenizer"),
        ]
        outputs = [{"name": "logits", "datatype": "FP32", "shape": [-1, len(labels)]}]
        outputs += [{"name": f"attention_{i}", "datatype": "FP32", "shape": [-1, heads, -1, -1]} for i in range(layers)]
        fields = {
            "name": name,
            "task": "text-classification",
            "architecture": {
                "family": "transformers",
                "config_dir": "hf_config",
                "num_labels": len(labels),
                "model_type": str(getattr(config, "model_type", "bert")),
            },
            "labels": labels,
            "inputs": [
                {"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]},
                {"name": "attention_mask", "datatype": "INT64", "shape": [-1, -1]},
            ],
            "outputs": outputs,
            "preprocessing": {"kind": "text", "tokenizer_dir": "tokenizer", "max_length": max_length},
            "parity": parity,
            "training": training or {},
            "imported": imported,
        }
        return _finish(staging, artifacts, extra_files, fields)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
