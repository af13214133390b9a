"""Reading a model's classes as another dataset's: the Cityscapes -> CamVid table.

Two uses, both ROS-free:

- **Zero-shot evaluation** (:func:`map_model`): a Cityscapes network scored on CamVid. Each
  CamVid class's score is the log of the summed softmax probability of the Cityscapes
  classes it covers (``logsumexp`` of their logits); outputs mapped to no CamVid class (the
  EdgeNets background) take no part, so the argmax is over CamVid classes only.
- **Re-heading** (:func:`remap_classifier`): a CamVid network whose classifier starts from
  the Cityscapes one. A linear layer cannot express a ``logsumexp``, so each CamVid class
  takes the weights and bias of its *main* Cityscapes class (:data:`CAMVID_MAIN_SOURCE`);
  the other members (wall, terrain, traffic light, truck, bus, train, rider, motorcycle) are
  dropped, and pixels they would have won go to the next best class. Fine-tuning therefore
  starts at (nearly) the zero-shot score instead of from a random head.

The table follows how the SegNet CamVid release groups its 32 original classes into 11
(Brostow et al.): Building includes Wall, Bridge and Tunnel; Tree includes VegetationMisc
(grass, shrubs: Cityscapes' terrain); SignSymbol includes TrafficLight; Car includes
SUVPickupTruck, Truck_Bus and Train; Bicyclist includes MotorcycleScooter and the rider.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import torch
from torch import nn

from .meta import ModelMeta

RGB = tuple[int, int, int]

#: Cityscapes train class (EdgeNets' output names) -> CamVid class; None: no counterpart.
CITYSCAPES_TO_CAMVID: dict[str, str | None] = {
    "road": "Road",
    "sidewalk": "Pavement",
    "building": "Building",
    "wall": "Building",
    "fence": "Fence",
    "pole": "Pole",
    "traffic light": "SignSymbol",
    "traffic sign": "SignSymbol",
    "vegetation": "Tree",
    "terrain": "Tree",
    "sky": "Sky",
    "person": "Pedestrian",
    "rider": "Bicyclist",
    "car": "Car",
    "truck": "Car",
    "bus": "Car",
    "train": "Car",
    "motorcycle": "Bicyclist",
    "bicycle": "Bicyclist",
    "background": None,
}

#: For CamVid classes fed by several Cityscapes classes, the one whose classifier row a
#: re-headed model starts from: the member the zero-shot ESPNetv2 (480x352 input) gives most
#: of the class's pixels, measured on every second frame of CamVid train+val without drive
#: 0006R0: Building = building 92.1 % (wall 1.1 %); Tree = vegetation 84.4 % (terrain < 1 %);
#: SignSymbol = traffic light 18.3 % (traffic sign 9.6 %, most goes to building);
#: Car = car 84.5 % (truck 2.7 %); Bicyclist = rider 36.8 % (bicycle 17.9 %).
CAMVID_MAIN_SOURCE: dict[str, str] = {
    "Building": "building",
    "SignSymbol": "traffic light",
    "Tree": "vegetation",
    "Car": "car",
    "Bicyclist": "rider",
}

_TABLES: dict[tuple[str, str], Mapping[str, str | None]] = {
    ("cityscapes", "camvid"): CITYSCAPES_TO_CAMVID,
}


class ClassTarget(Protocol):
    """The class facts of a dataset (``training.datasets.DatasetInfo`` has them)."""

    name: str
    class_names: tuple[str, ...]
    palette: tuple[RGB, ...]
    drivable: tuple[int, ...]
    ignore_index: int


def class_sources(src_names: Sequence[str], dst_names: Sequence[str],
                  table: Mapping[str, str | None] | None = None) -> list[list[int]]:
    """For each destination class, the source class ids that make it up.

    A source class goes where ``table`` sends it (None: nowhere); one the table does not
    name goes to the destination class of the same name (case-insensitive), if any.
    Raises ValueError naming the destination classes nothing feeds.
    """
    mapped = {k.lower(): (v.lower() if v else None) for k, v in (table or {}).items()}
    target = [mapped[s.lower()] if s.lower() in mapped else s.lower() for s in src_names]
    out = [[i for i, t in enumerate(target) if t == d.lower()] for d in dst_names]
    empty = [d for d, ids in zip(dst_names, out, strict=True) if not ids]
    if empty:
        raise ValueError(f"no class of {list(src_names)} maps to {empty}")
    return out


def table_for(src: ModelMeta, dst_dataset: str) -> Mapping[str, str | None] | None:
    """The mapping table from the model's dataset to ``dst_dataset`` (None: names only)."""
    return _TABLES.get((src.dataset, dst_dataset))


