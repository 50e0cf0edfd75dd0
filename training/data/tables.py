"""Row readers for CSV and JSONL files (plain, .gz, .bz2 or .xz) with column checks."""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import lzma
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from training.data.errors import DataError

_OPENERS: dict[str, Any] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def open_text(path: Path) -> IO[str]:
    opener = _OPENERS.get(path.suffix.lower(), open)
    try:
        return opener(path, "rt", encoding="utf-8", newline="")  # type: ignore[no-any-return]
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _missing(path: Path, wanted: list[str], available: list[str], where: str = "") -> DataError:
    missing = [c for c in wanted if c not in available]
    return DataError(
        f"{path}{where}: missing column {', '.join(map(repr, missing))} (available: {', '.join(available) or 'none'})"
    )


def read_rows(path: str | Path, columns: list[str], fmt: str) -> Iterator[dict[str, Any]]:
    """Rows of a CSV (with header) or JSONL file, each checked to have ``columns``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"cannot read {path}: no such file")
    try:
        with open_text(path) as fh:
            if fmt == "jsonl":
                for number, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path} line {number}: not valid JSON ({exc.msg})") from exc
                    if not isinstance(row, dict) or any(c not in row for c in columns):
                        available = sorted(row) if isinstance(row, dict) else []
                        raise _missing(path, columns, available, f" line {number}")
                    yield row
            else:
                reader = csv.DictReader(fh)
                header = list(reader.fieldnames or [])
                if any(c not in header for c in columns):
                    raise _missing(path, columns, header)
                yield from reader
    except (UnicodeDecodeError, EOFError, OSError, csv.Error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
