"""Segmentation datasets on disk: CamVid's SegNet layout and Cityscapes' layout.

Both yield ``(rgb uint8 HxWx3, label uint8/int HxW)`` pairs at native resolution, with
ignored pixels already set to the dataset's ignore id. Small datasets are decoded once and
kept in memory, because on a CPU-only machine PNG decoding would otherwise cost as much as
the network's training step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from seg_perception.runtime.datasets_info import (
    CAMVID_CLASSES,
    CAMVID_DRIVABLE,
    CAMVID_IGNORE,
    CAMVID_PALETTE,
    CITYSCAPES_CLASSES,
    CITYSCAPES_DRIVABLE,
    CITYSCAPES_PALETTE,
)

log = logging.getLogger(__name__)

# Cityscapes labelId -> trainId (cityscapesScripts labels.py); every other id is ignored (255).
CITYSCAPES_ID_TO_TRAINID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
CITYSCAPES_IGNORE = 255
# Decoded frames are kept in memory when the whole split fits in this (CamVid: ~250 MB).
CACHE_LIMIT_BYTES = 1_500_000_000

_CITYSCAPES_LUT = np.full(256, CITYSCAPES_IGNORE, np.uint8)
for _label_id, _train_id in CITYSCAPES_ID_TO_TRAINID.items():
    _CITYSCAPES_LUT[_label_id] = _train_id


def cityscapes_label_to_train_id(label_ids: np.ndarray) -> np.ndarray:
    """Map a Cityscapes ``*_gtFine_labelIds.png`` array to the 19 trainIds (255 ignored)."""
    if label_ids.dtype != np.uint8:
        label_ids = np.clip(label_ids, 0, 255).astype(np.uint8)  # ids > 33 are ignored anyway
    return _CITYSCAPES_LUT[label_ids]


@dataclass(frozen=True)
class DatasetInfo:
    """Class facts that become the trained model's metadata."""

    name: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    drivable: tuple[int, ...]
    ignore_index: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


CAMVID_INFO = DatasetInfo("camvid", CAMVID_CLASSES, CAMVID_PALETTE, CAMVID_DRIVABLE, CAMVID_IGNORE)
CITYSCAPES_INFO = DatasetInfo(
    "cityscapes", CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, CITYSCAPES_DRIVABLE, CITYSCAPES_IGNORE
)


def read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_label(path: Path) -> np.ndarray:
    lab = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise FileNotFoundError(f"cannot read annotation {path}")
    if lab.ndim == 3:  # a grey PNG saved as RGB: all channels hold the id
        lab = lab[..., 0]
    return lab


class SegDataset:
    """A list of (image path, annotation path) pairs plus class facts; optional RAM cache."""

    def __init__(
        self,
        pairs: list[tuple[Path, Path]],
        info: DatasetInfo,
        cache: bool | None = None,
    ) -> None:
        if not pairs:
            raise ValueError(f"{info.name}: no image/annotation pairs found")
        self.pairs = pairs
        self.info = info
        self.cache = cache  # None: decided on the first frame from the set's size in memory
        self._cached: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def convert_label(self, label: np.ndarray) -> np.ndarray:
        """Dataset-specific id mapping; identity for datasets stored as train ids."""
        return label

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 (H, W, 3) and label uint8 (H, W) at native resolution."""
        if index in self._cached:
            return self._cached[index]
        img_path, lab_path = self.pairs[index]
        img = read_rgb(img_path)
        lab = self.convert_label(read_label(lab_path)).astype(np.uint8)
        if lab.shape != img.shape[:2]:
            raise ValueError(f"{lab_path}: size {lab.shape} differs from image {img.shape[:2]}")
        if self.cache is None:
            self.cache = (img.nbytes + lab.nbytes) * len(self) <= CACHE_LIMIT_BYTES
        if self.cache:
            self._cached[index] = (img, lab)
        return img, lab

    def class_frequencies(self) -> np.ndarray:
        """Fraction of labelled pixels per class over the whole set (for loss weights)."""
        counts = np.zeros(self.info.num_classes, np.int64)
        for i in range(len(self)):
            lab = self.load(i)[1]
            counts += np.bincount(lab.ravel(), minlength=256)[: self.info.num_classes]
        return counts / max(int(counts.sum()), 1)


class CamVidDataset(SegDataset):
    """SegNet layout: ``<root>/<split>.txt`` lists ``image annotation`` paths under root."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        ignore_index: int = CAMVID_IGNORE,
        info: DatasetInfo = CAMVID_INFO,
        cache: bool | None = None,
        limit: int | None = None,
    ) -> None:
        root = Path(root)
        lists, keep, drop = parse_split(split)
        pairs = []
        for name in lists:
            list_file = root / f"{name}.txt"
            if not list_file.is_file():
                raise FileNotFoundError(f"{list_file} not found (expected a SegNet-layout list)")
            for line in list_file.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 2:
                    pairs.append((_under(root, parts[0]), _under(root, parts[1])))
        pairs = [p for p in pairs if _selected(camvid_sequence(p[0]), keep, drop)]
        if not pairs:
            raise ValueError(f"CamVid split {split!r} selects no frames under {root}")
        if limit:
            pairs = pairs[:limit]
        info = DatasetInfo(info.name, info.class_names, info.palette, info.drivable, ignore_index)
        super().__init__(pairs, info, cache)

    def convert_label(self, label: np.ndarray) -> np.ndarray:
        # Any id outside the class range (e.g. CamVid's 11 "void") becomes the ignore id.
        out = label.copy()
        out[out >= self.info.num_classes] = self.info.ignore_index
        return out


