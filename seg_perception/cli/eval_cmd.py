"""``seg-perception eval``: mean IoU of a model on a labelled split at native resolution."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="per-class IoU, mean IoU and pixel accuracy on a labelled split",
        description="Evaluate a model on CamVid- or Cityscapes-layout data: each frame is "
        "resized to the model's input size, the logits are upsampled bilinearly to the "
        "annotation's native size and the argmax is scored; ignore pixels are excluded.",
    )
    p.add_argument("--model", default="default", help="registered model (default: %(default)s)")
    p.add_argument("--checkpoint", default=None,
                   help="weights file (default: the weights shipped with the model)")
    p.add_argument("--dataset", choices=("camvid", "cityscapes"), default="camvid")
    p.add_argument("--data-root", required=True, help="dataset folder")
    p.add_argument("--split", default="val")
    p.add_argument("--ignore-index", type=int, default=None,
                   help="label id excluded from the metrics (default: the dataset's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N frames")
    p.add_argument("--json", default=None, metavar="FILE", help="write the results as JSON")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write results.json and confusion.png here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..core.models.checkpoint import CheckpointError, load_model
    from ..core.training.datasets import open_dataset
    from ..core.training.evaluate import evaluate
    from ..core.training.metrics import plot_confusion
    from ..core.training.trainer import resolve_device

    try:
        loaded = load_model(args.model, args.checkpoint)
        data = open_dataset(args.dataset, args.data_root, args.split, args.ignore_index,
                            args.limit, cache=False)
    except (CheckpointError, FileNotFoundError, ValueError, KeyError) as exc:
        log.error("%s", exc)
        return 2
    if not loaded.trained:
        log.warning("model %s has no trained weights: the scores describe random weights",
                    loaded.name)
    device = resolve_device(args.device)
    model = loaded.model.to(device)
    try:
        result = evaluate(model, loaded.meta, data, device, args.batch_size, progress=True)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    cm = result.confusion
    summary = {
        "model": loaded.name,
        "weights": loaded.weights,
        "dataset": args.dataset,
        "split": args.split,
        "frames": result.frames,
        "input_size": list(loaded.meta.input_size),
        **cm.summary(data.info.class_names),
        "confusion": cm.counts.tolist(),
    }
    width = max(len(n) for n in data.info.class_names)
    for name, iou in summary["per_class_iou"].items():
        shown = "   n/a" if iou is None else f"{iou * 100:6.2f}"
        print(f"{name:<{width}} {shown}")
    print(f"{'mIoU':<{width}} {cm.miou() * 100:6.2f}")
    print(f"{'pixel acc':<{width}} {cm.pixel_accuracy() * 100:6.2f}")
    print(f"{result.frames} frames in {result.seconds:.1f} s on {device}")
    paths = []
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        paths.append(out / "results.json")
        title = f"{loaded.name} on {args.dataset} {args.split}: mIoU {cm.miou() * 100:.1f}%"
        plot_confusion(cm, data.info.class_names, out / "confusion.png", title)
    if args.json:
        paths.append(Path(args.json))
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2))
        log.info("results written to %s", path)
    return 0
