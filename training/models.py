"""Build pretrained models with a new head, freeze them, and run them on a batch.

Image models are built exactly as ``lumenserve.bundle.eager.build_eager_model`` rebuilds
them (``torchvision.models.get_model(name, weights=None, num_classes=n)``) and then take the
pretrained state dict from the weights enum (or ``model.weights_file``) minus the
classifier-head keys. Transformers models come from a local checkpoint folder: sequence
classifiers with eager attention (attentions export to ONNX), image classifiers (ViT,
ConvNeXt, ResNet, ...) wrapped as ``pixel_values -> logits``; the head is resized to the
data's labels. A transformers image classifier can also be built from scratch from
``model.architecture_config`` (random weights, eager attention). LoRA adapters (``peft``)
and gradient checkpointing are applied here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from lumenserve.bundle import ImagePreprocessing
from training.config import LoraSettings, ModelConfig

PRETRAINED_ALIASES = {"asset:minilm": "minilm"}


class ModelError(ValueError):
    """The model cannot be built as configured (unknown name, missing weights, bad freezing)."""


@dataclass
class BuiltModel:
    model: torch.nn.Module
    head_params: list[str]
    """Names of the freshly initialised head parameters."""
    preprocessing: ImagePreprocessing | None = None
    tokenizer: Any = None
    categories: list[str] | None = None
    """The pretrained weights' own class names (ImageNet categories for torchvision)."""
    hf_config: Any = None
    """The transformers config (with the new labels) for export; None for torchvision."""


def head_labels(labels: list[str]) -> dict[str, Any]:
    """A transformers config's head fields for ``labels``: ``num_labels``, ``id2label``, ``label2id``."""
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {name: i for i, name in enumerate(labels)},
    }


def weights_enum(name: str, weights: str | None) -> Any:
    import torchvision

    if weights is None:
        return None
    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError) as exc:
        raise ModelError(f"unknown torchvision model {name!r}") from exc
    try:
        return enum.DEFAULT if weights == "DEFAULT" else enum[weights]
    except KeyError as exc:
        members = ", ".join(m.name for m in enum)
        raise ModelError(f"{name}: unknown weights {weights!r} (available: {members}, DEFAULT)") from exc


def image_preprocessing(weights: Any, image_size: int | None) -> ImagePreprocessing:
    """The weights' own transforms (mean/std/interpolation/resize ratio), optionally at another crop size."""
    if weights is not None:
        t = weights.transforms()
        crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
        mean, std, interp = list(t.mean), list(t.std), t.interpolation.value
    else:
        crop, resize, mean, std, interp = 224, 256, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], "bilinear"
    if image_size is not None:
        resize, crop = round(image_size * resize / crop), image_size
    return ImagePreprocessing(resize_size=resize, crop_size=crop, mean=mean, std=std, interpolation=interp)


def with_normalisation(pre: ImagePreprocessing, cfg: ModelConfig) -> ImagePreprocessing:
    """``pre`` with ``model.image_mean`` / ``model.image_std`` where the recipe gives them."""
    mean, std = cfg.image_mean or pre.mean, cfg.image_std or pre.std
    if len(mean) != pre.channels or len(std) != pre.channels:
        field = "model.image_mean" if len(mean) != pre.channels else "model.image_std"
        raise ModelError(f"{field}: the model takes {pre.channels} channel(s), give one value per channel")
    if any(v <= 0 for v in std):
        raise ModelError("model.image_std: values must be positive")
    return pre.model_copy(update={"mean": list(mean), "std": list(std)})