def parse_split(split: str) -> tuple[list[str], set[str], set[str]]:
    """``LIST[+LIST...][:SEQ,...|:-SEQ,...]`` -> (list files, sequences kept, dropped).

    ``train+val:-0006R0`` is every listed frame except drive 0006R0 and ``train:0006R0``
    only that drive: a held-out *sequence* is a fairer stand-in for unseen drives than
    frames of a drive that is also trained on (CamVid's val is 0016E5, as is most of train).
    """
    lists_part, _, seq_part = split.partition(":")
    lists = [s for s in lists_part.split("+") if s]
    if not lists:
        raise ValueError(f"split {split!r} names no list (e.g. train, train+val)")
    keep: set[str] = set()
    drop: set[str] = set()
    for item in (s.strip() for s in seq_part.split(",") if s.strip()):
        (drop if item.startswith("-") else keep).add(item.lstrip("-"))
    return lists, keep, drop


def camvid_sequence(path: Path) -> str:
    """The drive a CamVid frame comes from: its file name up to the first ``_``."""
    return path.name.split("_", 1)[0]


def _selected(seq: str, keep: set[str], drop: set[str]) -> bool:
    return (not keep or seq in keep) and seq not in drop


def _under(root: Path, rel: str) -> Path:
    # SegNet's own lists carry absolute paths like /SegNet/CamVid/train/x.png: keep the tail.
    p = Path(rel)
    if p.is_absolute():
        p = Path(*p.parts[-2:])
    return root / p


class CityscapesDataset(SegDataset):
    """``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with ``gtFine`` labelIds -> trainIds."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        cache: bool | None = None,
        limit: int | None = None,
    ) -> None:
        root = Path(root)
        img_dir = root / "leftImg8bit" / split
        if not img_dir.is_dir():
            raise FileNotFoundError(f"{img_dir} not found (expected Cityscapes' layout)")
        pairs = []
        for img in sorted(img_dir.glob("*/*_leftImg8bit.png")):
            stem = img.name[: -len("_leftImg8bit.png")]
            lab = root / "gtFine" / split / img.parent.name / f"{stem}_gtFine_labelIds.png"
            if lab.is_file():
                pairs.append((img, lab))
        if limit:
            pairs = pairs[:limit]
        super().__init__(pairs, CITYSCAPES_INFO, cache)

    def convert_label(self, label: np.ndarray) -> np.ndarray:
        return cityscapes_label_to_train_id(label)


def open_dataset(
    name: str,
    root: str | Path,
    split: str,
    ignore_index: int | None = None,
    limit: int | None = None,
    cache: bool | None = None,
) -> SegDataset:
    """Open ``camvid`` (SegNet layout) or ``cityscapes`` data under ``root``."""
    if name == "camvid":
        ignore = CAMVID_IGNORE if ignore_index is None else ignore_index
        return CamVidDataset(root, split, ignore, cache=cache, limit=limit)
    if name == "cityscapes":
        return CityscapesDataset(root, split, cache=cache, limit=limit)
    raise ValueError(f"unknown dataset {name!r}; choose camvid or cityscapes")


__all__ = [
    "CAMVID_INFO",
    "CITYSCAPES_ID_TO_TRAINID",
    "CITYSCAPES_IGNORE",
    "CITYSCAPES_INFO",
    "CamVidDataset",
    "CityscapesDataset",
    "DatasetInfo",
    "SegDataset",
    "camvid_sequence",
    "cityscapes_label_to_train_id",
    "open_dataset",
    "parse_split",
]
