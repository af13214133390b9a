"""Fusing the bird's-eye grids of several cameras into one surround grid.

Conservative by default, because a planner drives into what the grid calls free: a cell any
camera sees as not drivable is occupied; a cell is free only where at least one camera sees
it free and none sees it occupied; cells no camera sees stay unknown (-1). Cameras overlap
at the corners of a vehicle, and one that sees a kerb or a car where another sees road
(e.g. because the second looks at the ground under the car) must win.

``optimistic`` (free wins where any camera sees free) exists for comparison, not for
planners.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from seg_perception.runtime.geometry.grid import FREE, OCCUPIED, UNKNOWN

FUSION_RULES = ("conservative", "optimistic")


def fuse_grids(grids: Sequence[np.ndarray], rule: str = "conservative") -> np.ndarray:
    """One int8 grid from same-shaped int8 grids (0 free, 100 occupied, -1 unknown).

    With no grid at all the result cannot be shaped: pass at least one (an all -1 grid for a
    camera that contributes nothing is fine).
    """
    if rule not in FUSION_RULES:
        raise ValueError(f"fusion rule {rule!r} is not one of {', '.join(FUSION_RULES)}")
    if not grids:
        raise ValueError("fuse_grids needs at least one grid")
    shape = grids[0].shape
    for g in grids:
        if g.shape != shape:
            raise ValueError(f"grids to fuse differ in shape: {g.shape} vs {shape}")
    stack = np.stack([np.asarray(g, dtype=np.int8) for g in grids])
    any_free = (stack == FREE).any(axis=0)
    any_occ = (stack == OCCUPIED).any(axis=0)
    out = np.full(shape, UNKNOWN, np.int8)
    if rule == "conservative":
        out[any_free] = FREE
        out[any_occ] = OCCUPIED
    else:
        out[any_occ] = OCCUPIED
        out[any_free] = FREE
    return out


__all__ = ["FUSION_RULES", "fuse_grids"]
