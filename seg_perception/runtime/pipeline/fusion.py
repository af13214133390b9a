"""One surround grid from the grids of several cameras, cycle by cycle (node and bags alike).

Each cycle brings fresh grids from the cameras that had a frame (and a camera_info and a
pose); a camera without a fresh grid takes part with its latest one while that is recent.
The rule, the same in ``seg_node`` and ``seg-perception process``:

- the cycle's reference stamp is the newest stamp of its fresh grids (a cycle without any
  fresh grid fuses nothing: there is nothing new to say);
- every camera's latest grid whose stamp is within ``fusion.max_age`` of it takes part;
  older ones are left out (counted per camera), so a camera that goes silent drops out and
  its cells become -1 unless another camera sees them, never stale free;
- grids are fused conservatively (:func:`~seg_perception.runtime.geometry.fusion.fuse_grids`):
  occupied where any camera sees occupied, free only where one sees free and none occupied;
- the fused grid carries the reference stamp; grids of another geometry (``grid.*`` changed
  since) never mix with the current one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from seg_perception.runtime.geometry import GridSpec
from seg_perception.runtime.geometry.fusion import fuse_grids


@dataclass(frozen=True)
class CameraGrid:
    """A camera's grid with its stamp (ns) and geometry."""

    camera: str
    stamp_ns: int
    grid: np.ndarray
    spec: GridSpec


@dataclass
class FusedGrid:
    """The fused grid of one cycle: data, geometry, stamp, who took part and who not.

    ``cameras`` took part (``fresh`` of them with this cycle's frame); ``left_out`` maps a
    camera to the age (s) of its latest grid that was too old. ``boundary`` is set by
    :meth:`~seg_perception.runtime.pipeline.FramePipeline.fuse` when asked for.
    """

    grid: np.ndarray
    spec: GridSpec
    stamp_ns: int
    grid_frame: str
    cameras: tuple[str, ...]
    fresh: tuple[str, ...]
    left_out: dict[str, float] = field(default_factory=dict)
    boundary: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)


class GridFusion:
    """The latest grid of every camera and the fusion of a cycle (see the module docstring).

    One per node or bag job; not thread-safe (the node's worker, or the bag loop, owns it).
    ``left_out`` counts per camera the cycles its latest grid was too old to take part.
    """

    def __init__(self, rule: str = "conservative") -> None:
        self.rule = rule
        self.latest: dict[str, CameraGrid] = {}
        self.left_out: dict[str, int] = {}
        self.fused = 0

    def reset(self) -> None:
        self.latest.clear()

    def forget_after(self, stamp_ns: int) -> list[str]:
        """Drop the latest grids stamped after ``stamp_ns`` (time went back: they are from
        before the jump, and would be left out of every cycle, with a negative age, until
        their camera sends again); the cameras dropped."""
        gone = [cam for cam, g in self.latest.items() if g.stamp_ns > stamp_ns]
        for cam in gone:
            del self.latest[cam]
        return gone

    def update(self, fresh: Iterable[CameraGrid], spec: GridSpec, max_age_s: float,
               grid_frame: str) -> FusedGrid | None:
        """Take this cycle's ``fresh`` grids and fuse; None when there is none fresh (or none
        of the current geometry ``spec``)."""
        fresh = [g for g in fresh if g.spec == spec]
        for g in fresh:
            old = self.latest.get(g.camera)
            if old is None or old.spec != spec or g.stamp_ns >= old.stamp_ns \
                    or old.stamp_ns - g.stamp_ns > max_age_s * 1e9:
                self.latest[g.camera] = g  # (a replayed bag going back in time restarts)
        if not fresh:
            return None
        ref = max(g.stamp_ns for g in fresh)
        limit = round(max_age_s * 1e9)
        used: list[CameraGrid] = []
        left: dict[str, float] = {}
        for cam, g in self.latest.items():
            if g.spec != spec:
                continue
            if abs(ref - g.stamp_ns) <= limit:
                used.append(g)
            else:
                left[cam] = (ref - g.stamp_ns) * 1e-9
                self.left_out[cam] = self.left_out.get(cam, 0) + 1
        fused = fuse_grids([g.grid for g in used], self.rule)
        self.fused += 1
        fresh_names = {g.camera for g in fresh}
        return FusedGrid(fused, spec, ref, grid_frame, tuple(g.camera for g in used),
                         tuple(c for c in self.latest if c in fresh_names), left)


__all__ = ["CameraGrid", "FusedGrid", "GridFusion"]
