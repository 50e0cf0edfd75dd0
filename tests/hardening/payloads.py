"""Hostile and normal payloads: images (good, corrupt, truncated, bombs), BYTES framing, tensors."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

IMAGE_SHAPE = (1, 3, 32, 32)


def good_image_tensor(seed: int = 0) -> np.ndarray:
    """A valid preprocessed image batch for tiny-image: FP32 (1, 3, 32, 32)."""
    return np.random.default_rng(seed).standard_normal(IMAGE_SHAPE, dtype=np.float32)  # (batch, C, H, W)


def jpeg(seed: int = 0, size: tuple[int, int] = (61, 47)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)  # (H, W, C)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def png(seed: int = 0, size: tuple[int, int] = (40, 40)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)  # (H, W, C)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def other_format(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (10, 20, 30)).save(buffer, fmt)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int, idat: bytes | None = None) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` RGB pixels (a decompression bomb's shape)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = idat if idat is not None else zlib.compress(b"\x00" * 1024, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def png_zlib_bomb(side: int = 5000) -> bytes:
    """A PNG of ``side`` x ``side`` grey pixels whose IDAT is a few KB of zlib that inflates to side² bytes."""
    row = b"\x00" + b"\x00" * side  # filter byte + one grey byte per pixel
    raw = zlib.compress(row * side, 9)
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", raw) + _chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF0 frame header is patched to declare ``width`` x ``height``."""
    data = bytearray(jpeg(1, (16, 16)))
    sof = data.find(b"\xff\xc0")
    assert sof > 0
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def bytes_raw(items: list[bytes]) -> bytes:
    """BYTES elements in raw form: 4-byte little-endian length, then the bytes."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)
