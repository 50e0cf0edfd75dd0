"""Triton's classification extension: top-k ``"score:index:label"`` strings per row."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """(batch, classes) scores -> (batch, min(k, classes)) class indices, best first (ties: lower index)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, : min(k, scores.shape[1])]


def top_k_strings(scores: np.ndarray, k: int, labels: Sequence[str]) -> np.ndarray:
    """(batch, classes) scores -> (batch, k) object array of b"score:index:label"."""
    order = top_k(scores, k)  # (batch, k)
    picked = scores[np.arange(len(order))[:, None], order].tolist()  # (batch, k) as Python floats
    out = np.empty(order.shape, dtype=np.object_)
    for row, (indices, values) in enumerate(zip(order.tolist(), picked, strict=True)):
        out[row] = [
            f"{value:f}:{index}:{labels[index] if index < len(labels) else ''}".encode()
            for index, value in zip(indices, values, strict=True)
        ]
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32. (batch, classes) -> (batch, classes)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted, dtype=np.float32)
    return exp / exp.sum(axis=1, keepdims=True)
