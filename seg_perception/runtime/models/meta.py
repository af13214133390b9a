"""Model metadata: everything preprocessing and postprocessing need, carried with the weights.

Node parameters never duplicate these facts; they come from the registry entry or from the
metadata stored inside a checkpoint of our own format.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from seg_perception.runtime.datasets_info import (
    CAMVID_CLASSES,
    CAMVID_DRIVABLE,
    CAMVID_IGNORE,
    CAMVID_PALETTE,
    CITYSCAPES_CLASSES,
    CITYSCAPES_DRIVABLE,
    CITYSCAPES_PALETTE,
)

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class ModelMeta:
    """What a segmentation network expects and what its outputs mean.

    ``input_size`` is (width, height) of the network input the weights were trained for;
    ``mean``/``std`` are per-channel RGB values on the 0..1 scale (``(0,0,0)``/``(1,1,1)``
    means "scale to [0, 1] only"). ``drivable_classes`` are the class ids a vehicle may drive on.
    """

    arch: str
    num_classes: int
    class_names: tuple[str, ...]
    palette: tuple[RGB, ...]
    drivable_classes: tuple[int, ...]
    input_size: tuple[int, int]
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    output_stride: int = 8
    dataset: str = ""
    ignore_index: int = 255
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{self.arch}: {len(self.class_names)} class names for {self.num_classes} classes"
            )
        if len(self.palette) != self.num_classes:
            raise ValueError(
                f"{self.arch}: {len(self.palette)} palette entries for {self.num_classes} classes"
            )
        bad = [c for c in self.drivable_classes if not 0 <= c < self.num_classes]
        if bad:
            raise ValueError(f"{self.arch}: drivable class ids {bad} out of range")
        if len(self.input_size) != 2 or min(self.input_size) <= 0:
            raise ValueError(f"{self.arch}: input_size must be (width, height) > 0")

    def replace(self, **changes: Any) -> ModelMeta:
        """Copy with some fields changed (e.g. a different class set after fine-tuning)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMeta:
        """Build from a dict (e.g. parsed JSON); tuples are restored, unknown keys refused."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model metadata keys: {sorted(unknown)}")
        d = dict(data)
        for key in ("class_names", "drivable_classes", "input_size", "mean", "std"):
            if key in d:
                d[key] = tuple(d[key])
        if "palette" in d:
            d["palette"] = tuple(tuple(int(v) for v in c) for c in d["palette"])
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> ModelMeta:
        return cls.from_dict(json.loads(text))


def camvid_meta(arch: str, input_size: tuple[int, int], output_stride: int) -> ModelMeta:
    """Metadata of a network trained on CamVid's 11 classes (void 11 ignored, Road drivable)."""
    return ModelMeta(
        arch=arch,
        num_classes=len(CAMVID_CLASSES),
        class_names=CAMVID_CLASSES,
        palette=CAMVID_PALETTE,
        drivable_classes=CAMVID_DRIVABLE,
        input_size=input_size,
        output_stride=output_stride,
        dataset="camvid",
        ignore_index=CAMVID_IGNORE,
    )


def cityscapes_meta(arch: str, source: str, paper_params: str) -> ModelMeta:
    """Metadata of a network trained on Cityscapes' 19 classes at full resolution."""
    return ModelMeta(
        arch=arch,
        num_classes=len(CITYSCAPES_CLASSES),
        class_names=CITYSCAPES_CLASSES,
        palette=CITYSCAPES_PALETTE,
        drivable_classes=CITYSCAPES_DRIVABLE,
        input_size=(2048, 1024),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        output_stride=8,
        dataset="cityscapes",
        ignore_index=255,
        extra={"source": source, "paper_params": paper_params},
    )
