"""Real photos for the raw-BYTES load, and the same photos preprocessed for the FP32 load.

Sources, in order, whichever exist: Debian darknet's sample photos, scikit-learn's two
photos (china.jpg, flower.jpg). Each photo also comes mirrored and cropped (re-encoded as
JPEG), so there are enough distinct inputs for explanations never to repeat one (the
server caches explanations). Every contender cycles through the same list in the same
order, so JPEG decoding costs them all alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lumenserve.bundle import Bundle, ImagePreprocessing
from serving.codecs.image import ImageCodec

DARKNET = Path("/usr/share/darknet/data")
DARKNET_PHOTOS = ("dog.jpg", "eagle.jpg", "giraffe.jpg", "horses.jpg", "kite.jpg", "person.jpg")


def photo_paths() -> list[Path]:
    paths = [DARKNET / name for name in DARKNET_PHOTOS if (DARKNET / name).is_file()]
    try:
        import sklearn.datasets

        images = Path(sklearn.datasets.__file__).parent / "images"
        paths += [images / name for name in ("china.jpg", "flower.jpg") if (images / name).is_file()]
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        pass
    if not paths:
        raise FileNotFoundError("no sample photos found (install scikit-learn or Debian's darknet)")
    return paths


@dataclass(frozen=True)
class Workload:
    """The photos (encoded) and their preprocessed tensors, index-aligned."""

    names: list[str]
    jpegs: list[bytes]
    tensors: list[np.ndarray]  # each (1, C, H, W) float32
    codec: ImageCodec

    def __len__(self) -> int:
        return len(self.jpegs)


def image_workload(bundle: Bundle, *, max_pixels: int = 40_000_000, draft: bool = True) -> Workload:
    """Photos + tensors made by the server's own codec with the server's default settings."""
    pre = bundle.manifest.preprocessing
    if not isinstance(pre, ImagePreprocessing):
        raise ValueError(f"{bundle.name} is not an image model: the benchmark needs an image-classification bundle")
    codec = ImageCodec(pre, max_pixels=max_pixels, draft=draft)
    names: list[str] = []
    jpegs: list[bytes] = []
    for path in photo_paths():
        for suffix, data in variants(path.read_bytes()):
            names.append(path.name + suffix)
            jpegs.append(data)
    tensors = [codec([data]) for data in jpegs]  # each (1, C, H, W)
    return Workload(names, jpegs, tensors, codec)


def variants(jpeg: bytes) -> list[tuple[str, bytes]]:
    """The photo as shipped, mirrored, and center-cropped to 90 % (both re-encoded, quality 90)."""
    import io

    from PIL import Image, ImageOps

    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    w, h = image.size
    dw, dh = w // 20, h // 20
    out = [("", jpeg)]
    for suffix, changed in (
        (" (mirrored)", ImageOps.mirror(image)),
        (" (cropped)", image.crop((dw, dh, w - dw, h - dh))),
    ):
        buffer = io.BytesIO()
        changed.save(buffer, format="JPEG", quality=90)
        out.append((suffix, buffer.getvalue()))
    return out
