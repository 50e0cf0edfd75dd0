"""A Hugging Face ``save_pretrained`` folder (sequence or image classification) -> a bundle
with ONNX, TorchScript and eager safetensors weights, proven by the export parity check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lumenserve.bundle import Bundle, ImagePreprocessing, finish_bundle, new_staging_dir, tree_artifacts
from lumenserve.bundle.hf_image import HFImageClassifier
from lumenserve.bundle.manifest import ArtifactKind
from training.export import ExportParityError, _check_parity, _to_onnx, _to_torchscript, export_text_model
from training.importer.options import DEFAULT_MAX_LENGTH, ImportOptions, ImportSourceError, read_labels
from training.importer.tasks import CHECK_TEXTS, load_user_tokenizer
from training.importer.write import import_record, labels_for, staged

HEADS = {"ForSequenceClassification": "text-classification", "ForImageClassification": "image-classification"}
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL resample codes
_PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")
_POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "camembert": 2, "longformer": 2}


def _head(folder: Path) -> tuple[str, str]:
    """(architecture class name, task) of a supported classification checkpoint."""
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ImportSourceError(
            f"{config_path}: unreadable ({exc.__class__.__name__}); write it with model.save_pretrained"
        ) from exc
    archs = config.get("architectures") or []
    for arch in archs:
        for suffix, task in HEADS.items():
            if arch.endswith(suffix):
                return arch, task
    raise ImportSourceError(
        f"{config_path}: unsupported head {archs or 'none'}; import a *ForSequenceClassification or "
        "*ForImageClassification checkpoint (or export it to ONNX and import that)"
    )


def _check_weights(folder: Path) -> None:
    if (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file():
        return
    pickles = [n for n in _PICKLE_WEIGHTS if (folder / n).exists()]
    if pickles:
        raise ImportSourceError(
            f"{folder / pickles[0]}: pickled weights are never loaded;"
            f" re-save with model.save_pretrained(DIR, safe_serialization=True)"
        )
    raise ImportSourceError(f"{folder}: no model.safetensors; write the folder with model.save_pretrained")


def _labels(config: Any, options: ImportOptions, source: str) -> list[str]:
    classes = int(config.num_labels)
    given = read_labels(options.labels_file) if options.labels_file else None
    if given is not None:
        return labels_for(source, classes, given, str(options.labels_file))
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    return [id2label.get(i, str(i)) for i in range(classes)]


def _load(folder: Path, auto: Any) -> torch.nn.Module:
    try:
        model = auto.from_pretrained(
            str(folder), attn_implementation="eager", local_files_only=True, use_safetensors=True
        )
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise ImportSourceError(
            f"{folder}: transformers cannot load it ({first[:200]}); check config.json and the weights"
        ) from exc
    return model.eval()


def import_hf(source: Path, repo: Path, name: str, options: ImportOptions) -> Bundle:
    arch, task = _head(source)
    if options.task not in (None, task):
        raise ImportSourceError(f"{source / 'config.json'}: {arch} is {task}; drop --task {options.task}")
    _check_weights(source)
    if task == "text-classification":
        return _import_text(source, repo, name, options, arch)
    return _import_image(source, repo, name, options, arch)


def _import_text(source: Path, repo: Path, name: str, options: ImportOptions, arch: str) -> Bundle:
    from transformers import AutoModelForSequenceClassification

    tokenizer_dir = options.tokenizer_dir or source
    has_tokenizer = any((tokenizer_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"))
    if not has_tokenizer:
        raise ImportSourceError(
            f"{tokenizer_dir}: no tokenizer;"
            f" save it with tokenizer.save_pretrained into the folder or add --tokenizer DIR"
        )
    tokenizer = load_user_tokenizer(tokenizer_dir, str(source))
    model = _load(source, AutoModelForSequenceClassification)
    config: Any = model.config
    labels = _labels(config, options, str(source))
    limits = [512, int(config.max_position_embeddings) - _POSITION_OFFSET.get(config.model_type, 0)]
    if 0 < int(getattr(tokenizer, "model_max_length", 0) or 0) < 100_000:
        limits.append(int(tokenizer.model_max_length))
    max_length = options.max_length or min([DEFAULT_MAX_LENGTH, *limits])
    enc = tokenizer(list(CHECK_TEXTS), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits  # (batch, labels)
    feed = {"input_ids": enc["input_ids"].numpy(), "attention_mask": enc["attention_mask"].numpy()}
    notes = [f"{arch}; labels from {'--labels' if options.labels_file else 'config id2label'}; max_length {max_length}"]
    return export_text_model(
        model,
        tokenizer,
        labels=labels,
        max_length=max_length,
        repo=repo,
        name=name,
        with_attentions=True,
        tolerance=options.tolerance,
        imported=import_record("hf", source, feed, {"logits": logits.numpy()}, notes),
    )


def _processor_preprocessing(source: Path, channels: int) -> ImagePreprocessing | None:
    """ImagePreprocessing from preprocessor_config.json (None when the folder has none)."""
    path = source / "preprocessor_config.json"
    if not path.is_file():
        return None
    cfg = json.loads(path.read_text())
    if cfg.get("do_rescale", True) and abs(float(cfg.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        raise ImportSourceError(
            f"{path}: rescale_factor {cfg['rescale_factor']} is not 1/255; pass --mean/--std for your scaling"
        )
    size = cfg.get("size", 224)
    if isinstance(size, dict):
        if "shortest_edge" in size:
            shortest = int(size["shortest_edge"])
        elif size.get("height") == size.get("width") and "height" in size:
            shortest = int(size["height"])
        else:
            raise ImportSourceError(f"{path}: non-square size {size}; pass --image-size and --resize-size")
    else:
        shortest = int(size)
    crop, resize = shortest, shortest
    crop_size = cfg.get("crop_size")
    if cfg.get("do_center_crop") and crop_size:
        crop = int(crop_size["height"] if isinstance(crop_size, dict) else crop_size)
    elif "crop_pct" in cfg and cfg["crop_pct"] and shortest < 384:  # ConvNeXt: resize shortest/crop_pct, crop shortest
        resize = round(shortest / float(cfg["crop_pct"]))
    normalise = cfg.get("do_normalize", True)
    mean = [float(x) for x in cfg.get("image_mean", [0.5] * channels)] if normalise else [0.0] * channels
    std = [float(x) for x in cfg.get("image_std", [0.5] * channels)] if normalise else [1.0] * channels
    return ImagePreprocessing(
        resize_size=max(resize, crop),
        crop_size=crop,
        mean=mean,
        std=std,
        channels=3 if channels == 3 else 1,
        interpolation=_RESAMPLE.get(int(cfg.get("resample", 2)), "bilinear"),  # type: ignore[arg-type]
    )


def _traces(wrapper: torch.nn.Module, example: torch.Tensor, path: Path, notes: list[str]) -> bool:
    """Write TorchScript where the model traces; note it where it does not."""
    try:
        _to_torchscript(wrapper, (example,), path)
        return True
    except Exception as exc:
        path.unlink(missing_ok=True)
        notes.append(f"no TorchScript: tracing failed ({(str(exc).splitlines() or [''])[0][:120]})")
        return False


def _onnx_parity(
    wrapper: torch.nn.Module, onnx_path: Path, batches: list[tuple[torch.Tensor]], tolerance: float
) -> dict[str, Any]:
    """The ONNX half of the export parity check (for models without TorchScript)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    with torch.no_grad():
        for (batch,) in batches:
            got = session.run(None, {"input": batch.numpy()})[0]  # (batch, labels)
            worst = max(worst, float(np.max(np.abs(got - wrapper(batch).numpy()))))
    if worst > tolerance:
        raise ExportParityError(f"onnx export differs from eager by {worst:.3g} (tolerance {tolerance:g})")
    sizes = sorted(int(b[0].shape[0]) for b in batches)
    return {"runtime": "onnx", "batch_sizes": sizes, "max_abs_diff": worst, "tolerance": tolerance}


