"""IDX files (the MNIST / Fashion-MNIST format), gzipped or not."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from training.data.errors import DataError

# IDX type byte -> numpy dtype (big-endian)
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (``.gz`` is decompressed)."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read IDX file {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path}: IDX header says {dims} but the file holds {len(raw) - header} data bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx_pair(images_path: str | Path, labels_path: str | Path) -> list[tuple[np.ndarray, str]]:
    """(image (H, W) uint8, label as string) per item of an images/labels IDX pair."""
    images = read_idx(images_path)  # (N, H, W)
    labels = read_idx(labels_path)  # (N,)
    if images.ndim not in (3, 4) or labels.ndim != 1:
        raise DataError(f"{images_path}: expected images (N, H, W[, C]) and labels (N,), got {images.shape}")
    if len(images) != len(labels):
        raise DataError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    return [(images[i], str(int(labels[i]))) for i in range(len(images))]
