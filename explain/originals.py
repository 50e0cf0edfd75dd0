"""The part of an original photo the model saw, at the photo's own resolution (for overlays).

Preprocessing resizes the shorter side to ``resize_size`` and takes the centered
``crop_size`` square; in the original's pixels that square has side
``short_side * crop_size / resize_size``. Overlays are drawn on that region, so a heatmap
of a 224 px model input lands on, say, a 448 px crop of a 600x448 photo. The region is
scaled down to at most ``max_side`` pixels to keep PNGs small.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from lumenserve.bundle import ImagePreprocessing

MAX_SIDE = 1024


def crop_region(data: bytes, pre: ImagePreprocessing, *, max_side: int = MAX_SIDE) -> np.ndarray:
    """Encoded image -> uint8 (H, W, 3) of the region the model's center crop covers."""
    with Image.open(io.BytesIO(data)) as opened:
        if opened.format == "JPEG":
            opened.draft("RGB", (max_side, max_side))  # decode at reduced size when much larger
        image = opened.convert("RGB")
    width, height = image.size
    side = max(1, round(min(width, height) * pre.crop_size / pre.resize_size))
    left, top = round((width - side) / 2.0), round((height - side) / 2.0)
    region = image.crop((left, top, left + side, top + side))
    if max(region.size) > max_side:
        region = region.resize((max_side, max_side), Image.Resampling.BILINEAR)
    return np.asarray(region, dtype=np.uint8)  # (H, W, 3)