class ClassMerge(nn.Module):
    """Wrap a network: destination class score = logsumexp of its source classes' logits."""

    def __init__(self, net: nn.Module, groups: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.net = net
        width = max(len(g) for g in groups)
        # Pad each group to one width by repeating its first member, each copy weighted
        # 1/copies: logsumexp over the padded group equals logsumexp over the members.
        index, correction = [], []
        for g in groups:
            copies = width - len(g) + 1
            index.append(list(g) + [g[0]] * (copies - 1))
            correction.append([1.0 / copies] + [1.0] * (len(g) - 1)
                              + [1.0 / copies] * (copies - 1))
        self.register_buffer("index", torch.tensor(index).flatten(), persistent=False)
        self.register_buffer("log_weight", torch.tensor(correction).log().view(1, -1, 1, 1),
                             persistent=False)
        self.groups, self.width = len(groups), width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        picked = logits.index_select(1, self.index) + self.log_weight
        n, _, h, w = picked.shape
        return picked.view(n, self.groups, self.width, h, w).logsumexp(2)


def mapped_meta(meta: ModelMeta, target: ClassTarget) -> ModelMeta:
    """``meta`` with the target's classes (preprocessing facts kept)."""
    return meta.replace(
        num_classes=len(target.class_names), class_names=tuple(target.class_names),
        palette=tuple(target.palette), drivable_classes=tuple(target.drivable),
        dataset=target.name, ignore_index=target.ignore_index,
        extra={**meta.extra, "class_map": f"{meta.dataset or meta.arch} -> {target.name}"})


def map_model(
    model: nn.Module, meta: ModelMeta, target: ClassTarget
) -> tuple[nn.Module, ModelMeta]:
    """``model`` read as ``target``'s classes (unchanged if the class names already agree)."""
    if tuple(meta.class_names) == tuple(target.class_names):
        return model, meta
    groups = class_sources(meta.class_names, target.class_names, table_for(meta, target.name))
    wrapped = ClassMerge(model, groups).eval()
    new_meta = mapped_meta(meta, target)
    wrapped.meta = new_meta  # type: ignore[assignment]
    wrapped.model_name = getattr(model, "model_name", meta.arch)  # type: ignore[assignment]
    return wrapped, new_meta


def remap_classifier(
    state: Mapping[str, torch.Tensor], keys: Sequence[str], src_names: Sequence[str],
    dst_names: Sequence[str], table: Mapping[str, str | None],
    main: Mapping[str, str] = CAMVID_MAIN_SOURCE,
) -> dict[str, torch.Tensor]:
    """Copy of ``state`` whose classifier tensors (``keys``: weight, bias) hold, for each
    destination class, the row of its main source class (see the module docstring)."""
    groups = class_sources(src_names, dst_names, table)
    src_lower = [s.lower() for s in src_names]
    rows = []
    for d, ids in zip(dst_names, groups, strict=True):
        pick = main.get(d)
        rows.append(src_lower.index(pick.lower()) if pick and len(ids) > 1 else ids[0])
    out = dict(state)
    for key in keys:
        out[key] = state[key][rows].clone()
    return out


__all__ = ["CAMVID_MAIN_SOURCE", "CITYSCAPES_TO_CAMVID", "ClassMerge", "ClassTarget",
           "class_sources", "map_model", "mapped_meta", "remap_classifier", "table_for"]
