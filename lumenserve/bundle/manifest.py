"""The bundle manifest schema (``manifest.json``), format version 1 (new fields optional).

A bundle is ``REPO/NAME/VERSION/`` holding ``manifest.json`` and the artifacts it lists.
Everything serving or explaining needs is in the manifest, so no training code is
imported to rebuild a model. Documented in docs/bundle.md.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
MANIFEST_NAME = "manifest.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")  # \Z: "$" would accept a trailing newline

Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BF16", "BYTES",
]  # fmt: skip
Task = Literal["image-classification", "text-classification", "tensor"]
# Kinds of artifact a bundle may hold. Pickle formats are deliberately absent.
# "adapter": LoRA adapter weights kept for reuse (the served model has them merged in).
ArtifactKind = Literal["onnx", "onnx_data", "torchscript", "safetensors", "tokenizer", "config", "report", "adapter"]
LOADABLE_KINDS = ("onnx", "torchscript", "safetensors")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    """One model input or output: name, datatype, shape (-1 marks a variable dim)."""

    name: str
    datatype: Datatype
    shape: list[int]

    @field_validator("shape")
    @classmethod
    def _dims(cls, shape: list[int]) -> list[int]:
        if any(d < -1 or d == 0 for d in shape):
            raise ValueError(f"dims must be positive or -1, got {shape}")
        return shape


class TorchvisionArchitecture(_Strict):
    """Rebuilt with ``torchvision.models.get_model(name, num_classes=num_classes)``."""

    family: Literal["torchvision"] = "torchvision"
    name: str
    num_classes: int = Field(ge=2)
    gradcam_layer: str | None = None
    """Dotted module path of the default Grad-CAM layer (e.g. ``features.18``)."""


class TransformersArchitecture(_Strict):
    """Rebuilt from ``config_dir`` with ``AutoModelForSequenceClassification.from_config`` (head
    ``sequence-classification``) or ``AutoModelForImageClassification.from_config`` wrapped in
    ``lumenserve.bundle.hf_image.HFImageClassifier`` (head ``image-classification``)."""

    family: Literal["transformers"] = "transformers"
    config_dir: str
    num_labels: int = Field(ge=2)
    model_type: str = "bert"
    head: Literal["sequence-classification", "image-classification"] = "sequence-classification"
    """Which auto class rebuilds it: ``AutoModelFor{Sequence,Image}Classification``."""
    gradcam_layer: str | None = None
    """Image heads: dotted module path of the default Grad-CAM layer in the wrapped model."""


Architecture = Annotated[TorchvisionArchitecture | TransformersArchitecture, Field(discriminator="family")]


class ImagePreprocessing(_Strict):
    """Decode -> RGB (or L) -> resize shorter side -> center crop -> scale to [0,1] -> normalise."""

    kind: Literal["image"] = "image"
    resize_size: int = Field(ge=1, le=4096)
    crop_size: int = Field(ge=1, le=4096)
    mean: list[float]
    std: list[float]
    channels: Literal[1, 3] = 3
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    """Axis order of the model's image input: (batch, C, H, W) or (batch, H, W, C)."""
    channel_order: Literal["RGB", "BGR"] = "RGB"
    """Order of the 3 colour channels (mean/std follow it); always RGB for 1 channel (L)."""

    @model_validator(mode="after")
    def _lengths(self) -> ImagePreprocessing:
        if self.channels == 1 and self.channel_order != "RGB":
            raise ValueError("channel_order BGR needs 3 channels")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError("mean and std need one value per channel")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        return self


class TextPreprocessing(_Strict):
    """Tokenise with the tokenizer in ``tokenizer_dir``; truncate to ``max_length`` tokens."""

    kind: Literal["text"] = "text"
    tokenizer_dir: str
    max_length: int = Field(ge=2, le=8192)
    lowercase: bool = False
    pad_to_max_length: bool = False
    """Always pad to ``max_length`` (the model's sequence axis is fixed), not to the longest text."""


Preprocessing = Annotated[ImagePreprocessing | TextPreprocessing, Field(discriminator="kind")]


class Artifact(_Strict):
    """One file of the bundle, relative to the version folder, with its sha256."""

    path: str
    kind: ArtifactKind
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ParityRecord(_Strict):
    """Export parity: max |exported - eager| over held-out inputs at several batch sizes."""

    runtime: Literal["onnx", "torchscript"]
    batch_sizes: list[int]
    max_abs_diff: float = Field(ge=0)
    tolerance: float = Field(gt=0)


SourceKind = Literal["onnx", "torchscript", "hf", "torchvision"]


class ImportRecord(_Strict):
    """How ``lumenserve import`` made the bundle, and the check run it did on generated inputs."""

    source_kind: SourceKind
    source: str
    """File or folder name of the source (no directories)."""
    source_sha256: str | None = None
    """sha256 of the source file (single-file sources only)."""
    check_inputs: list[TensorSpec]
    """The generated inputs of the check run, with their concrete shapes."""
    check_outputs: list[TensorSpec]
    """What the model answered to them: names, datatypes, concrete shapes."""
    notes: list[str] = []
    """Choices the importer made that the user did not state (e.g. input specs from a sample run)."""


class Manifest(_Strict):
    format_version: int
    name: str
    version: int = Field(ge=1)
    task: Task
    architecture: Architecture | None = None
    """How to rebuild the eager model; None when the bundle has no eager weights (ONNX/TorchScript only)."""
    labels: list[str] = []
    """Class names (classification: at least 2; tensor: optional, usually empty)."""
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)
    preprocessing: Preprocessing | None = None
    """Classification: required; tensor: None (inputs are served as-is)."""
    artifacts: list[Artifact] = Field(min_length=1)
    parity: list[ParityRecord] = []
    training: dict[str, Any] = {}
    imported: ImportRecord | None = None
    created_at: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not NAME_PATTERN.match(name) or ".." in name:
            raise ValueError(f"invalid model name {name!r}")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        arch = self.architecture
        if arch is not None:
            n = arch.num_classes if isinstance(arch, TorchvisionArchitecture) else arch.num_labels
            if n != len(self.labels):
                raise ValueError(f"architecture has {n} classes but {len(self.labels)} labels are listed")
        image_task = self.task == "image-classification"
        if isinstance(arch, TransformersArchitecture) and image_task != (arch.head == "image-classification"):
            raise ValueError(f"architecture head {arch.head!r} does not fit task {self.task!r}")
        pre = self.preprocessing
        if self.task == "tensor":
            if pre is not None:
                raise ValueError("task 'tensor' takes no preprocessing")
        else:
            if len(self.labels) < 2:
                raise ValueError(f"task {self.task!r} needs at least 2 labels")
            wanted = ImagePreprocessing if self.task == "image-classification" else TextPreprocessing
            if not isinstance(pre, wanted):
                kind = pre.kind if pre is not None else None
                raise ValueError(f"preprocessing kind {kind!r} does not fit task {self.task!r}")
        if arch is None and not any(a.kind in ("onnx", "torchscript") for a in self.artifacts):
            raise ValueError("a bundle without architecture needs an onnx or torchscript artifact")
        paths = [a.path for a in self.artifacts]
        if len(set(paths)) != len(paths):
            raise ValueError("artifact paths must be unique")
        return self

    def artifact(self, kind: ArtifactKind) -> Artifact | None:
        """The first artifact of a kind, or None."""
        return next((a for a in self.artifacts if a.kind == kind), None)
