#!/usr/bin/env python3
"""The persistent drivable map on seeded synthetic drives against exact truth, per drive.

    python scripts/map_eval.py --seeds 1 2 3 --frames 150

drives the surround rig 15 s at 8 m/s (0.2 m cells, the node's defaults) and prints, per
drive, the figures of :mod:`seg_perception.sim.map_eval` for the map at its defaults, the
map fed the exact truth, and the degraded fused grid alone (``fused``: the grid cell under
each map cell's centre; ``frame``: one frame through the map's resampling, no memory).
``--hold S ...`` adds maps with other ``map.occupied_hold_s`` (same drive, same noise).
"""

from __future__ import annotations

import argparse
import time

from seg_perception.runtime.geometry.drivable_map import MapConfig
from seg_perception.sim.map_eval import Degradation, evaluate_drive, format_figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--flip", type=float, default=Degradation.flip,
                    help="share of seen cells flipped free <-> occupied per frame")
    ap.add_argument("--hold", type=float, nargs="*", default=[],
                    help="also maps with these map.occupied_hold_s")
    a = ap.parse_args()
    configs = {"map": MapConfig()}
    configs.update({f"hold_{h:g}s": MapConfig(occupied_hold_s=h) for h in a.hold})
    degrade = Degradation(flip=a.flip)
    print(f"map: {MapConfig()}\ndegradation: {degrade}")
    for seed in a.seeds:
        t0 = time.perf_counter()
        figures = evaluate_drive(seed, a.frames, configs=configs, degrade=degrade)
        print(format_figures(seed, figures) + f"\n  ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
