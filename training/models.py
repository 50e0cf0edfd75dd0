"""Build pretrained models with a new head, freeze them, and run them on a batch.

Image models are built exactly as ``lumenserve.bundle.eager.build_eager_model`` rebuilds
them (``torchvision.models.get_model(name, weights=None, num_classes=n)``) and then take the
pretrained state dict from the weights enum minus the classifier-head keys. Text models
come from a local transformers checkpoint with eager attention (attentions export to ONNX).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lumenserve.bundle import ImagePreprocessing
from training.config import ModelConfig

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


def build_image_model(cfg: ModelConfig, num_classes: int) -> BuiltModel:
    import torchvision

    try:
        model = torchvision.models.get_model(cfg.name, weights=None, num_classes=num_classes)
    except ValueError as exc:
        raise ModelError(f"unknown torchvision model {cfg.name!r}") from exc
    weights = weights_enum(cfg.name, cfg.weights)
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
    pre = image_preprocessing(weights, cfg.image_size)
    return BuiltModel(model, head, preprocessing=pre, categories=categories)


def resolve_checkpoint(name: str) -> Path:
    if name in PRETRAINED_ALIASES:
        from lumenserve.assets import minilm_dir

        return minilm_dir()
    path = Path(name)
    if not path.is_dir():
        raise ModelError(f"transformers checkpoint folder {path} does not exist (or use asset:minilm)")
    return path


def build_text_model(cfg: ModelConfig, labels: list[str]) -> BuiltModel:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = resolve_checkpoint(cfg.name)
    hf_logging.set_verbosity_error()
    model = AutoModelForSequenceClassification.from_pretrained(
        path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
        attn_implementation="eager",
    )
    tokenizer = AutoTokenizer.from_pretrained(path)
    head = [n for n, _ in model.named_parameters() if n.startswith(("classifier", "score"))]
    return BuiltModel(model, head, tokenizer=tokenizer)


def _blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The backbone's stages in order: ``features`` children, ResNet layers, or encoder layers."""
    features = getattr(model, "features", None)
    if isinstance(features, torch.nn.Sequential):
        return list(features.children())
    if all(hasattr(model, f"layer{i}") for i in range(1, 5)):
        return [getattr(model, f"layer{i}") for i in range(1, 5)]
    for module in model.modules():
        layers = getattr(module, "layer", None) or getattr(module, "layers", None)
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
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total}


def forward_logits(model: torch.nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (batch, classes), targets (batch,)) for an image (x, y) batch or a text dict batch."""
    if isinstance(batch, (tuple, list)):
        x, y = batch
        return model(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)
    out = model(
        input_ids=batch["input_ids"].to(device, non_blocking=True),
        attention_mask=batch["attention_mask"].to(device, non_blocking=True),
    )
    logits = out.logits if hasattr(out, "logits") else out
    return logits, batch["labels"].to(device, non_blocking=True)
