"""Text classification rows from CSV or JSONL with configurable text and label columns."""

from __future__ import annotations

from pathlib import Path

from training.data.tables import read_rows


def read_text_table(
    path: str | Path, fmt: str, text_column: str = "text", label_column: str = "label"
) -> list[tuple[str, str]]:
    """(raw text, label as string) per row; missing values become empty strings (cleaning drops them)."""
    rows = read_rows(path, [text_column, label_column], fmt)
    return [
        (str(r[text_column] or ""), str(r[label_column] if r[label_column] is not None else "").strip()) for r in rows
    ]
