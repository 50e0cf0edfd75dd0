"""The training recipe: a YAML file parsed into pydantic models, ``--set key=value`` overrides.

A recipe names its data, model, optimisation and export settings. ``smoke`` holds the
overrides ``--smoke`` applies on top (tiny subset, a few steps), so smoke runs the same
recipe end to end. The resolved recipe is written into the run folder as ``config.yaml``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """The recipe or an override is invalid; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(_Strict):
    """One data source. ``format`` picks the reader; the other fields are per format."""

    format: Literal["image_folder", "idx", "csv_manifest", "csv", "jsonl"]
    path: str
    """Folder (image_folder), images IDX file (idx), CSV/JSONL file (csv_manifest, csv, jsonl)."""
    labels_path: str | None = None
    """IDX labels file (idx only)."""
    text_column: str = "text"
    label_column: str = "label"
    path_column: str = "path"
    """Image path column of a csv_manifest (relative paths resolve against the CSV's folder)."""


class DataConfig(_Strict):
    train: SourceConfig
    validation: SourceConfig | None = None
    test: SourceConfig | None = None
    labels: list[str] | None = None
    """Allowed labels in order (rows with others are dropped as ``unknown_label``); None: all seen, sorted."""
    label_names: dict[str, str] = {}
    """Display names for raw label values (e.g. IDX digits -> class names)."""
    val_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    max_train_samples: int | None = Field(default=None, ge=2)
    max_eval_samples: int | None = Field(default=None, ge=2)
    """Cap on validation samples (stratified subsample)."""
    max_test_samples: int | None = Field(default=None, ge=2)
    """Cap on test samples (stratified subsample)."""
    seed: int = 0


class ModelConfig(_Strict):
    family: Literal["torchvision", "transformers"]
    name: str
    """torchvision model name (``get_model``), or a local transformers checkpoint folder or ``asset:minilm``."""
    weights: str | None = "DEFAULT"
    """torchvision weights enum member (e.g. IMAGENET1K_V1); None: random init."""
    freeze: Literal["head", "last_blocks", "none"] = "none"
    """head: train only the new head; last_blocks: head + the last ``unfrozen_blocks`` blocks; none: everything."""
    unfrozen_blocks: int = Field(default=2, ge=0)
    image_size: int | None = Field(default=None, ge=16, le=1024)
    """Crop size for images (resize = crop * the weights' resize/crop ratio); None: the weights' own."""
    max_length: int = Field(default=128, ge=8, le=8192)
    """Tokenizer truncation length for text."""
    augment: bool = True


class TrainConfig(_Strict):
    epochs: int = Field(default=3, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    """Stop after this many optimizer steps (smoke)."""
    batch_size: int = Field(default=32, ge=1)
    eval_batch_size: int = Field(default=128, ge=1)
    grad_accum_steps: int = Field(default=1, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    head_lr: float | None = None
    """Learning rate of the new head (default: ``lr``)."""
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_fraction: float = Field(default=0.05, ge=0, lt=1)
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1)
    grad_clip: float | None = Field(default=1.0, gt=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    """Cross-entropy label smoothing; besides regularising it keeps logits small, which keeps
    the float32 rounding gap between eager and ONNX Runtime well under the 1e-4 parity bar."""
    early_stopping_patience: int | None = Field(default=None, ge=1)
    """Epochs without validation improvement before stopping; None: never stop early."""
    metric: Literal["accuracy", "macro_f1"] = "accuracy"
    evals_per_epoch: int = Field(default=1, ge=1)
    seed: int = 0
    mixed_precision: bool = True
    """bf16 autocast on CUDA (ignored on CPU)."""
    num_workers: int = Field(default=0, ge=0)
    threads: int | None = None
    """torch CPU threads (None: torch's default)."""


class ExportConfig(_Strict):
    name: str | None = None
    """Bundle name (default: the recipe's name)."""
    gradcam_layer: str | None = None
    tolerance: float = Field(default=1e-4, gt=0)


class Recipe(_Strict):
    name: str
    task: Literal["image-classification", "text-classification"]
    data: DataConfig
    model: ModelConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    smoke: dict[str, Any] = {}
    """Overrides (dotted keys) applied by ``--smoke``."""

    @model_validator(mode="after")
    def _family_fits_task(self) -> Recipe:
        wants = "torchvision" if self.task == "image-classification" else "transformers"
        if self.model.family != wants:
            raise ValueError(f"task {self.task} needs a {wants} model, got {self.model.family}")
        return self


def parse_override(item: str) -> tuple[str, Any]:
    """``a.b=value`` -> ("a.b", yaml-parsed value)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form key=value")
    return key.strip(), yaml.safe_load(raw) if raw.strip() else None


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set each dotted key in a copy of ``raw`` (creating mappings on the way)."""
    out = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {dotted!r}: {part!r} is not a mapping")
            node = child
        node[leaf] = value
    return out


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = (), *, smoke: bool = False) -> Recipe:
    """Read a recipe YAML, apply ``--smoke`` overrides then ``--set`` overrides, validate."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read recipe {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe must be a YAML mapping")
    if smoke:
        raw = apply_overrides(raw, dict(raw.get("smoke") or {}))
    raw = apply_overrides(raw, dict(parse_override(o) for o in overrides))
    return validate_recipe(raw, source=str(path))


def validate_recipe(raw: dict[str, Any], source: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'recipe'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{source}: invalid recipe: {problems}") from exc


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def save_recipe(recipe: Recipe, run_dir: Path) -> Path:
    target = run_dir / "config.yaml"
    target.write_text(dump_recipe(recipe))
    return target
