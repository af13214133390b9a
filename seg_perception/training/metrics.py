"""Confusion matrix, IoU and accuracy, and a picture of the confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


class ConfusionMatrix:
    """Accumulates ``counts[true, pred]`` over labelled pixels (ignore id excluded)."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.counts = np.zeros((num_classes, num_classes), np.int64)

    def update(self, pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> None:
        """Add one or more predicted label maps and their annotations (same shape)."""
        p = torch.as_tensor(pred).flatten().long()
        t = torch.as_tensor(target).flatten().long()
        if p.shape != t.shape:
            raise ValueError(f"prediction {tuple(p.shape)} and target {tuple(t.shape)} differ")
        n = self.num_classes
        valid = (t != self.ignore_index) & (t >= 0) & (t < n)
        idx = t[valid] * n + p[valid].clamp(0, n - 1)
        self.counts += torch.bincount(idx, minlength=n * n).reshape(n, n).cpu().numpy()

    def iou(self) -> np.ndarray:
        """Per-class IoU = TP / (TP + FP + FN); NaN for classes absent from both."""
        tp = np.diag(self.counts).astype(np.float64)
        denom = self.counts.sum(0) + self.counts.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)

    def miou(self) -> float:
        """Mean IoU over classes that occur in the annotations or the predictions."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.counts.sum()
        return float(np.trace(self.counts) / total) if total else float("nan")

    def class_accuracy(self) -> np.ndarray:
        """Per-class recall (fraction of each class's pixels labelled correctly)."""
        rows = self.counts.sum(1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(rows > 0, np.diag(self.counts) / np.maximum(rows, 1), np.nan)

    def summary(self, class_names: Sequence[str]) -> dict[str, object]:
        """JSON-friendly results: ``miou``, ``pixel_accuracy`` and per-class values."""
        iou, acc = self.iou(), self.class_accuracy()
        return {
            "miou": self.miou(),
            "pixel_accuracy": self.pixel_accuracy(),
            "per_class_iou": {n: _num(v) for n, v in zip(class_names, iou, strict=True)},
            "per_class_accuracy": {n: _num(v) for n, v in zip(class_names, acc, strict=True)},
            "labelled_pixels": int(self.counts.sum()),
        }


def _num(v: float) -> float | None:
    return None if np.isnan(v) else float(v)


def plot_confusion(
    cm: ConfusionMatrix, class_names: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Row-normalised confusion matrix (each true class sums to 1) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = cm.counts.sum(1, keepdims=True)
    norm = cm.counts / np.maximum(rows, 1)
    n = cm.num_classes
    size = max(5.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 25:
        for i in range(n):
            for j in range(n):
                if norm[i, j] >= 0.01:
                    colour = "white" if norm[i, j] > 0.5 else "black"
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color=colour)
    ax.set_title(title or f"confusion (mIoU {cm.miou() * 100:.1f}%)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["ConfusionMatrix", "plot_confusion"]