def build_image_model(cfg: ModelConfig, num_classes: int) -> BuiltModel:
    import torchvision

    try:
        model = torchvision.models.get_model(cfg.name, weights=None, num_classes=num_classes)
    except ValueError as exc:
        raise ModelError(f"unknown torchvision model {cfg.name!r}") from exc
    if cfg.weights_file is not None:
        return _load_weights_file(model, cfg)
    weights = weights_enum(str(cfg.name), cfg.weights)
    own = model.state_dict()
    last_linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    head = [k for k in own if k.startswith(last_linear + ".")]
    categories = None
    if weights is not None:
        if cfg.name == "mobilenet_v2":
            from lumenserve.assets import seed_torch_hub

            seed_torch_hub()
        try:
            pretrained = weights.get_state_dict(progress=False)
        except Exception as exc:
            raise ModelError(
                f"cannot load {cfg.name} weights {weights}: {exc} "
                "(offline: put the file in $TORCH_HOME/hub/checkpoints)"
            ) from exc
        head = [k for k, v in own.items() if k in pretrained and pretrained[k].shape != v.shape]
        kept = {k: v for k, v in pretrained.items() if k not in head}
        missing, unexpected = model.load_state_dict(kept, strict=False)
        if set(missing) != set(head) or unexpected:
            raise ModelError(
                f"{cfg.name}: pretrained weights do not fit (missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
        categories = list(weights.meta.get("categories") or [])
    pre = with_normalisation(image_preprocessing(weights, cfg.image_size), cfg)
    return BuiltModel(model, head, preprocessing=pre, categories=categories)


WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, or from a torch.save file with weights_only=True (no pickled code)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint {"state_dict": ..., ...}
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("not a state dict of tensors")
    return state


def _load_weights_file(model: torch.nn.Module, cfg: ModelConfig) -> BuiltModel:
    """Load ``model.weights_file`` into the torchvision ``model``; head keys of another shape are dropped."""
    path = Path(str(cfg.weights_file))
    try:
        state = _read_state_dict(path)
    except Exception as exc:  # safetensors/torch raise many types for a bad file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"model.weights_file: cannot read {path} as a state dict: {reason}") from exc
    own = model.state_dict()
    head = [k for k, v in own.items() if k in state and state[k].shape != v.shape]
    missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if k not in head}, strict=False)
    if set(missing) != set(head) or unexpected:
        raise ModelError(
            f"model.weights_file: {path} does not fit torchvision {cfg.name} "
            f"(missing {sorted(set(missing) - set(head))[:4]}, unexpected {unexpected[:4]})"
        )
    if not head:  # same class count: the checkpoint's head is kept and trained on
        last_linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]
        head = [k for k in own if k.startswith(last_linear + ".")]
    return BuiltModel(model, head, preprocessing=with_normalisation(image_preprocessing(None, cfg.image_size), cfg))


def resolve_checkpoint(name: str) -> Path:
    if name in PRETRAINED_ALIASES:
        from lumenserve.assets import minilm_dir

        return minilm_dir()
    return Path(name)


def check_model_source(cfg: ModelConfig) -> None:
    """Fail fast (before data is read) on a checkpoint folder or weights file that cannot be used."""
    if cfg.family == "torchvision":
        if cfg.weights_file is not None and not Path(cfg.weights_file).is_file():
            raise ModelError(f"model.weights_file: {cfg.weights_file} is not a file")
        return
    if cfg.architecture_config is not None or cfg.checkpoint in PRETRAINED_ALIASES:
        return
    field = "model.path" if cfg.path else "model.name"
    path = Path(cfg.checkpoint)
    if not path.is_dir():
        raise ModelError(f"{field}: checkpoint folder {path} does not exist")
    if not (path / "config.json").is_file():
        raise ModelError(f"{field}: {path} has no config.json (not a save_pretrained folder)")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise ModelError(f"{field}: {path} has no weights ({' or '.join(WEIGHT_FILES[::2])})")


def _from_pretrained(auto: Any, cfg: ModelConfig, labels: list[str], **kwargs: Any) -> Any:
    """``auto.from_pretrained`` with the head sized from ``labels``; errors name the recipe field."""
    from transformers.utils import logging as hf_logging

    path = resolve_checkpoint(cfg.checkpoint)
    field = "model.path" if cfg.path else "model.name"
    hf_logging.set_verbosity_error()
    try:
        return auto.from_pretrained(
            path,
            **head_labels(labels),
            ignore_mismatched_sizes=True,
            **kwargs,
        )
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            kind = "sequence" if "Sequence" in auto.__name__ else "image"
            raise ModelError(
                f"{field}: {path} holds a checkpoint type transformers has no {kind}-classification head for"
            ) from exc
        raise ModelError(f"{field}: cannot load {path}: {str(exc).splitlines()[0]}") from exc
    except (OSError, RuntimeError) as exc:
        raise ModelError(f"{field}: cannot load {path}: {str(exc).splitlines()[0]}") from exc


