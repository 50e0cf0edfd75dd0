"""A CSV manifest of images: one row per image with a path column and a label column."""

from __future__ import annotations

from pathlib import Path

from training.data.tables import read_rows


def read_csv_manifest(
    path: str | Path, path_column: str = "path", label_column: str = "label"
) -> list[tuple[Path, str]]:
    """(image path, label); relative paths resolve against the CSV's folder."""
    path = Path(path)
    base = path.parent
    out = []
    for row in read_rows(path, [path_column, label_column], "csv"):
        image = Path(str(row[path_column]).strip())
        out.append((image if image.is_absolute() else base / image, str(row[label_column]).strip()))
    return out
