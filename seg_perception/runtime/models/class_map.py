"""Reading a model's classes as another dataset's: the Cityscapes -> CamVid table.

Two uses, both ROS-free and both through :class:`GroupLogSumExp`:

- **Zero-shot evaluation** (:func:`map_model`): a Cityscapes network scored on CamVid. Each
  CamVid class's score is the log of the summed softmax probability of the Cityscapes
  classes it covers (``logsumexp`` of their logits); outputs mapped to no CamVid class (the
  EdgeNets background) take no part, so the argmax is over CamVid classes only.
- **A CamVid head on Cityscapes weights** (``espnetv2_camvid``): the network keeps its
  20-way Cityscapes classifier and ends in the same fixed grouping, so freshly initialised it
  *is* the zero-shot model (same labels, same score), and training moves the whole net,
  classifier included. A linear 11-way classifier cannot express the ``logsumexp`` of
  several rows (a row copied from one member lost 4 points of mIoU: 48.1 vs 52.0 %).

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

from seg_perception.runtime.models.meta import ModelMeta

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


class GroupLogSumExp(nn.Module):
    """Fixed grouping of class logits: output ``g`` = logsumexp of the logits in ``groups[g]``.

    Softmax over the outputs is then each group's summed probability under the input's
    softmax restricted to the grouped classes, so cross-entropy on the outputs is the grouped
    labels' likelihood and its gradient reaches every member's logit. No weights (buffers
    only, not saved). Written as ``max + log(sum(exp(x - max)))`` with gather, reduce and
    elementwise ops, which torch, OpenVINO and ONNX all run: the groups are padded to one
    width by repeating their first member, the copies masked out of the sum.
    """

    def __init__(self, groups: Sequence[Sequence[int]]) -> None:
        super().__init__()
        if not groups or any(not g for g in groups):
            raise ValueError(f"every group needs at least one class: {groups}")
        width = max(len(g) for g in groups)
        index = [list(g) + [g[0]] * (width - len(g)) for g in groups]
        mask = [[1.0] * len(g) + [0.0] * (width - len(g)) for g in groups]
        self.register_buffer("index", torch.tensor(index).flatten(), persistent=False)
        # Flat (1-D) like ``index``: module.to(memory_format=...) skips it.
        self.register_buffer("mask", torch.tensor(mask).flatten(), persistent=False)
        self.groups, self.width = len(groups), width

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        h, w = logits.shape[2:]
        picked = logits.index_select(1, self.index).reshape(-1, self.groups, self.width, h, w)
        # logsumexp is shift-invariant: the max only keeps exp in range, so no gradient.
        top = picked.amax(2, keepdim=True).detach()
        mask = self.mask.to(picked.dtype).view(1, self.groups, self.width, 1, 1)
        total = ((picked - top).exp() * mask).sum(2)
        return top.squeeze(2) + total.log()


class ClassMerge(nn.Module):
    """Wrap a network: destination class score = logsumexp of its source classes' logits."""

    def __init__(self, net: nn.Module, groups: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.net = net
        self.merge = GroupLogSumExp(groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge(self.net(x))


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


__all__ = ["CITYSCAPES_TO_CAMVID", "ClassMerge", "ClassTarget", "GroupLogSumExp",
           "class_sources", "map_model", "mapped_meta", "table_for"]
