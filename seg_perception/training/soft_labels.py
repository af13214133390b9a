"""A teacher's soft labels, computed once per frame and read back by the trainer.

Distillation needs the teacher's view of every training crop. Running the teacher inside the
training loop would cost more than the student's own step, so its logits are cached once per
frame: for the frame and for its mirror image (the teacher's own prediction on the flipped
frame, not a flipped prediction, so a flipped crop gets what the teacher really sees there),
each on a grid ``stride`` times coarser than the teacher's input, as float16. The trainer
warps the entry with the crop's own scale/crop/flip (:func:`.transforms.warp_soft`).

Layout of a cache folder::

    manifest.json           teacher, sha256 of its weights, input size, stride, classes
    <image path under the data root>.npy   float16 (2, Hs, Ws, C): [0] frame, [1] mirrored

Each file is written under a temporary name and renamed, so an interrupted run leaves only
whole entries and a rerun skips them; a folder built with another teacher, weights, size,
stride or classes is refused, never mixed.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seg_perception.runtime.models.checkpoint import file_sha256
from seg_perception.training.datasets import SegDataset
from seg_perception.training.losses import resize_logits
from seg_perception.training.transforms import resize_to_input, to_tensor

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1
# What a cache is: entries are reused only when all of these match.
IDENTITY = ("format", "teacher", "weights_sha256", "input_size", "stride", "classes")


class SoftLabelError(ValueError):
    """A cache that cannot serve this run (other teacher or classes, missing frames)."""


def entry_key(image_path: Path, data_root: str | Path) -> str:
    """The cache key of a frame: its image path relative to the data root, POSIX style."""
    key = Path(os.path.relpath(os.path.abspath(image_path), os.path.abspath(data_root)))
    if key.parts[:1] == ("..",):
        raise SoftLabelError(f"{image_path} is not under the data root {data_root}")
    return key.as_posix()


def soft_size(input_size: tuple[int, int], stride: int) -> tuple[int, int]:
    """(width, height) of the cached grid for a teacher input (width, height)."""
    return max(1, round(input_size[0] / stride)), max(1, round(input_size[1] / stride))


@dataclass
class SoftLabelCache:
    """An existing cache folder, opened for reading."""

    root: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, root: str | Path) -> SoftLabelCache:
        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            raise SoftLabelError(f"{path} not found: build the cache with "
                                 "`seg-perception distill-cache` first")
        return cls(root, json.loads(path.read_text()))

    @property
    def stride(self) -> int:
        return int(self.manifest["stride"])

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.manifest["classes"])

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npy"

    def load(self, key: str) -> np.ndarray:
        """(2, Hs, Ws, C) float16, memory-mapped: [0] the frame, [1] its mirror image."""
        return np.load(self.path(key), mmap_mode="r")

    def check(self, data: SegDataset, data_root: str | Path) -> list[str]:
        """Keys of every frame of ``data``, or a :class:`SoftLabelError` saying what is off."""
        if self.classes != tuple(data.info.class_names):
            raise SoftLabelError(
                f"{self.root}: soft labels have {len(self.classes)} classes "
                f"({', '.join(self.classes)}), dataset {data.info.name} has "
                f"{data.info.num_classes}")
        keys = [entry_key(img, data_root) for img, _ in data.pairs]
        missing = [k for k in keys if not self.path(k).is_file()]
        if missing:
            shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
            raise SoftLabelError(f"{self.root}: no soft labels for {len(missing)} of "
                                 f"{len(keys)} training frames: {shown}")
        return keys


def _check_manifest(path: Path, wanted: dict[str, Any]) -> dict[str, Any]:
    """The manifest to write: the existing one if it describes the same cache."""
    if not path.is_file():
        return wanted
    have = json.loads(path.read_text())
    diff = [k for k in IDENTITY if have.get(k) != wanted[k]]
    if diff:
        k = diff[0]
        raise SoftLabelError(f"{path} was built with {k}={have.get(k)!r}, this run has "
                             f"{wanted[k]!r}: use another --out or delete that folder")
    return {**have, "splits": {**have.get("splits", {}), **wanted["splits"]}}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


@torch.inference_mode()
def teacher_logits(
    model: torch.nn.Module, meta: Any, img: np.ndarray, size: tuple[int, int],
    device: torch.device,
) -> np.ndarray:
    """(2, H, W, C) float16: the teacher's logits on ``img`` and on its mirror image.

    Preprocessing is the trainer's validation path (:func:`.evaluate.predict_labels`):
    OpenCV resize to the input size, then the model's mean/std.
    """
    frames = [img, np.ascontiguousarray(img[:, ::-1])]
    batch = torch.stack([to_tensor(resize_to_input(f, meta.input_size), meta.mean, meta.std)
                         for f in frames]).to(device)
    logits = resize_logits(model(batch).float(), (size[1], size[0]))
    return logits.permute(0, 2, 3, 1).to(torch.float16).cpu().numpy()


def build_cache(
    model: torch.nn.Module,
    meta: Any,
    weights: str | Path,
    data: SegDataset,
    data_root: str | Path,
    split: str,
    out: str | Path,
    stride: int = 4,
    device: torch.device | str = "cpu",
    progress: bool = True,
    teacher: str | None = None,
) -> dict[str, Any]:
    """Cache ``model``'s soft labels for every frame of ``data``; returns the manifest.

    ``meta`` is the model's metadata with the input size to run at; ``weights`` the file its
    weights came from (its sha256 identifies the cache); ``teacher`` its registered name.
    Frames already cached are skipped.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if meta.num_classes != data.info.num_classes:
        raise SoftLabelError(f"teacher has {meta.num_classes} classes, dataset "
                             f"{data.info.name} has {data.info.num_classes}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    size = soft_size(tuple(meta.input_size), stride)
    wanted = {
        "format": FORMAT,
        "teacher": teacher or getattr(model, "model_name", type(model).__name__),
        "weights": str(weights), "weights_sha256": file_sha256(weights),
        "input_size": list(meta.input_size), "stride": stride, "soft_size": list(size),
        "classes": list(data.info.class_names), "dataset": data.info.name,
        "layout": "float16 (2, H, W, C): [0] the frame, [1] the teacher on its mirror image",
        "splits": {split: len(data)},
    }
    manifest_path = out / MANIFEST
    manifest = _check_manifest(manifest_path, wanted)
    _write_json(manifest_path, manifest)  # before the entries: a partial cache says what it is
    device = torch.device(device)
    model = model.to(device).eval()
    keys = [entry_key(img, data_root) for img, _ in data.pairs]
    todo = [i for i, k in enumerate(keys) if not (out / f"{k}.npy").is_file()]
    if len(todo) < len(keys):
        log.info("%d of %d frames already cached in %s", len(keys) - len(todo), len(keys), out)
    indices: Any = todo
    if progress:
        from tqdm import tqdm

        indices = tqdm(todo, desc="soft labels", unit="frame")
    for i in indices:
        entry = teacher_logits(model, meta, data.load(i)[0], size, device)
        path = out / f"{keys[i]}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            np.save(f, entry)
        os.replace(tmp, path)
    manifest["count"] = sum(1 for _ in out.rglob("*.npy"))
    _write_json(manifest_path, manifest)
    return manifest


__all__ = [
    "SoftLabelCache",
    "SoftLabelError",
    "build_cache",
    "entry_key",
    "soft_size",
    "teacher_logits",
]
