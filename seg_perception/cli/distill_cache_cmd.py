"""``seg-perception distill-cache``: cache a teacher's soft labels for ``train --distill``."""

from __future__ import annotations

import argparse
import logging

from seg_perception.cli import arg_types

log = logging.getLogger(__name__)

DESCRIPTION = (
    "Run a teacher once over every frame of a split and store its logits, on the frame and on "
    "its mirror image, on a grid STRIDE times coarser than its input, as float16: one "
    "OUT/<image path under the data root>.npy per frame plus OUT/manifest.json (teacher, "
    "sha256 of its weights, input size, stride, classes). Frames already cached are skipped, "
    "so an interrupted run continues; a folder built with another teacher, weights, size, "
    "stride or classes is refused.")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "distill-cache",
        help="cache a teacher's soft labels (frame and mirror image) for train --distill",
        description=DESCRIPTION,
    )
    p.add_argument("--model", required=True, help="registered teacher model")
    p.add_argument("--checkpoint", default=None,
                   help="teacher weights (default: the weights shipped with the model)")
    arg_types.add_dataset(p)
    p.add_argument("--split", default="train",
                   help="as train's --train-split, e.g. train+val:-0006R0 "
                   "(default: %(default)s)")
    p.add_argument("--input-size", type=arg_types.size, default=None, metavar="WxH",
                   help="teacher input size (default: the model's own)")
    p.add_argument("--stride", type=int, default=4,
                   help="the cache's grid is the input size / STRIDE (default: %(default)s)")
    p.add_argument("--out", required=True, help="cache folder")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: half the CPUs)")
    p.add_argument("--limit", type=int, default=None, help="only the first N frames")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from seg_perception.runtime.engine import resolve_threads
    from seg_perception.runtime.models.checkpoint import CheckpointError, load_model
    from seg_perception.runtime.models.registry import get_entry
    from seg_perception.training.datasets import open_dataset
    from seg_perception.training.soft_labels import build_cache
    from seg_perception.training.trainer import resolve_device

    torch.set_num_threads(resolve_threads(args.threads))
    try:
        data = open_dataset(args.dataset, args.data_root, args.split, limit=args.limit,
                            cache=False)
        loaded = load_model(args.model, args.checkpoint, map_to=data.info)
        if not loaded.trained:
            raise ValueError(f"model {loaded.name} has no trained weights: pass --checkpoint")
        weights = args.checkpoint or get_entry(loaded.name).shipped_weights_path()
        meta = loaded.meta.replace(input_size=args.input_size or loaded.meta.input_size)
        manifest = build_cache(loaded.model, meta, weights, data, args.data_root, args.split,
                               args.out, args.stride, resolve_device(args.device),
                               progress=not args.no_progress, teacher=loaded.name)
    except (CheckpointError, FileNotFoundError, ValueError, KeyError) as exc:
        log.error("%s", exc)
        return 2
    w, h = manifest["soft_size"]
    print(f"{len(data)} frames of {args.dataset} {args.split}: soft labels {w}x{h} "
          f"(x2 with the mirror image) of {manifest['teacher']} in {args.out}")
    return 0
