"""torch Datasets over prepared examples: images through torchvision v2 transforms, text
pre-tokenised and padded per batch (dynamic padding)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode, v2

from lumenserve.bundle import ImagePreprocessing
from training.data.cleaning import Example


def image_transforms(pre: ImagePreprocessing, train: bool, augment: bool = True) -> v2.Compose:
    """The bundle's preprocessing (resize shorter side, center crop, scale, normalise); for
    training with ``augment``, a random crop and horizontal flip instead of the center crop."""
    interpolation = InterpolationMode(pre.interpolation)
    crop: list[Any] = (
        [v2.RandomCrop(pre.crop_size), v2.RandomHorizontalFlip()]
        if train and augment
        else [v2.CenterCrop(pre.crop_size)]
    )
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(pre.resize_size, interpolation=interpolation, antialias=True),
            *crop,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(pre.mean, pre.std),
        ]
    )


def load_image(item: Any, channels: int) -> Any:
    """A PIL image in RGB (or L) from an array (H, W[, C]) or a file path (grayscale -> RGB as needed)."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(item)) if isinstance(item, np.ndarray) else Image.open(Path(item))
    return img.convert("RGB" if channels == 3 else "L")


class ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """(image (C, H, W) float32, class index)."""

    def __init__(self, examples: Sequence[Example], labels: Sequence[str], transform: v2.Compose, channels: int = 3):
        index = {name: i for i, name in enumerate(labels)}
        self.items = [ex.item for ex in examples]
        self.targets = [index[ex.label] for ex in examples]
        self.transform = transform
        self.channels = channels

    def __len__(self) -> int:
        return len(self.items)

    def raw_image(self, i: int) -> Any:
        return load_image(self.items[i], self.channels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.raw_image(i)), self.targets[i]


class TextDataset(Dataset[dict[str, Any]]):
    """Pre-tokenised (truncated, unpadded) examples: {input_ids, attention_mask, labels}."""

    def __init__(self, examples: Sequence[Example], labels: Sequence[str], tokenizer: Any, max_length: int):
        index = {name: i for i, name in enumerate(labels)}
        self.texts = [str(ex.item) for ex in examples]
        self.targets = [index[ex.label] for ex in examples]
        self.encoded = tokenizer(self.texts, truncation=True, max_length=max_length)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "input_ids": self.encoded["input_ids"][i],
            "attention_mask": self.encoded["attention_mask"][i],
            "labels": self.targets[i],
        }


def text_collator(tokenizer: Any) -> Any:
    """Pads each batch to its longest sequence: {input_ids, attention_mask (batch, seq), labels (batch,)}."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer, return_tensors="pt")