def _import_image(source: Path, repo: Path, name: str, options: ImportOptions, arch: str) -> Bundle:
    from safetensors.torch import save_model
    from transformers import AutoModelForImageClassification

    model = _load(source, AutoModelForImageClassification)
    config: Any = model.config
    channels = int(getattr(config, "num_channels", 3))
    defaults = _processor_preprocessing(source, channels)
    if defaults is None and options.image.image_size is None:
        raise ImportSourceError(
            f"{source}: no preprocessor_config.json;"
            f" save the image processor with save_pretrained or pass --image-size --mean --std"
        )
    pre = options.image.preprocessing(str(source), defaults)
    if pre.layout != "NCHW" or pre.channels != channels:
        raise ImportSourceError(f"{source}: {arch} takes NCHW input with {channels} channels; fix --layout/--channels")
    labels = _labels(config, options, str(source))
    size = pre.crop_size
    held_out = torch.randn(4, channels, size, size, generator=torch.Generator().manual_seed(0))  # (4, C, H, W)
    wrapper = HFImageClassifier(model).eval()
    with torch.no_grad():
        logits = wrapper(held_out[:2])  # (2, labels)
    notes = [f"{arch}; labels from {'--labels' if options.labels_file else 'config id2label'}"]
    if defaults is not None:
        notes.append(
            "preprocessing from preprocessor_config.json (square resize read as resize-shorter-side + center crop)"
        )
    staging = new_staging_dir(repo, name)
    with staged(staging):
        batch = torch.export.Dim("batch", min=1, max=4096)
        _to_onnx(wrapper, (held_out[:2],), staging / "model.onnx", ["input"], ["logits"], ({0: batch},))
        traced = _traces(wrapper, held_out[:2], staging / "model.torchscript", notes)
        save_model(wrapper, str(staging / "model.safetensors"))  # keys model.* as training writes them
        batches = [(held_out[:1],), (held_out[:4],)]
        if traced:
            parity = _check_parity(
                wrapper, staging / "model.onnx", staging / "model.torchscript", batches, ["input"], options.tolerance
            )
        else:
            parity = [_onnx_parity(wrapper, staging / "model.onnx", batches, options.tolerance)]
        config.save_pretrained(staging / "hf_config")
        (staging / "labels.json").write_text(json.dumps(labels, indent=1))
        if (source / "preprocessor_config.json").is_file():
            shutil.copyfile(source / "preprocessor_config.json", staging / "hf_config" / "preprocessor_config.json")
        scripted: list[tuple[str, ArtifactKind]] = [("model.torchscript", "torchscript")] if traced else []
        artifacts: list[tuple[str, ArtifactKind]] = [
            ("model.onnx", "onnx"),
            *scripted,
            ("model.safetensors", "safetensors"),
            ("labels.json", "config"),
            *tree_artifacts(staging, "hf_config", "config"),
        ]
        return finish_bundle(
            staging,
            artifacts,
            name=name,
            task="image-classification",
            architecture={
                "family": "transformers",
                "config_dir": "hf_config",
                "num_labels": len(labels),
                "model_type": str(config.model_type),
                "head": "image-classification",
            },
            labels=labels,
            inputs=[{"name": "input", "datatype": "FP32", "shape": [-1, channels, size, size]}],
            outputs=[{"name": "logits", "datatype": "FP32", "shape": [-1, len(labels)]}],
            preprocessing=pre.model_dump(),
            parity=parity,
            imported=import_record("hf", source, {"input": held_out[:2].numpy()}, {"logits": logits.numpy()}, notes),
        )
