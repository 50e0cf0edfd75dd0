"""Encoded images (JPEG/PNG/WebP bytes) -> FP32 images exactly as the bundle's manifest says.

decode (JPEG at reduced size via draft mode when allowed) -> RGB/L -> resize shorter side to
``resize_size`` -> center crop ``crop_size`` -> scale to [0, 1] -> channel order (RGB or BGR)
-> normalise with mean/std (given in that channel order) -> layout (NCHW or NHWC).
Sizes follow torchvision's Resize/CenterCrop on PIL images. The pixel count declared in the
header is checked before any pixel is decoded (decompression-bomb guard).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from lumenserve.bundle import ImagePreprocessing
from serving.errors import InvalidInput

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP")


class ImageCodec:
    """Callable turning a list of encoded images into a (batch, C, H, W) FP32 array, or
    (batch, H, W, C) when the manifest's ``layout`` is NHWC."""

    def __init__(self, pre: ImagePreprocessing, *, max_pixels: int, draft: bool = True) -> None:
        self.pre = pre
        self.max_pixels = max_pixels
        self.draft = draft
        self.mode = "RGB" if pre.channels == 3 else "L"
        std = np.asarray(pre.std, dtype=np.float32)
        # x_norm = (x / 255 - mean) / std = x * scale + offset, per channel
        self.scale = (1.0 / (255.0 * std)).reshape(1, 1, -1)  # (1, 1, C)
        self.offset = (-np.asarray(pre.mean, dtype=np.float32) / std).reshape(1, 1, -1)  # (1, 1, C)

    def __call__(self, images: Sequence[bytes]) -> np.ndarray:
        size = self.pre.crop_size
        if self.pre.layout == "NHWC":
            nhwc = np.empty((len(images), size, size, self.pre.channels), dtype=np.float32)  # (batch, H, W, C)
            for i, data in enumerate(images):
                nhwc[i] = self.pixels(data, i)
            return nhwc
        out = np.empty((len(images), self.pre.channels, size, size), dtype=np.float32)  # (batch, C, H, W)
        for i, data in enumerate(images):
            hwc = self.pixels(data, i)  # (H, W, C) float32, normalised
            out[i] = hwc.transpose(2, 0, 1)
        return out

    def pixels(self, data: bytes, index: int = 0) -> np.ndarray:
        """One encoded image -> (crop, crop, C) normalised float32, channels in the manifest's order."""
        image = self._open(data, index)
        pre = self.pre
        try:
            if self.draft and image.format == "JPEG":
                image.draft(self.mode, (pre.resize_size, pre.resize_size))
            image = image.convert(self.mode)
            width, height = image.size
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = pre.resize_size, int(pre.resize_size * long / short)
            new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
            if (new_w, new_h) != (width, height):
                image = image.resize((new_w, new_h), _RESAMPLE[pre.interpolation])
            crop = pre.crop_size
            if new_w < crop or new_h < crop:
                raise InvalidInput(f"image {index}: resized to {new_w}x{new_h}, smaller than the {crop} px crop")
            top = round((new_h - crop) / 2.0)
            left = round((new_w - crop) / 2.0)
            image = image.crop((left, top, left + crop, top + crop))
            hwc = np.asarray(image, dtype=np.float32)  # (H, W) or (H, W, C)
        except InvalidInput:
            raise
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise InvalidInput(f"image {index}: cannot decode ({exc})") from None
        if hwc.ndim == 2:
            hwc = hwc[:, :, None]  # (H, W, 1)
        elif pre.channel_order == "BGR":
            hwc = hwc[:, :, ::-1]  # (H, W, 3) RGB -> BGR
        return hwc * self.scale + self.offset  # (H, W, C)

    def _open(self, data: bytes, index: int) -> Image.Image:
        if not data:
            raise InvalidInput(f"image {index}: empty")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise InvalidInput(f"image {index}: not a decodable JPEG/PNG/WebP image ({exc})") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InvalidInput(f"image {index}: too many pixels, over the limit of {self.max_pixels} ({exc})") from None
        width, height = image.size
        if width < 1 or height < 1 or width * height > self.max_pixels:
            raise InvalidInput(
                f"image {index}: declares {width}x{height} pixels, over the limit of {self.max_pixels} pixels"
            )
        return image