def build_text_model(cfg: ModelConfig, labels: list[str]) -> BuiltModel:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    check_model_source(cfg)
    model = _from_pretrained(AutoModelForSequenceClassification, cfg, labels, attn_implementation="eager")
    path = resolve_checkpoint(cfg.checkpoint)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        field = "model.path" if cfg.path else "model.name"
        raise ModelError(f"{field}: {path} has no usable tokenizer: {str(exc).splitlines()[0]}") from exc
    head = [n for n, _ in model.named_parameters() if n.startswith(("classifier", "score"))]
    return BuiltModel(model, head, tokenizer=tokenizer, hf_config=model.config)


def _hf_image_preprocessing(path: Path, config: Any, image_size: int | None) -> ImagePreprocessing:
    """From the folder's preprocessor_config.json when present, else the config's image_size and ImageNet statistics."""
    import json

    proc: dict[str, Any] = {}
    if (path / "preprocessor_config.json").is_file():
        proc = json.loads((path / "preprocessor_config.json").read_text())
    size = proc.get("size") or {}
    crop = size.get("height") or size.get("shortest_edge") or getattr(config, "image_size", None) or 224
    crop_pct = proc.get("crop_pct")
    resize = round(crop / crop_pct) if crop_pct else (crop if "height" in size else round(crop * 256 / 224))
    resample: dict[int, Literal["bilinear", "bicubic", "nearest"]] = {0: "nearest", 2: "bilinear", 3: "bicubic"}
    interp = resample.get(int(proc.get("resample", 2)), "bilinear")
    mean = list(proc.get("image_mean") or [0.485, 0.456, 0.406])
    std = list(proc.get("image_std") or [0.229, 0.224, 0.225])
    if image_size is not None:
        resize, crop = round(image_size * resize / crop), image_size
    return ImagePreprocessing(resize_size=resize, crop_size=crop, mean=mean, std=std, interpolation=interp)


