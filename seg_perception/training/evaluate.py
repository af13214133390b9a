"""Evaluation at the dataset's native resolution, as the benchmarks define it.

Two paths, scored the same way (annotation's native size, ignore pixels excluded):

- :func:`evaluate_engine` runs every frame through the :class:`~..engine.SegEngine` the node
  runs (its resize, normalisation, backend, precision and postprocessing), so its mIoU is
  the deployed one. ``seg-perception eval`` reports this figure.
- :func:`evaluate` is the trainer's quick validation on the bare network: frames resized with
  OpenCV, logits upsampled bilinearly, argmax, in batches. It tracks training; it is not the
  figure a model is reported with.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seg_perception.runtime.models.meta import ModelMeta
from seg_perception.training.datasets import SegDataset
from seg_perception.training.metrics import ConfusionMatrix
from seg_perception.training.transforms import resize_to_input, to_tensor

if TYPE_CHECKING:
    from seg_perception.runtime.engine import SegEngine

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Confusion matrix plus timing of the evaluation pass."""

    confusion: ConfusionMatrix
    frames: int
    seconds: float

    @property
    def miou(self) -> float:
        return self.confusion.miou()


@torch.inference_mode()
def predict_labels(
    model: nn.Module, meta: ModelMeta, images: list[np.ndarray], device: torch.device
) -> torch.Tensor:
    """Label maps (N, H, W) at the images' native size (all images must share one size)."""
    h, w = images[0].shape[:2]
    batch = torch.stack(
        [to_tensor(resize_to_input(im, meta.input_size), meta.mean, meta.std) for im in images]
    ).to(device)
    logits = model(batch).float()
    # Channels-last makes the upsampling and the argmax over classes several times faster
    # on a CPU (the class scores of one pixel become contiguous).
    logits = logits.contiguous(memory_format=torch.channels_last)
    logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return logits.argmax(1)


def evaluate(
    model: nn.Module,
    meta: ModelMeta,
    dataset: SegDataset,
    device: torch.device | str = "cpu",
    batch_size: int = 4,
    progress: bool = False,
) -> EvalResult:
    """Confusion matrix of ``model`` over ``dataset`` (ignore id from the dataset)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(dataset.info.num_classes, dataset.info.ignore_index)
    if meta.num_classes != dataset.info.num_classes:
        raise ValueError(
            f"model has {meta.num_classes} classes, dataset {dataset.info.name} has "
            f"{dataset.info.num_classes}"
        )
    indices = range(len(dataset))
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="eval", unit="frame", leave=False)
    start = time.perf_counter()
    pending: list[tuple[np.ndarray, np.ndarray]] = []

    def flush() -> None:
        if pending:
            pred = predict_labels(model, meta, [p[0] for p in pending], device)
            target = torch.from_numpy(np.stack([p[1] for p in pending])).to(device)
            cm.update(pred, target)
            pending.clear()

    for i in indices:
        img, lab = dataset.load(i)
        if pending and pending[0][0].shape != img.shape:
            flush()
        pending.append((img, lab))
        if len(pending) >= batch_size:
            flush()
    flush()
    model.train(was_training)
    return EvalResult(cm, len(dataset), time.perf_counter() - start)


def evaluate_engine(
    engine: SegEngine,
    dataset: SegDataset,
    progress: bool = False,
) -> EvalResult:
    """Confusion matrix of the deployed path: ``engine(frame).labels`` vs the annotation."""
    meta = engine.meta
    if meta.num_classes != dataset.info.num_classes:
        raise ValueError(
            f"model has {meta.num_classes} classes, dataset {dataset.info.name} has "
            f"{dataset.info.num_classes}"
        )
    cm = ConfusionMatrix(dataset.info.num_classes, dataset.info.ignore_index)
    indices = range(len(dataset))
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="eval", unit="frame", leave=False)
    start = time.perf_counter()
    for i in indices:
        img, lab = dataset.load(i)
        labels = engine(img, want_confidence=False).labels
        cm.update(torch.from_numpy(labels), torch.from_numpy(lab))
    return EvalResult(cm, len(dataset), time.perf_counter() - start)


def drivable_confusion(
    cm: ConfusionMatrix, class_names: tuple[str, ...] | list[str],
    drivable_classes: tuple[int, ...] | list[int],
) -> dict[str, float | None]:
    """Share of each non-drivable class's pixels that come out as a drivable class.

    For a planner these are the dangerous errors: a car or a pedestrian read as road.
    """
    drivable = list(drivable_classes)
    rows = cm.counts.sum(1)
    out: dict[str, float | None] = {}
    for c, name in enumerate(class_names):
        if c in drivable:
            continue
        out[name] = float(cm.counts[c, drivable].sum() / rows[c]) if rows[c] else None
    return out


__all__ = ["EvalResult", "drivable_confusion", "evaluate", "evaluate_engine", "predict_labels"]
