"""``seg-perception soak``: flood a seg_node with frames for minutes; latency, memory, drops.

The work is in :mod:`seg_perception.ros.soak` (it needs rclpy); this module only parses the
command line, so ``seg-perception --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def _duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``10m`` or ``1.5h``."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smh]?)\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"expected a duration such as 600, 90s or 10m, got "
                                         f"{text!r}")
    value = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    if not 0 < value <= 7 * 24 * 3600:
        raise argparse.ArgumentTypeError(f"duration must be > 0 and at most a week: {text!r}")
    return value


def _positive(kind: type, hi: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not 0 < value <= hi:
            raise argparse.ArgumentTypeError(f"must be > 0 and at most {hi:g}, got {text}")
        return value
    return parse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "soak",
        help="flood a seg_node with frames for minutes: latency, memory, drops per window",
        description="Start seg_node (or attach to a running one with --attach), publish "
        "frames of WIDTHxHEIGHT at RATE Hz on <namespace>/image (each with a camera_info of "
        "its stamp; the camera's pose on /tf_static) for DURATION, subscribe to its outputs, "
        "and report per window: end-to-end latency (image stamp -> labels received: p50, "
        "p95, max), the node's RSS, frames published, processed, dropped (replaced in its "
        "latest-frame slot), lost in transport, bad and without a grid, and the load average. "
        "Writes OUT/soak.json and OUT/soak.png (and OUT/node.log). Loopback only (an "
        "isolated ROS_DOMAIN_ID is wise on a shared machine).",
    )
    p.add_argument("--rate", type=_positive(float, 10_000), default=100.0,
                   help="frames per second published (default: %(default)s)")
    p.add_argument("--width", type=_positive(int, 16384), default=640,
                   help="frame width (default: %(default)s)")
    p.add_argument("--height", type=_positive(int, 16384), default=480,
                   help="frame height (default: %(default)s)")
    p.add_argument("--encoding", default="rgb8", help="raw encoding sent (default: rgb8)")
    p.add_argument("--duration", type=_duration, default=600.0,
                   help="how long to flood: seconds, or 90s, 10m, 1h (default: 10m)")
    p.add_argument("--window", type=_positive(float, 3600), default=30.0,
                   help="seconds per reported window (default: %(default)s)")
    p.add_argument("--namespace", default="/soak",
                   help="the node's namespace (default: %(default)s)")
    p.add_argument("--model", default="default", help="model of the node started "
                   "(default: %(default)s)")
    p.add_argument("--device", default="cpu", help="device of the node started "
                   "(default: %(default)s)")
    p.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="another parameter of the node started (repeatable)")
    p.add_argument("--outputs", default="labels,drivable/grid",
                   help="outputs to subscribe to, comma-separated (the node computes only "
                   "those; labels is needed for latency) (default: %(default)s)")
    p.add_argument("--attach", action="store_true",
                   help="use a seg_node already running in --namespace instead of starting one")
    p.add_argument("--pid", type=int, default=None,
                   help="with --attach: the node's process id, for its RSS")
    p.add_argument("--out", type=Path, default=Path("soak_out"),
                   help="output directory (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seg_perception.ros.soak import run_soak
    from seg_perception.tools.soak_report import SoakOptions, format_summary

    params = {}
    for item in args.param:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            log.error("--param %r: expected NAME:=VALUE", item)
            return 2
        params[name] = value
    outputs = tuple(o.strip() for o in args.outputs.split(",") if o.strip())
    if "labels" not in outputs:
        log.error("--outputs must include labels (the latency is measured on it)")
        return 2
    opts = SoakOptions(rate_hz=args.rate, width=args.width, height=args.height,
                       duration_s=args.duration, window_s=min(args.window, args.duration),
                       namespace="/" + args.namespace.strip("/"), model=args.model,
                       device=args.device, encoding=args.encoding, outputs=outputs,
                       attach=args.attach, node_pid=args.pid, node_params=params,
                       out_dir=args.out)
    try:
        report = run_soak(opts, progress=lambda line: print(line, flush=True))
    except (TimeoutError, RuntimeError) as exc:
        log.error("%s (node log: %s)", exc, args.out / "node.log")
        return 1
    print(format_summary(report))
    print(f"report: {args.out / 'soak.json'}, plot: {args.out / 'soak.png'}")
    return 0 if report.get("node_alive_at_end") else 1
