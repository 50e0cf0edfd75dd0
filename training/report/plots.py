"""Matplotlib figures of a run, each written as a PNG into the run folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

PLOT_FILES = ("curves.png", "confusion_matrix.png", "reliability.png", "samples.png")


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curves(history: Sequence[dict[str, Any]], metric: str, path: Path, label_smoothing: float = 0.0) -> Path:
    """Training/validation loss, validation metric, and learning rate against optimizer step."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    train = [r for r in history if "train_loss" in r]
    val = [r for r in history if "val_loss" in r]
    axes[0].plot([r["step"] for r in train], [r["train_loss"] for r in train],
                 label=f"train (label smoothing {label_smoothing:g})" if label_smoothing else "train")  # fmt: skip
    axes[0].plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation")
    axes[0].set(title="loss", xlabel="step")
    axes[0].legend()
    key = f"val_{metric}"
    axes[1].plot([r["step"] for r in val], [r[key] for r in val], "o-", color="tab:green")
    axes[1].set(title=f"validation {metric}", xlabel="step")
    axes[2].plot([r["step"] for r in train], [r["lr"] for r in train], color="tab:orange")
    axes[2].set(title="learning rate", xlabel="step")
    for ax in axes:
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path) -> Path:
    cm = np.asarray(matrix)  # (true, predicted)
    k = len(labels)
    size = max(4.0, 0.55 * k + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true", title="confusion matrix (test)")
    ax.set_xticklabels(labels, rotation=45, ha="right")
    ax.set_yticklabels(labels)
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if cm[i, j] > threshold else "black")  # fmt: skip
    return _save(fig, path)


def plot_reliability(bins: Sequence[dict[str, Any]], ece: float, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    centers = [(b["lower"] + b["upper"]) / 2 for b in bins]
    width = bins[0]["upper"] - bins[0]["lower"] if bins else 0.1
    accs = [b["accuracy"] if b["count"] else 0.0 for b in bins]
    ax.bar(centers, accs, width=width * 0.95, edgecolor="black", label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=f"reliability (ECE {ece:.3f})")
    ax.legend(loc="upper left")
    return _save(fig, path)


def plot_image_samples(images: Sequence[Any], true: Sequence[str], pred: Sequence[str], path: Path) -> Path:
    """A grid of images titled with true and predicted labels (wrong ones in red)."""
    n = len(images)
    cols = min(8, max(1, n))
    rows = max(1, (n + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 2.3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, t, p in zip(axes.ravel(), images, true, pred, strict=False):
        ax.imshow(img, cmap="gray" if getattr(img, "mode", "") == "L" else None)  # grayscale stays grey
        ax.set_title(f"true {t}\npred {p}", fontsize=7, color="black" if t == p else "red")
    return _save(fig, path)


def plot_text_samples(
    texts: Sequence[str], true: Sequence[str], pred: Sequence[str], conf: Sequence[float], path: Path
) -> Path:
    """A table of example texts with true and predicted labels."""
    rows = [
        [(t[:90] + "…") if len(t) > 90 else t, a, b, f"{c:.2f}"]
        for t, a, b, c in zip(texts, true, pred, conf, strict=True)
    ]
    fig, ax = plt.subplots(figsize=(12, 0.32 * len(rows) + 0.8))
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=["text", "true", "predicted", "confidence"], loc="center",
                     cellLoc="left", colWidths=[0.74, 0.09, 0.09, 0.08])  # fmt: skip
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    for i, (_, a, b, _) in enumerate(rows, start=1):
        if a != b:
            for j in range(4):
                table[i, j].set_text_props(color="red")
    ax.set_title("sample test predictions")
    return _save(fig, path)


def write_plots(run_dir: Path, summary: dict[str, Any], samples: dict[str, Any]) -> list[Path]:
    """All PNGs of a run. ``samples``: {kind: image|text, items, true, pred, conf}."""
    test = summary["test"]
    paths = [
        plot_curves(
            summary["history"],
            summary["recipe"]["train"]["metric"],
            run_dir / "curves.png",
            summary["recipe"]["train"].get("label_smoothing", 0.0),
        ),
        plot_confusion(test["confusion_matrix"], summary["labels"], run_dir / "confusion_matrix.png"),
        plot_reliability(test["reliability"], test["ece"], run_dir / "reliability.png"),
    ]
    if samples["kind"] == "image":
        paths.append(plot_image_samples(samples["items"], samples["true"], samples["pred"], run_dir / "samples.png"))
    else:
        paths.append(
            plot_text_samples(
                samples["items"], samples["true"], samples["pred"], samples["conf"], run_dir / "samples.png"
            )
        )
    return paths
