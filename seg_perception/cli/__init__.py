"""The ``seg-perception`` command line: one module per verb, a thin adapter over the rest.

Each verb module defines ``add_parser(subparsers)`` (registers its sub-command and
``--help``) and ``run(args) -> int`` (the exit status). It may import every other package;
verbs that need ROS (``demo``, ``play``, ``soak``) import :mod:`seg_perception.ros` lazily so
the others work where rclpy is missing. Nothing imports the CLI.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

# Verb name -> module under seg_perception.cli (the module name avoids shadowing builtins).
VERBS: dict[str, str] = {
    "demo": "demo_cmd",
    "predict": "predict_cmd",
    "process": "process_cmd",
    "process-many": "process_many_cmd",
    "play": "play_cmd",
    "eval": "eval_cmd",
    "train": "train_cmd",
    "distill-cache": "distill_cache_cmd",
    "bench": "bench_cmd",
    "export": "export_cmd",
    "models": "models_cmd",
    "soak": "soak_cmd",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seg-perception",
        description="Camera segmentation and drivable area for ROS 2: offline tools.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for module in VERBS.values():
        qualified = f"{__name__}.{module}"
        if importlib.util.find_spec(qualified) is None:
            continue  # verb not part of this version
        importlib.import_module(qualified).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "verb", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
