"""A class-per-folder image tree (torchvision's ImageFolder layout): ROOT/CLASS/IMAGE."""

from __future__ import annotations

from pathlib import Path

from training.data.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def read_image_folder(root: str | Path) -> list[tuple[Path, str]]:
    """(image path, class folder name) for every image file, in sorted order."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"cannot read image folder {root}: no such directory")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"image folder {root} has no class sub-folders (expected ROOT/CLASS/IMAGE)")
    items = [
        (path, folder.name)
        for folder in classes
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not items:
        raise DataError(f"image folder {root} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return items
