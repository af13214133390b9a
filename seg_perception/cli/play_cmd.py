"""``seg-perception play``: publish a bag with its recorded timing and ``/clock``.

``ros2 bag play --clock`` for machines with the ROS 2 Python wheels but no rosbag2.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _remap(text: str) -> tuple[str, str]:
    src, sep, dst = text.partition(":=")
    if not sep or not src or not dst:
        raise argparse.ArgumentTypeError(f"remap {text!r} is not FROM:=TO")
    return src, dst


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "play",
        help="publish a rosbag2 bag on live topics with its timing and /clock",
        description="Publish the messages of a rosbag2 bag (directory, .mcap or .db3) at "
        "their recorded relative log times divided by --rate, and publish /clock "
        "(rosgraph_msgs/Clock, reliable) with the bag's time so nodes started with "
        "use_sim_time:=true run on it: what `ros2 bag play --clock` does, without rosbag2. "
        "Publishers offer the recorded QoS where the bag has it, else reliable depth 10 "
        "(best-effort subscribers such as seg_node connect to those too).",
    )
    p.add_argument("bag", type=Path, metavar="BAG", help="bag directory or .mcap/.db3 file")
    p.add_argument("--rate", type=float, default=1.0,
                   help="playback speed factor (default: %(default)s)")
    p.add_argument("--loop", action="store_true", help="play again from the start at the end")
    p.add_argument("--topics", nargs="+", action="extend", default=None, metavar="T",
                   help="only these topics (default: all)")
    p.add_argument("--remap", type=_remap, action="append", default=[], metavar="FROM:=TO",
                   help="publish topic FROM as TO (repeatable), e.g. "
                   "/cam_front/image_raw:=/image for a node without namespace")
    p.add_argument("--no-clock", action="store_true", help="do not publish /clock")
    p.add_argument("--clock-hz", type=float, default=40.0, metavar="HZ",
                   help="/clock rate between messages (default: %(default)s)")
    p.add_argument("--delay", type=float, default=0.5, metavar="S",
                   help="seconds to wait (with /clock at the bag's start) before the first "
                   "message, so subscribers discover the publishers (default: %(default)s)")
    p.add_argument("--start-paused", action="store_true",
                   help="hold at the bag's start (publishing /clock) until Enter is pressed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.rate > 0:
        log.error("--rate must be > 0, got %s", args.rate)
        return 2
    if not args.clock_hz > 0:
        log.error("--clock-hz must be > 0, got %s", args.clock_hz)
        return 2
    if not args.bag.exists():
        log.error("bag %s does not exist", args.bag)
        return 2
    from seg_perception.ros.player import PlayOptions, run_player

    options = PlayOptions(rate=args.rate, loop=args.loop, topics=args.topics,
                          clock=not args.no_clock, clock_hz=args.clock_hz,
                          remap=dict(args.remap), delay=max(0.0, args.delay),
                          start_paused=args.start_paused)
    return run_player(args.bag, options)
