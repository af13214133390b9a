"""Argument types the verbs share (one parser per kind of value, so every verb accepts and
refuses the same spellings with the same message)."""

from __future__ import annotations

import argparse

#: The dataset layouts the data verbs (train, eval, distill-cache) read.
DATASETS = ("camvid", "cityscapes")

#: Largest side (pixels) a size argument may have: beyond 8K twice over, where a frame would
#: not fit in memory.
MAX_SIDE = 16384


def _parse(text: str, square_ok: bool) -> tuple[int, int]:
    parts = text.strip().lower().split("x")
    want = "N or WxH" if square_ok else "WxH"
    if len(parts) not in ((1, 2) if square_ok else (2,)):
        raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
    try:
        sides = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
    w, h = (sides[0], sides[0]) if len(sides) == 1 else sides
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    if w > MAX_SIDE or h > MAX_SIDE:
        raise argparse.ArgumentTypeError(f"size {text!r} exceeds {MAX_SIDE} pixels a side")
    return w, h


def size(text: str) -> tuple[int, int]:
    """``WxH`` (width x height), both positive and at most :data:`MAX_SIDE`."""
    return _parse(text, square_ok=False)


def size_or_square(text: str) -> tuple[int, int]:
    """``N`` (N x N) or ``WxH``, as :func:`size`."""
    return _parse(text, square_ok=True)


def add_dataset(parser: argparse.ArgumentParser) -> None:
    """``--dataset`` and ``--data-root``, as every verb that reads a labelled dataset has them."""
    parser.add_argument("--dataset", choices=DATASETS, default="camvid",
                        help="the folder's layout (default: %(default)s)")
    parser.add_argument("--data-root", required=True,
                        help="dataset folder (CamVid SegNet layout with <split>.txt, or "
                        "Cityscapes with leftImg8bit/ and gtFine/)")
