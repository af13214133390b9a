#!/usr/bin/env python3
"""``process`` throughput against the engine alone on the same frames, side by side.

Each round times the engine alone on every decoded frame of the bag (``engine(rgb)`` with
confidence, as ``process`` asks for every output) and then ``process_bag`` on the bag (its
frame loop: ``summary.fps``) at each ``--depth`` in turn (0: the sequential loop), so the
ratios come from one moment of a shared, noisy machine. Also reported: the process CPU
time per wall second of each (about 1.0 means one core's worth of work was done, whatever
the number of threads) and the load average.

    python scripts/process_bench.py --camvid ../shared/data/camvid --frames 171 --rounds 3 \
        --depth 0 2

builds a bag of the first N frames of CamVid drive 0016E5 (train and val in frame order,
480x360 rgb8 with camera_info, as test/system/test_bag_process.py writes bags) in a temporary
folder; ``--bag BAG`` uses a bag of your own. The script imports whatever
``seg_perception`` is on the path, so it also times older checkouts
(``PYTHONPATH=OLD_TREE``) that lack the options it does not need.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def build_camvid_bag(root: Path, out: Path, n: int) -> int:
    """A bag of the first ``n`` frames of CamVid drive 0016E5 on /cam/image_raw."""
    import cv2

    from seg_perception.offline.topics import camera_info_msg, image_msg, make_header
    from seg_perception.offline.writer import BagWriter
    from seg_perception.runtime.geometry import CameraModel

    files = sorted([*root.glob("train/0016E5_*.png"), *root.glob("val/0016E5_*.png")],
                   key=lambda p: p.name)[:n]
    if not files:
        raise SystemExit(f"no CamVid 0016E5 frames under {root}")
    with BagWriter(out) as bag:
        for i, path in enumerate(files):
            rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            h, w = rgb.shape[:2]
            header = make_header(1_700_000_000 + i, 7 * i + 1, "cam_optical")
            log_time = 1_800_000_000 * 10**9 + i * 100_000_000
            bag.write("/cam/image_raw", image_msg(rgb, "rgb8", header), log_time)
            bag.write("/cam/camera_info",
                      camera_info_msg(CameraModel.from_fov(w, h, 90.0), header),
                      log_time + 1)
    return len(files)


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--bag", type=Path, help="a bag to process")
    src.add_argument("--camvid", type=Path, help="CamVid root (SegNet layout) to build one")
    ap.add_argument("--frames", type=int, default=171, help="frames of the built bag")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--depth", type=int, nargs="+", default=None,
                    help="ProcessOptions.pipeline_depth values to time (default: the default)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--label", default="", help="a name for this run in the output")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)

    import seg_perception
    from seg_perception.offline.job import ProcessOptions
    from seg_perception.offline.process import process_bag
    from seg_perception.offline.reader import iter_frames
    from seg_perception.runtime.engine import build_engine

    work = Path(tempfile.mkdtemp(prefix="process_bench_"))
    try:
        bag = args.bag
        if bag is None:
            bag = work / "in"
            build_camvid_bag(args.camvid, bag, args.frames)
        frames = [f.rgb for f in iter_frames(bag) if f.rgb is not None]
        engine, info = build_engine(args.model, None, "cpu", "auto")
        engine.warmup(frames[0].shape[1], frames[0].shape[0])
        depths: list[int | None] = list(args.depth) if args.depth else [None]
        if any(d is not None for d in depths) and not hasattr(ProcessOptions(),
                                                               "pipeline_depth"):
            raise SystemExit("this seg_perception has no ProcessOptions.pipeline_depth")
        code = Path(seg_perception.__file__).resolve().parent.parent
        print(f"{args.label or code}: {len(frames)} frames {frames[0].shape[1]}x"
              f"{frames[0].shape[0]}, {info.backend} {info.precision}, depths "
              f"{' '.join('default' if d is None else str(d) for d in depths)}",
              file=sys.stderr)
        rounds = []
        for k in range(args.rounds):
            load = os.getloadavg()
            t0, c0 = time.perf_counter(), _cpu()
            for rgb in frames:
                engine(rgb, want_confidence=True)
            e_wall, e_cpu = time.perf_counter() - t0, _cpu() - c0
            row: dict = {"engine_fps": len(frames) / e_wall,
                         "engine_cpu_per_s": e_cpu / e_wall, "load": list(load),
                         "process": {}}
            text = [f"round {k + 1} (load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}): engine "
                    f"{row['engine_fps']:.1f} frames/s (CPU/s {row['engine_cpu_per_s']:.2f})"]
            for depth in depths:
                options = ProcessOptions()
                if depth is not None:
                    options.pipeline_depth = depth
                out = work / f"out{k}_{depth}"
                c0 = _cpu()
                summary = process_bag(bag, out, engine, options=options, progress=False)
                p_cpu = _cpu() - c0
                shutil.rmtree(out)
                if summary.processed != len(frames) or summary.error or summary.bad:
                    raise SystemExit(f"process handled {summary.processed} of {len(frames)} "
                                     f"frames ({summary.error or summary.bad})")
                name = "default" if depth is None else str(depth)
                row["process"][name] = {"fps": summary.fps,
                                        "ratio": summary.fps / row["engine_fps"],
                                        "cpu_per_s": p_cpu / summary.seconds}
                r = row["process"][name]
                text.append(f"process depth {name} {r['fps']:.1f} frames/s = "
                            f"{r['ratio']:.2f}x engine (CPU/s {r['cpu_per_s']:.2f})")
            rounds.append(row)
            print("; ".join(text), flush=True)
        for name in rounds[0]["process"]:
            ratios = sorted(r["process"][name]["ratio"] for r in rounds)
            print(f"{args.label or 'median'}: depth {name}: ratio to engine median "
                  f"{ratios[len(ratios) // 2]:.2f} over {len(rounds)} rounds")
        if args.json:
            args.json.write_text(json.dumps({"label": args.label, "code": str(code),
                                             "frames": len(frames), "rounds": rounds}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
