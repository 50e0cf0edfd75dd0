"""What the user asked for (the ``lumenserve import`` flags) and the one error type."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lumenserve.bundle import ImagePreprocessing, TensorSpec
from lumenserve.bundle.manifest import SourceKind, Task

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_IMAGE_SIZE = 224
DEFAULT_MAX_LENGTH = 128
CROP_FRACTION = 0.875  # resize_size = image_size / 0.875 when not given (256 for 224)


class ImportSourceError(ValueError):
    """A source the importer refuses; the message is one line naming the file and the fix."""


class ImageFlags(BaseModel):
    """``--image-size --resize-size --mean --std --layout --channels`` (None: not given)."""

    model_config = ConfigDict(frozen=True)

    image_size: int | None = Field(default=None, ge=1, le=4096)
    resize_size: int | None = Field(default=None, ge=1, le=4096)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: Literal["NCHW", "NHWC"] | None = None
    channels: Literal["RGB", "BGR", "L"] | None = None

    def preprocessing(self, source: str, defaults: ImagePreprocessing | None = None) -> ImagePreprocessing:
        """Flags over ``defaults`` (e.g. a Hugging Face image processor) over ImageNet defaults."""
        base = defaults or ImagePreprocessing(
            resize_size=round(DEFAULT_IMAGE_SIZE / CROP_FRACTION),
            crop_size=DEFAULT_IMAGE_SIZE,
            mean=list(IMAGENET_MEAN),
            std=list(IMAGENET_STD),
        )
        crop = self.image_size or base.crop_size
        resize = self.resize_size or (round(crop / CROP_FRACTION) if self.image_size else base.resize_size)
        colour = self.channels or ("L" if base.channels == 1 else base.channel_order)
        n_channels = 1 if colour == "L" else 3
        mean = list(self.mean) if self.mean else base.mean
        std = list(self.std) if self.std else base.std
        if colour == "BGR" and base.channel_order == "RGB":  # defaults are RGB-ordered
            mean = mean if self.mean else mean[::-1]
            std = std if self.std else std[::-1]
        if n_channels != base.channels and not (self.mean and self.std):
            mean, std = [sum(mean) / len(mean)] * n_channels, [sum(std) / len(std)] * n_channels
        try:
            return ImagePreprocessing(
                resize_size=max(resize, crop),
                crop_size=crop,
                mean=mean,
                std=std,
                channels=1 if colour == "L" else 3,
                interpolation=base.interpolation,
                layout=self.layout or base.layout,
                channel_order="RGB" if colour == "L" else colour,
            )
        except ValueError as exc:
            first = str(exc).splitlines()[-1].strip()
            raise ImportSourceError(
                f"{source}: bad preprocessing flags ({first}); fix --mean/--std/--channels"
            ) from exc


class ImportOptions(BaseModel):
    """Everything ``lumenserve import`` takes besides SOURCE, REPOSITORY and NAME."""

    model_config = ConfigDict(frozen=True)

    source_kind: SourceKind | None = None
    """``--from``: None detects it from the content."""
    task: Task | None = None
    """None: tensor for ONNX/TorchScript, the head's task for Hugging Face, image for torchvision."""
    architecture: str | None = None
    """torchvision architecture name (``--architecture resnet18``)."""
    labels_file: Path | None = None
    image: ImageFlags = ImageFlags()
    tokenizer_dir: Path | None = None
    max_length: int | None = Field(default=None, ge=2, le=8192)
    inputs: tuple[TensorSpec, ...] = ()
    """``--input NAME:DATATYPE:SHAPE`` (TorchScript tensor models)."""
    tolerance: float = Field(default=1e-4, gt=0)


def read_labels(path: Path) -> list[str]:
    """Labels from a JSON list or one label per line (blank lines ignored)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportSourceError(
            f"{path}: cannot read the labels file ({exc.__class__.__name__}); give a UTF-8 text file"
        ) from exc
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            labels = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ImportSourceError(
                f"{path}: not valid JSON ({exc.msg}); give a JSON list of strings or one label per line"
            ) from exc
        if not isinstance(labels, list) or not all(isinstance(x, str | int) for x in labels):
            raise ImportSourceError(f"{path}: the JSON must be a list of strings")
        labels = [str(x) for x in labels]
    else:
        labels = [line.strip() for line in text.splitlines() if line.strip()]
    if len(labels) < 2:
        raise ImportSourceError(f"{path}: {len(labels)} label(s); a classifier needs at least 2")
    return labels


def parse_input_spec(text: str) -> TensorSpec:
    """``NAME:DATATYPE:SHAPE`` with SHAPE comma-separated, -1 for a variable dim (``x:FP32:-1,3,8,8``)."""
    parts = text.split(":")
    if len(parts) != 3:
        raise ValueError(f"--input {text!r}: expected NAME:DATATYPE:SHAPE, e.g. input:FP32:-1,3,224,224")
    name, datatype, shape = parts
    try:
        dims = [int(d) for d in shape.split(",") if d.strip()]
        return TensorSpec.model_validate({"name": name, "datatype": datatype.upper(), "shape": dims})
    except ValueError as exc:
        raise ValueError(f"--input {text!r}: expected NAME:DATATYPE:SHAPE, e.g. input:FP32:-1,3,224,224") from exc
