"""Export a training run (or torchvision's pretrained ImageNet MobileNetV2) to a bundle.

The run folder carries everything: resolved recipe, best weights, HF config and tokenizer,
held-out parity inputs, summary and report. The report and its PNGs go into the bundle as
``report`` artifacts; the training summary (test metrics, data report, recipe, history)
goes into the manifest's ``training`` field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml

from lumenserve.bundle import Bundle, ImagePreprocessing
from lumenserve.bundle.manifest import ArtifactKind
from training.config import validate_recipe
from training.export import export_image_model, export_text_model
from training.pipeline import ADAPTER_DIR, PARITY_IMAGES, PARITY_TEXTS, SUMMARY
from training.report.plots import PLOT_FILES

REPORT_FILES = ("report.html", *PLOT_FILES)


class ExportError(ValueError):
    """The run folder lacks what export needs; the message names the file."""


def gradcam_candidates(model: torch.nn.Module) -> list[str]:
    """The feature stages, shallow to deep (``features.<i>`` or ResNet's ``layer1..4``): export
    picks the default Grad-CAM layer among them at the bundle's input size."""
    features = getattr(model, "features", None)
    if isinstance(features, torch.nn.Sequential):
        return [f"features.{i}" for i in range(len(features))]
    return [f"layer{i}" for i in range(1, 5) if hasattr(model, f"layer{i}")]


def _need(run_dir: Path, name: str) -> Path:
    path = run_dir / name
    if not path.exists():
        raise ExportError(f"{run_dir} is not a finished training run: {name} is missing")
    return path


def _extra_files(run_dir: Path, keep_adapter: bool) -> list[tuple[Path, str, ArtifactKind]]:
    """The report and its plots; with ``keep_adapter``, the LoRA adapter folder (reuse, not served)."""
    files: list[tuple[Path, str, ArtifactKind]] = [
        (run_dir / f, f"report/{f}", "report") for f in REPORT_FILES if (run_dir / f).exists()
    ]
    adapter = run_dir / ADAPTER_DIR
    if keep_adapter and adapter.is_dir():
        files += [
            (p, f"{ADAPTER_DIR}/{p.relative_to(adapter)}", "adapter") for p in sorted(adapter.rglob("*")) if p.is_file()
        ]
    return files


def training_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """What the manifest carries about training (everything but per-step history rows beyond 400)."""
    out = dict(summary)
    out["history"] = summary.get("history", [])[-400:]
    out["report"] = "report/report.html"
    return out


def export_run(run_dir: str | Path, repository: str | Path, name: str | None = None) -> Bundle:
    """Write ``REPOSITORY/NAME/N`` from a finished run (NAME: the export name in the recipe, else its name)."""
    from safetensors.torch import load_file, load_model

    run_dir = Path(run_dir)
    recipe = validate_recipe(yaml.safe_load(_need(run_dir, "config.yaml").read_text()), source=str(run_dir))
    summary = json.loads(_need(run_dir, SUMMARY).read_text())
    labels: list[str] = summary["labels"]
    weights = _need(run_dir, "best.safetensors")
    bundle_name = name or recipe.export.name or recipe.name
    training = training_summary(summary)
    lora = recipe.model.lora
    extra = _extra_files(run_dir, lora is not None and lora.keep_adapter)
    if recipe.task == "image-classification" and recipe.model.family == "transformers":
        from transformers import AutoConfig
        from transformers.utils import logging as hf_logging

        from lumenserve.bundle.hf_image import from_config
        from lumenserve.bundle.hf_image import gradcam_candidates as hf_gradcam_candidates

        hf_logging.set_verbosity_error()  # the export trace reads the unused loss settings, which logs a note
        hf_config = AutoConfig.from_pretrained(_need(run_dir, "hf_config"))
        hf_model = from_config(hf_config)
        load_model(hf_model, str(weights))
        return export_image_model(
            hf_model, arch_name=str(hf_config.model_type), labels=labels,
            preprocessing=ImagePreprocessing.model_validate(summary["model"]["preprocessing"]), repo=repository,
            name=bundle_name, training=training, sample_inputs=load_file(str(_need(run_dir, PARITY_IMAGES)))["input"],
            gradcam_layer=recipe.export.gradcam_layer or hf_gradcam_candidates(hf_model),
            tolerance=recipe.export.tolerance, extra_files=extra, hf_config=hf_config,
        )  # fmt: skip
    if recipe.task == "image-classification":
        import torchvision

        model = torchvision.models.get_model(str(recipe.model.name), weights=None, num_classes=len(labels))
        load_model(model, str(weights))
        pre = ImagePreprocessing.model_validate(summary["model"]["preprocessing"])
        sample = load_file(str(_need(run_dir, PARITY_IMAGES)))["input"]  # (4, C, H, W)
        return export_image_model(
            model, arch_name=str(recipe.model.name), labels=labels, preprocessing=pre, repo=repository,
            name=bundle_name, training=training, sample_inputs=sample,
            gradcam_layer=recipe.export.gradcam_layer or gradcam_candidates(model),
            tolerance=recipe.export.tolerance, extra_files=extra,
        )  # fmt: skip
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    config = AutoConfig.from_pretrained(_need(run_dir, "hf_config"))
    text_model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    load_model(text_model, str(weights))
    tokenizer = AutoTokenizer.from_pretrained(_need(run_dir, "tokenizer"))
    texts = json.loads(_need(run_dir, PARITY_TEXTS).read_text())
    return export_text_model(
        text_model, tokenizer, labels=labels, max_length=recipe.model.max_length, repo=repository,
        name=bundle_name, training=training, sample_texts=texts, tolerance=recipe.export.tolerance,
        extra_files=extra,
    )  # fmt: skip


PRETRAINED = {"mobilenet_v2": "IMAGENET1K_V1"}


def export_pretrained(arch: str, repository: str | Path, name: str) -> Bundle:
    """torchvision's ImageNet classifier as a bundle: 1000 categories and preprocessing from the weights enum."""
    from lumenserve.assets import seed_torch_hub
    from training.models import image_preprocessing, weights_enum

    if arch not in PRETRAINED:
        raise ExportError(f"no offline pretrained weights for {arch!r} (available: {', '.join(PRETRAINED)})")
    import torchvision

    seed_torch_hub()
    weights = weights_enum(arch, PRETRAINED[arch])
    labels = list(weights.meta["categories"])
    model = torchvision.models.get_model(arch, weights=None, num_classes=len(labels))
    model.load_state_dict(weights.get_state_dict(progress=False))
    pre = image_preprocessing(weights, None)
    return export_image_model(
        model, arch_name=arch, labels=labels, preprocessing=pre, repo=repository, name=name,
        training={"source": f"torchvision {weights}", "pretrained_metrics": weights.meta.get("_metrics", {}),
                  "recipe": weights.meta.get("recipe")},
        gradcam_layer=gradcam_candidates(model),
    )  # fmt: skip