def _wrap_image_model(inner: Any, pre: ImagePreprocessing, field: str, what: str) -> BuiltModel:
    """``inner`` as ``pixel_values -> logits``, checked on one blank image of the preprocessing's size."""
    from lumenserve.bundle.hf_image import HFImageClassifier

    model = HFImageClassifier(inner)
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, pre.channels, pre.crop_size, pre.crop_size))  # (1, C, H, W)
    except (RuntimeError, ValueError) as exc:
        raise ModelError(
            f"{field}: {what} does not take {pre.channels}x{pre.crop_size}x{pre.crop_size} images: "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    head = [n for n, _ in model.named_parameters() if n.startswith("model.classifier")]
    return BuiltModel(model.train(), head, preprocessing=pre, hf_config=inner.config)


def build_hf_image_model(cfg: ModelConfig, labels: list[str]) -> BuiltModel:
    """A transformers image classifier (ViT, ConvNeXt, ResNet, ...) from a checkpoint folder."""
    from transformers import AutoModelForImageClassification

    check_model_source(cfg)
    inner = _from_pretrained(AutoModelForImageClassification, cfg, labels, attn_implementation="eager")
    path = resolve_checkpoint(cfg.checkpoint)
    pre = with_normalisation(_hf_image_preprocessing(path, inner.config, cfg.image_size), cfg)
    field = "model.image_size" if cfg.image_size else "model.path"
    return _wrap_image_model(inner, pre, field, "the checkpoint")


def _architecture(cfg: ModelConfig, labels: list[str]) -> Any:
    """The transformers config of ``model.architecture_config`` with a head for ``labels``."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES as HEADS

    fields = dict(cfg.architecture_config or {})
    model_type = str(fields.pop("model_type"))
    if model_type not in CONFIG_MAPPING:
        raise ModelError(f"model.architecture_config.model_type: unknown transformers model type {model_type!r}")
    if model_type not in HEADS:
        raise ModelError(
            f"model.architecture_config.model_type: transformers has no image-classification head for {model_type!r}"
        )
    size = fields.get("image_size")
    if cfg.image_size is not None and size is not None and size != cfg.image_size:
        raise ModelError(
            f"model.image_size: {cfg.image_size} differs from model.architecture_config.image_size {size} "
            "(give one of them)"
        )
    if cfg.image_size is not None:
        fields["image_size"] = cfg.image_size
    defaults = CONFIG_MAPPING[model_type]()
    unknown = sorted(k for k in fields if not hasattr(defaults, k))
    if unknown:
        own = [k for k in defaults.to_diff_dict() if k not in ("model_type", "transformers_version")]
        raise ModelError(
            f"model.architecture_config.{unknown[0]}: {type(defaults).__name__} has no such field "
            f"(its fields: {', '.join(own)})"
        )
    width, heads = fields.get("hidden_size"), fields.get("num_attention_heads")
    if isinstance(width, int) and isinstance(heads, int) and heads > 0 and width % heads:
        raise ModelError(f"model.architecture_config.hidden_size: {width} is not a multiple of {heads} heads")
    try:
        return AutoConfig.for_model(
            model_type,
            **head_labels(labels),
            **fields,
        )
    except (TypeError, ValueError) as exc:
        raise ModelError(f"model.architecture_config: {str(exc).splitlines()[0]}") from exc


def build_scratch_image_model(cfg: ModelConfig, labels: list[str]) -> BuiltModel:
    """A transformers image classifier with random weights from ``model.architecture_config``
    (eager attention, so attention maps come back for explain). Preprocessing: resize and crop
    to the config's ``image_size``, ``model.image_mean`` / ``image_std`` (default 0.5)."""
    from transformers import AutoModelForImageClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # as for checkpoints: no notes about unused training-loss settings
    config = _architecture(cfg, labels)
    given = getattr(config, "num_channels", 3)
    if given not in (1, 3):
        raise ModelError(f"model.architecture_config.num_channels: 1 (grayscale) or 3 (RGB), got {given}")
    channels: Literal[1, 3] = 1 if given == 1 else 3
    size = getattr(config, "image_size", None)
    if not isinstance(size, int) or not 16 <= size <= 1024:
        raise ModelError(f"model.architecture_config.image_size: a square size in pixels [16, 1024], got {size!r}")
    try:
        inner = AutoModelForImageClassification.from_config(config, attn_implementation="eager")
    except (TypeError, ValueError) as exc:
        raise ModelError(f"model.architecture_config: {str(exc).splitlines()[0]}") from exc
    half = [0.5] * channels
    pre = with_normalisation(
        ImagePreprocessing(resize_size=size, crop_size=size, mean=half, std=half, channels=channels), cfg
    )
    return _wrap_image_model(inner, pre, "model.architecture_config", f"the {config.model_type} model")


def build_model(task: str, cfg: ModelConfig, labels: list[str]) -> BuiltModel:
    """The model for ``task`` per ``cfg`` with a head for ``labels``."""
    if task == "text-classification":
        return build_text_model(cfg, labels)
    if cfg.architecture_config is not None:
        return build_scratch_image_model(cfg, labels)
    if cfg.family == "transformers":
        return build_hf_image_model(cfg, labels)
    return build_image_model(cfg, len(labels))


def _blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The backbone's stages in order: ``features`` children, ResNet layers, or encoder layers."""
    features = getattr(model, "features", None)
    if isinstance(features, torch.nn.Sequential):
        return list(features.children())
    if all(hasattr(model, f"layer{i}") for i in range(1, 5)):
        return [getattr(model, f"layer{i}") for i in range(1, 5)]
    for module in model.modules():
        for attr in ("layer", "layers", "stages"):
            layers = getattr(module, attr, None)
            if isinstance(layers, torch.nn.ModuleList):
                return list(layers)
    raise ModelError(f"{type(model).__name__}: cannot find its blocks for last_blocks freezing")


def apply_freezing(built: BuiltModel, strategy: str, unfrozen_blocks: int) -> dict[str, int]:
    """Set requires_grad per strategy; returns {trainable, total} parameter counts."""
    model = built.model
    if strategy != "none":
        for p in model.parameters():
            p.requires_grad = False
        named = dict(model.named_parameters())
        for name in built.head_params:
            named[name].requires_grad = True
        for module in list(model.modules()):
            # pooler / pre-classifier layers sit between backbone and head: train them with the head
            if module is not model and type(module).__name__.endswith(("Pooler", "PreClassifier")):
                for p in module.parameters():
                    p.requires_grad = True
        if strategy == "last_blocks" and unfrozen_blocks > 0:
            for block in _blocks(model)[-unfrozen_blocks:]:
                for p in block.parameters():
                    p.requires_grad = True
    return _count(model)


def _count(model: torch.nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total}


PEFT_PREFIX = "base_model.model."


def _linear_names(model: torch.nn.Module) -> list[str]:
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})


