"""``seg-perception demo``: a drive through seg_node over DDS, recorded, with a report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="play a drive through seg_node and write a report (video, summary)",
        description="Writes a synthetic drive (scene generator) to a bag, or takes --bag, "
        "starts seg_node as its own process, plays the bag to it over DDS with /clock, "
        "records its outputs to a bag, and writes OUT/report/: a video of camera | overlay "
        "| drivable grid, stills, and a latency and rate summary. With --cameras 4 a "
        "synthetic surround rig (front, left, right, rear) drives through one seg_node and "
        "the report shows the four views, the fused grid and the exact fused truth.")
    p.add_argument("--out", type=Path, default=Path("demo_out"),
                   help="output folder (default: demo_out)")
    p.add_argument("--bag", type=Path, help="your own rosbag2 (.mcap/.db3 or bag folder)")
    p.add_argument("--image-topic", help="image topic of --bag (default: its first)")
    p.add_argument("--camera-info-topic", help="camera_info topic of --bag (default: the "
                   "image topic's namespace + /camera_info)")
    p.add_argument("--frames", type=int, default=100, help="synthetic frames (default 100)")
    p.add_argument("--fps", type=float, default=10.0, help="synthetic frame rate (default 10)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--seed", type=int, default=0, help="synthetic drive seed")
    p.add_argument("--rate", type=float, default=1.0, help="playback rate (default 1.0)")
    p.add_argument("--model", default="default")
    p.add_argument("--checkpoint", default="")
    p.add_argument("--device", default="auto")
    p.add_argument("--cameras", type=int, default=1, choices=(1, 2, 3, 4),
                   help="1 (default): one camera; 2-4: a synthetic surround rig (front, left, "
                   "right, rear) through one seg_node with a fused grid")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="extra seg_node parameter, e.g. -p camera.pitch:=0.1 (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seg_perception.ros.demo import DemoOptions, run_demo

    extra = {}
    for item in args.param:
        name, sep, value = item.partition(":=")
        if not sep:
            raise SystemExit(f"--param {item!r}: expected NAME:=VALUE")
        extra[name] = value
    summary = run_demo(DemoOptions(
        out=args.out, bag=args.bag, image_topic=args.image_topic,
        camera_info_topic=args.camera_info_topic, frames=args.frames, fps=args.fps,
        width=args.width, height=args.height, model=args.model, checkpoint=args.checkpoint,
        device=args.device, rate=args.rate, seed=args.seed, node_params=extra,
        cameras=args.cameras))
    print(json.dumps(summary, indent=2))
    print(f"\nreport: {Path(summary['video']).parent}")
    return 0
