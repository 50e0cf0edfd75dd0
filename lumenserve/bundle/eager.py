"""Rebuild the eager PyTorch model (and tokenizer) of a bundle from its manifest alone.

Used by explain (gradients need eager modules) and by export parity checks. Weights come
only from the bundle's safetensors file; pickle formats are never loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lumenserve.bundle.errors import BundleError
from lumenserve.bundle.manifest import TextPreprocessing, TorchvisionArchitecture, TransformersArchitecture
from lumenserve.bundle.reader import Bundle

if TYPE_CHECKING:
    import torch


def build_eager_model(bundle: Bundle) -> torch.nn.Module:
    """The bundle's model in eval mode on CPU with its trained weights.

    Image bundles answer ``model(images)`` with logits (batch, classes) whatever the family
    (a transformers image classifier is wrapped); text bundles answer the transformers model.
    """
    from safetensors.torch import load_file

    arch = bundle.manifest.architecture
    model: torch.nn.Module
    if arch is None:
        raise BundleError(f"{bundle.root}: bundle has no eager model (imported from ONNX or TorchScript)")
    if isinstance(arch, TorchvisionArchitecture):
        import torchvision

        model = torchvision.models.get_model(arch.name, weights=None, num_classes=arch.num_classes)
    elif isinstance(arch, TransformersArchitecture):
        from transformers import AutoConfig, AutoModelForSequenceClassification

        config = AutoConfig.from_pretrained(bundle.subdir(arch.config_dir))
        if arch.head == "image-classification":
            from lumenserve.bundle.hf_image import from_config

            model = from_config(config)  # pixel_values -> logits
        else:
            model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    else:  # pragma: no cover - the schema admits only the two families
        raise BundleError(f"unknown architecture family in {bundle.root}")
    state = load_file(str(bundle.path("safetensors")))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied or buffer-only keys (e.g. position_ids) may legitimately be absent.
    real_missing = [k for k in missing if not k.endswith("position_ids")]
    if real_missing or unexpected:
        raise BundleError(
            f"{bundle.root}: weights do not fit the architecture "
            f"(missing {real_missing[:5]}, unexpected {list(unexpected)[:5]})"
        )
    return model.eval()


def load_serving_tokenizer(bundle: Bundle) -> Any:
    """The bundle's tokenizer for serving: read with the ``tokenizers`` library when the bundle
    holds a ``tokenizer.json`` (no transformers, no torch), else transformers'."""
    from lumenserve.bundle.text import FileTokenizer

    pre = bundle.manifest.preprocessing
    if isinstance(pre, TextPreprocessing) and FileTokenizer.usable(bundle.subdir(pre.tokenizer_dir)):
        return FileTokenizer(bundle.subdir(pre.tokenizer_dir), pre)
    return load_tokenizer(bundle)


def load_tokenizer(bundle: Bundle) -> Any:
    """The bundle's tokenizer (text bundles only)."""
    pre = bundle.manifest.preprocessing
    if not isinstance(pre, TextPreprocessing):
        raise BundleError(f"{bundle.root}: not a text bundle")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(bundle.subdir(pre.tokenizer_dir))