def apply_lora(built: BuiltModel, settings: LoraSettings) -> dict[str, int]:
    """Wrap the model with LoRA adapters; only adapters, head and pooler train. Returns parameter counts."""
    from peft import LoraConfig, get_peft_model

    base = built.model
    pooler = {
        f"{m_name}.{p_name}"
        for m_name, module in base.named_modules()
        if m_name and type(module).__name__.endswith(("Pooler", "PreClassifier"))
        for p_name, _ in module.named_parameters()
    }
    keep = set(built.head_params) | pooler
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,  # type: ignore[arg-type]  # peft annotates int, uses it as a float
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
    )
    try:
        model = get_peft_model(base, config)
    except ValueError as exc:
        raise ModelError(
            f"model.lora.target_modules: {settings.target_modules} match no layer of {type(base).__name__} "
            f"(its linear layers: {', '.join(_linear_names(base)[:10])})"
        ) from exc
    for name, p in model.named_parameters():
        if name.removeprefix(PEFT_PREFIX) in keep:
            p.requires_grad = True
    built.model = model
    built.head_params = [PEFT_PREFIX + n for n in built.head_params]
    return _count(model)


def merge_lora(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model with the LoRA adapters folded into its weights."""
    merged: torch.nn.Module = model.merge_and_unload()  # type: ignore[operator]
    return merged


def _hf_model(model: torch.nn.Module) -> torch.nn.Module | None:
    """The transformers PreTrainedModel inside ``model`` (itself, a peft wrapper's base, the image wrapper's)."""
    from transformers import PreTrainedModel

    return next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute activations in the backward pass: transformers' own switch, or each backbone block for torchvision."""
    from torch.utils.checkpoint import checkpoint

    hf = _hf_model(model)
    if hf is not None:
        if not getattr(hf, "supports_gradient_checkpointing", False):
            raise ModelError(f"train.gradient_checkpointing: {type(hf).__name__} does not support it")
        hf.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})  # type: ignore[operator]
        return
    for block in _blocks(model):
        plain = block.forward

        def forward(*args: Any, _plain: Any = plain, _block: torch.nn.Module = block, **kwargs: Any) -> Any:
            if _block.training and torch.is_grad_enabled():
                return checkpoint(_plain, *args, use_reentrant=False, **kwargs)
            return _plain(*args, **kwargs)

        block.forward = forward  # type: ignore[method-assign]  # instance attribute: the state dict is unchanged


def forward_logits(model: torch.nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (batch, classes), targets (batch,)) for an image (x, y) batch or a text dict batch."""
    if isinstance(batch, (tuple, list)):
        x, y = batch
        out = model(x.to(device, non_blocking=True))
        return (out.logits if hasattr(out, "logits") else out), y.to(device, non_blocking=True)
    out = model(
        input_ids=batch["input_ids"].to(device, non_blocking=True),
        attention_mask=batch["attention_mask"].to(device, non_blocking=True),
    )
    logits = out.logits if hasattr(out, "logits") else out
    return logits, batch["labels"].to(device, non_blocking=True)
