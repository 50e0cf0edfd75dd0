"""The model code a peer's user writes: ONNX Runtime on the model file, JPEG decoded with
Pillow the torchvision way (resize the shorter side, center crop, scale, normalise).

Runs inside a peer's venv (numpy, Pillow, onnxruntime only; no lumenserve). Both peer
servers wrap this one class, so they differ only in the server around it. The answer is the
top-5 classes as ``score:index:label`` strings, the answer lumenserve gives the same client.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

TOP_K = 5


class OnnxImageClassifier:
    def __init__(self, config_path: str | Path) -> None:
        config: dict[str, Any] = json.loads(Path(config_path).read_text())
        self.session = ort.InferenceSession(config["onnx"], providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.resize = int(config["resize_size"])
        self.crop = int(config["crop_size"])
        self.mode = "RGB" if len(config["mean"]) == 3 else "L"
        self.mean = np.asarray(config["mean"], dtype=np.float32).reshape(-1, 1, 1)  # (C, 1, 1)
        self.std = np.asarray(config["std"], dtype=np.float32).reshape(-1, 1, 1)
        self.labels: list[str] = config["labels"]

    def preprocess(self, jpeg: bytes) -> np.ndarray:
        """JPEG bytes -> (C, crop, crop) float32, as torchvision's Resize/CenterCrop/Normalize."""
        image = Image.open(io.BytesIO(jpeg)).convert(self.mode)
        w, h = image.size
        scale = self.resize / min(w, h)
        image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
        w, h = image.size
        left, top = round((w - self.crop) / 2.0), round((h - self.crop) / 2.0)
        image = image.crop((left, top, left + self.crop, top + self.crop))
        pixels = np.asarray(image, dtype=np.float32).reshape(self.crop, self.crop, -1)  # (H, W, C)
        pixels = pixels.transpose(2, 0, 1) / 255.0  # (C, H, W)
        return (pixels - self.mean) / self.std

    def classify(self, images: np.ndarray) -> list[list[str]]:
        """(batch, C, H, W) float32 -> per image the top-5 ``score:index:label``."""
        (logits,) = self.session.run(None, {self.input_name: images.astype(np.float32, copy=False)})  # (batch, K)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)  # (batch, K)
        k = min(TOP_K, probabilities.shape[1])
        best = np.argsort(-probabilities, axis=1)[:, :k]  # (batch, k)
        return [[f"{p[i]:f}:{i}:{self.labels[i]}" for i in row] for p, row in zip(probabilities, best, strict=True)]

    def classify_jpegs(self, jpegs: list[bytes]) -> list[list[str]]:
        return self.classify(np.stack([self.preprocess(j) for j in jpegs]))  # (batch, C, crop, crop)
