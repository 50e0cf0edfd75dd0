"""Cleaning and splitting, with every dropped example counted by reason.

Reasons: ``empty_text``, ``empty_image``, ``undecodable_image``, ``unknown_label``,
``duplicate`` (same content twice in one split) and ``duplicate_across_splits`` (an
evaluation example whose content is also in training, or a test example also in validation).
"""

from __future__ import annotations

import hashlib
import random
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_SPACES = re.compile(r"\s+")


@dataclass
class Example:
    """One labelled example. ``item``: text, an image array (H, W[, C]) uint8, or an image path."""

    item: Any
    label: str
    key: str = ""
    """Content hash used for duplicate detection."""


@dataclass
class DataReport:
    """What the data step read, dropped (by reason) and kept (class counts per split)."""

    sources: dict[str, str] = field(default_factory=dict)
    read: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)

    def drop(self, split: str, reason: str, n: int = 1) -> None:
        if n:
            self.dropped[split][reason] += n

    def dropped_total(self, reason: str) -> int:
        return sum(c[reason] for c in self.dropped.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "sources": dict(self.sources),
            "read": dict(self.read),
            "dropped": {split: dict(sorted(c.items())) for split, c in self.dropped.items()},
            "dropped_total": dict(sum(self.dropped.values(), Counter())),
            "class_counts": self.class_counts,
            "labels": list(self.labels),
        }


def normalize_text(text: str) -> str:
    """Unicode NFKC, whitespace runs collapsed to one space, stripped."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def clean_text(examples: Sequence[Example], report: DataReport, split: str) -> list[Example]:
    kept = []
    for ex in examples:
        text = normalize_text(str(ex.item))
        if not text:
            report.drop(split, "empty_text")
            continue
        kept.append(Example(text, ex.label, hashlib.sha1(text.encode()).hexdigest()))
    return kept


def _image_key(ex: Example, report: DataReport, split: str) -> str | None:
    """Content hash of a decodable, non-empty image; None (and a counted drop) otherwise."""
    if isinstance(ex.item, np.ndarray):
        if ex.item.size == 0:
            report.drop(split, "empty_image")
            return None
        return hashlib.sha1(ex.item.tobytes() + str(ex.item.shape).encode()).hexdigest()
    from PIL import Image, UnidentifiedImageError

    path = Path(ex.item)
    try:
        data = path.read_bytes()
    except OSError:
        report.drop(split, "undecodable_image")
        return None
    if not data:
        report.drop(split, "empty_image")
        return None
    try:
        with Image.open(path) as img:
            img.load()
            if img.width == 0 or img.height == 0:
                report.drop(split, "empty_image")
                return None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        report.drop(split, "undecodable_image")
        return None
    return hashlib.sha1(data).hexdigest()


def clean_images(examples: Sequence[Example], report: DataReport, split: str) -> list[Example]:
    kept = []
    for ex in examples:
        key = _image_key(ex, report, split)
        if key is not None:
            kept.append(Example(ex.item, ex.label, key))
    return kept


def keep_labels(examples: Sequence[Example], allowed: set[str], report: DataReport, split: str) -> list[Example]:
    kept = [ex for ex in examples if ex.label in allowed]
    report.drop(split, "unknown_label", len(examples) - len(kept))
    return kept


def drop_duplicates(
    examples: Sequence[Example],
    report: DataReport,
    split: str,
    seen_elsewhere: set[str] = frozenset(),  # type: ignore[assignment]
) -> list[Example]:
    """Keep the first of each content key; drop keys already in other (earlier) splits."""
    seen: set[str] = set()
    kept = []
    for ex in examples:
        if ex.key in seen_elsewhere:
            report.drop(split, "duplicate_across_splits")
        elif ex.key in seen:
            report.drop(split, "duplicate")
        else:
            seen.add(ex.key)
            kept.append(ex)
    return kept


def stratified_take(examples: Sequence[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Split into (taken, rest), taking ``fraction`` of every class (at least one where a class has two)."""
    by_class: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        by_class[ex.label].append(ex)
    rng = random.Random(seed)
    taken: list[Example] = []
    rest: list[Example] = []
    for label in sorted(by_class):
        group = by_class[label][:]
        rng.shuffle(group)
        n = round(len(group) * fraction)
        if n == 0 and len(group) >= 2 and fraction > 0:
            n = 1
        taken += group[:n]
        rest += group[n:]
    rng.shuffle(taken)
    rng.shuffle(rest)
    return taken, rest


def stratified_subsample(examples: Sequence[Example], limit: int | None, seed: int) -> list[Example]:
    if limit is None or len(examples) <= limit:
        return list(examples)
    taken, _ = stratified_take(examples, limit / len(examples), seed)
    return taken[:limit]


def class_counts(examples: Sequence[Example], labels: Sequence[str]) -> dict[str, int]:
    counts = Counter(ex.label for ex in examples)
    return {label: counts.get(label, 0) for label in labels}
