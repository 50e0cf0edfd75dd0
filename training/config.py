"""The training recipe: a YAML file parsed into pydantic models, ``--set key=value`` overrides.

A recipe names its data, model, optimisation and export settings. ``smoke`` holds the
overrides ``--smoke`` applies on top (tiny subset, a few steps), so smoke runs the same
recipe end to end. The resolved recipe is written into the run folder as ``config.yaml``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

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


class LoraSettings(_Strict):
    """LoRA adapters (the ``peft`` library) on the named linear layers; the base model stays frozen."""

    r: int = Field(default=8, ge=1, le=1024)
    alpha: float = Field(default=16.0, gt=0)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["query", "value"], min_length=1)
    """Module names (or name suffixes) that get adapters, e.g. query/value for BERT-style encoders."""
    keep_adapter: bool = True
    """Also put the adapter weights into the bundle (``adapter/``) besides the merged model."""


# Set by the trainer from the data's labels: an architecture config may not give them.
HEAD_KEYS = ("num_labels", "id2label", "label2id")


class ModelConfig(_Strict):
    family: Literal["torchvision", "transformers"]
    name: str | None = None
    """torchvision model name (``get_model``); for transformers: ``asset:minilm`` or a checkpoint folder."""
    path: str | None = None
    """A Hugging Face checkpoint folder (``save_pretrained`` output: config.json + weights); transformers only."""
    architecture_config: dict[str, Any] | None = None
    """transformers image models only, instead of a checkpoint: build the model from scratch
    (random weights) from this config: ``model_type`` (e.g. ``vit``) and that type's fields
    (``image_size``, ``patch_size``, ``num_channels``, ``hidden_size``, ...)."""
    weights: str | None = "DEFAULT"
    """torchvision weights enum member (e.g. IMAGENET1K_V1); None: random init."""
    weights_file: str | None = None
    """torchvision only: a state dict of ``name`` (.safetensors, or a torch.save file read with
    weights_only=True); replaces ``weights``. Head keys whose shape differs are dropped."""
    lora: LoraSettings | None = None
    freeze: Literal["head", "last_blocks", "none"] = "none"
    """head: train only the new head; last_blocks: head + the last ``unfrozen_blocks`` blocks; none: everything."""
    unfrozen_blocks: int = Field(default=2, ge=0)
    image_size: int | None = Field(default=None, ge=16, le=1024)
    """Crop size for images (resize = crop * the weights' resize/crop ratio); None: the weights' own."""
    image_mean: list[float] | None = Field(default=None, min_length=1, max_length=3)
    """Normalisation mean per input channel; None: the weights' or checkpoint's own (ImageNet
    statistics without one; 0.5 per channel for a model built from ``architecture_config``)."""
    image_std: list[float] | None = Field(default=None, min_length=1, max_length=3)
    """Normalisation std per input channel; None: as for ``image_mean``."""
    max_length: int = Field(default=128, ge=8, le=8192)
    """Tokenizer truncation length for text."""
    augment: bool = True

    @model_validator(mode="after")
    def _source(self) -> ModelConfig:
        if self.family == "torchvision":
            if not self.name:
                raise ValueError("model.name: a torchvision architecture name is required")
            if self.path is not None:
                raise ValueError("model.path: only for transformers checkpoints (use model.weights_file)")
            if self.architecture_config is not None:
                raise ValueError(
                    "model.architecture_config: only for transformers models (torchvision trains from scratch "
                    "with weights: null)"
                )
        else:
            if self.weights_file is not None:
                raise ValueError("model.weights_file: only for torchvision architectures (use model.path)")
            if self.architecture_config is not None:
                self._check_architecture_config(self.architecture_config)
            elif not (self.path or self.name):
                raise ValueError("model.path: give the checkpoint folder (--set model.path=DIR)")
        return self

    def _check_architecture_config(self, config: dict[str, Any]) -> None:
        if self.path or self.name:
            raise ValueError("model.architecture_config: give either a checkpoint (model.path) or a config, not both")
        if not isinstance(config.get("model_type"), str) or not config["model_type"]:
            raise ValueError("model.architecture_config.model_type: required, e.g. vit")
        given = [k for k in HEAD_KEYS if k in config]
        if given:
            raise ValueError(f"model.architecture_config.{given[0]}: the head is sized from the data's labels")
        if self.freeze != "none" or self.lora is not None:
            raise ValueError(
                "model.freeze: a model built from model.architecture_config starts from random weights "
                "and trains all of them (freeze: none, no lora)"
            )

    @property
    def checkpoint(self) -> str:
        """The transformers checkpoint: ``path`` when given, else ``name``."""
        return str(self.path or self.name)


class TrainConfig(_Strict):
    epochs: int = Field(default=3, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    """Stop after this many optimizer steps (smoke)."""
    batch_size: int = Field(default=32, ge=1)
    eval_batch_size: int = Field(default=128, ge=1)
    grad_accum_steps: int = Field(default=1, ge=1)
    effective_batch_size: int | None = Field(default=None, ge=1)
    """Samples per optimizer step over all processes; sets the gradient accumulation steps
    (a multiple of batch_size x processes; replaces ``grad_accum_steps``)."""
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
    """bf16 autocast on CUDA when ``precision`` is auto."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 autocast on CUDA (per ``mixed_precision``), fp32 on CPU; bf16: autocast on CPU too."""
    gradient_checkpointing: bool = False
    """Recompute block activations in the backward pass (less memory, more compute)."""
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
        if self.task == "text-classification" and self.model.family != "transformers":
            raise ValueError(f"model.family: task {self.task} needs a transformers model, got {self.model.family}")
        if self.task == "text-classification" and self.model.architecture_config is not None:
            raise ValueError(
                "model.architecture_config: image tasks only (a text model needs a checkpoint's tokenizer)"
            )
        return self


def parse_override(item: str) -> tuple[str, Any]:
    """``a.b=value`` -> ("a.b", yaml-parsed value)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form key=value")
    return key.strip(), yaml.safe_load(raw) if raw.strip() else None


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``annotation`` (``X``, ``X | None``), or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for a in get_args(annotation) if (m := _submodel(a)) is not None), None)


def check_override_key(dotted: str) -> None:
    """Raise ConfigError unless ``dotted`` names a recipe field (keys below a free mapping pass)."""
    model: type[BaseModel] | None = Recipe
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        if model is None:
            return  # below a mapping field (label_names, smoke): free keys
        fields = model.model_fields
        if part not in fields:
            known = ", ".join(fields)
            where = ".".join(parts[:depth]) or "the recipe"
            raise ConfigError(f"unknown key {dotted!r} in --set ({where} has: {known})")
        annotation = fields[part].annotation
        model = _submodel(annotation)
        mapping = any(get_origin(a) is dict for a in (annotation, *get_args(annotation)))
        if model is None and depth < len(parts) - 1 and not mapping:
            raise ConfigError(f"unknown key {dotted!r} in --set: {'.'.join(parts[: depth + 1])} is not a mapping")


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
    parsed = dict(parse_override(o) for o in overrides)
    for key in parsed:
        check_override_key(key)
    raw = apply_overrides(raw, parsed)
    return validate_recipe(raw, source=str(path))


def validate_recipe(raw: dict[str, Any], source: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors())
        raise ConfigError(f"{source}: invalid recipe: {problems}") from exc


def _problem(error: Any) -> str:
    """One validation error as ``field: message`` (a validator's message already names its field)."""
    message = str(error["msg"]).removeprefix("Value error, ")
    where = ".".join(map(str, error["loc"]))
    if not where or message.startswith(f"{where}."):
        return message
    return f"{where}: {message}"


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def save_recipe(recipe: Recipe, run_dir: Path) -> Path:
    target = run_dir / "config.yaml"
    target.write_text(dump_recipe(recipe))
    return target
