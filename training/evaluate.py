"""Evaluation: predictions over a loader, then accuracy, macro-F1, per-class precision/recall,
confusion matrix and expected calibration error (with the reliability-diagram bins)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from training.models import forward_logits

ECE_BINS = 15


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    loader: DataLoader[Any],
    device: torch.device,
    autocast: AbstractContextManager[Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """(probabilities (N, K) float32, targets (N,) int64, mean cross-entropy loss)."""
    was_training = model.training
    model.eval()
    probs, targets, loss_sum = [], [], 0.0
    for batch in loader:
        with autocast or nullcontext():
            logits, y = forward_logits(model, batch, device)  # (batch, K), (batch,)
        logits = logits.float()
        loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
        probs.append(torch.softmax(logits, dim=-1).cpu().numpy())
        targets.append(y.cpu().numpy())
    model.train(was_training)
    p = np.concatenate(probs).astype(np.float32)
    t = np.concatenate(targets).astype(np.int64)
    return p, t, loss_sum / max(1, len(t))


def calibration(probs: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> dict[str, Any]:
    """Expected calibration error over equal-width confidence bins, plus the bins themselves."""
    confidence = probs.max(axis=1)  # (N,)
    correct = (probs.argmax(axis=1) == targets).astype(np.float64)  # (N,)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        acc = float(correct[mask].mean()) if n else 0.0
        conf = float(confidence[mask].mean()) if n else 0.0
        ece += n / max(1, len(targets)) * abs(acc - conf)
        rows.append(
            {"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": n, "accuracy": acc, "confidence": conf}
        )
    return {"ece": float(ece), "bins": rows}


def classification_metrics(probs: np.ndarray, targets: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    k = len(labels)
    preds = probs.argmax(axis=1)
    idx = list(range(k))
    precision, recall, f1, support = precision_recall_fscore_support(targets, preds, labels=idx, zero_division=0)
    cal = calibration(probs, targets)
    return {
        "accuracy": float((preds == targets).mean()) if len(targets) else 0.0,
        "macro_f1": float(f1_score(targets, preds, labels=idx, average="macro", zero_division=0)),
        "ece": cal["ece"],
        "samples": len(targets),
        "per_class": {
            labels[i]: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i in idx
        },
        "confusion_matrix": confusion_matrix(targets, preds, labels=idx).tolist(),
        "reliability": cal["bins"],
    }
