"""``seg-perception eval``: mean IoU of a model on a labelled split at native resolution."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from seg_perception.cli import arg_types

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="per-class IoU, mean IoU, pixel accuracy and false-drivable shares on a split",
        description="Evaluate a model on CamVid- or Cityscapes-layout data at the "
        "annotation's native resolution (ignore pixels excluded). By default every frame "
        "goes through the engine the node runs (same resize, normalisation, backend, "
        "precision and postprocessing), so the mIoU is the deployed one. --path logits "
        "scores the bare network instead, as the trainer validates: frames resized with "
        "OpenCV, logits upsampled bilinearly before the argmax. A model trained on other "
        "classes is read through a class-mapping table where one exists (Cityscapes -> "
        "CamVid: zero-shot evaluation, each CamVid class scored by the summed probability "
        "of its Cityscapes classes).",
    )
    p.add_argument("--model", default="default",
                   help="registered model or an exported .onnx file (default: %(default)s)")
    p.add_argument("--checkpoint", default=None,
                   help="weights file (default: the weights shipped with the model)")
    arg_types.add_dataset(p)
    p.add_argument("--split", default="val",
                   help="CamVid: lists joined by + with an optional sequence filter, e.g. "
                   "train:0006R0 (default: %(default)s)")
    p.add_argument("--ignore-index", type=int, default=None,
                   help="label id excluded from the metrics (default: the dataset's)")
    p.add_argument("--input-size", type=arg_types.size, default=None, metavar="WxH",
                   help="network input size (default: the model's own)")
    p.add_argument("--path", choices=("engine", "logits"), default="engine",
                   help="engine: the node's path (default); logits: the trainer's validation")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", default="auto", help="engine precision (see the node's "
                   "`precision` parameter)")
    p.add_argument("--backend", default="auto", help="engine backend: auto (the node's), torch, "
                   "openvino or onnx")
    p.add_argument("--upsample", default="auto", help="engine postprocessing: auto (the "
                   "node's), edges, labels or logits (see `seg-perception bench --help`)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: half the CPUs)")
    p.add_argument("--batch-size", type=int, default=4, help="batch size of --path logits")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N frames")
    p.add_argument("--json", default=None, metavar="FILE", help="write the results as JSON")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write results.json and confusion.png here")
    p.set_defaults(func=run)


def _evaluate(args: argparse.Namespace, data: Any) -> tuple[Any, dict[str, Any]]:
    """(EvalResult, description of what ran) for the chosen path."""
    from seg_perception.training.evaluate import evaluate, evaluate_engine

    if args.path == "engine":
        from seg_perception.runtime.engine import build_engine

        engine, info = build_engine(args.model, args.checkpoint, args.device, args.precision,
                                    input_size=args.input_size, threads=args.threads,
                                    backend=args.backend, upsample=args.upsample,
                                    map_to=data.info)
        if not info.trained:
            log.warning("model %s has no trained weights: the scores describe random weights",
                        info.model)
        result = evaluate_engine(engine, data, progress=True)
        ran = {"model": info.model, "weights": info.weights, "device": info.device,
               "precision": info.precision, "engine": engine.description}
        return result, {**ran, "meta": engine.meta.replace(input_size=tuple(engine.input_size))}

    import torch

    from seg_perception.runtime.engine import resolve_threads
    from seg_perception.runtime.models.checkpoint import load_model
    from seg_perception.training.trainer import resolve_device

    torch.set_num_threads(resolve_threads(args.threads))
    loaded = load_model(args.model, args.checkpoint, map_to=data.info)
    meta = loaded.meta.replace(input_size=args.input_size or loaded.meta.input_size)
    if not loaded.trained:
        log.warning("model %s has no trained weights: the scores describe random weights",
                    loaded.name)
    device = resolve_device(args.device)
    model = loaded.model.to(device)
    result = evaluate(model, meta, data, device, args.batch_size, progress=True)
    ran = {"model": loaded.name, "weights": loaded.weights, "device": str(device),
           "precision": "fp32", "engine": "bare network, logits upsampled bilinearly"}
    return result, {**ran, "meta": meta}


def run(args: argparse.Namespace) -> int:
    from seg_perception.runtime.engine import EngineConfigError
    from seg_perception.runtime.models.checkpoint import CheckpointError
    from seg_perception.training.datasets import open_dataset
    from seg_perception.training.evaluate import drivable_confusion
    from seg_perception.training.metrics import plot_confusion

    try:
        data = open_dataset(args.dataset, args.data_root, args.split, args.ignore_index,
                            args.limit, cache=False)
        result, ran = _evaluate(args, data)
    except (CheckpointError, EngineConfigError, FileNotFoundError, ValueError,
            KeyError) as exc:
        log.error("%s", exc)
        return 2
    meta = ran.pop("meta")
    cm = result.confusion
    names = data.info.class_names
    summary = {
        **ran,
        "path": args.path,
        "dataset": args.dataset,
        "split": args.split,
        "frames": result.frames,
        "input_size": list(meta.input_size),
        **cm.summary(names),
        "read_as_drivable": drivable_confusion(cm, names, data.info.drivable),
        "confusion": cm.counts.tolist(),
    }
    width = max(len(n) for n in names)
    print(f"{'class':<{width}}    IoU  as drivable")
    for name, iou in summary["per_class_iou"].items():
        shown = "   n/a" if iou is None else f"{iou * 100:6.2f}"
        share = summary["read_as_drivable"].get(name, "")
        share = "" if share in ("", None) else f"{share * 100:9.2f}%"
        print(f"{name:<{width}} {shown} {share}")
    print(f"{'mIoU':<{width}} {cm.miou() * 100:6.2f}")
    print(f"{'pixel acc':<{width}} {cm.pixel_accuracy() * 100:6.2f}")
    print(f"{result.frames} frames of {args.dataset} {args.split} in {result.seconds:.1f} s: "
          f"{ran['engine']}")
    paths = []
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        paths.append(out / "results.json")
        title = f"{ran['model']} on {args.dataset} {args.split}: mIoU {cm.miou() * 100:.1f}%"
        plot_confusion(cm, names, out / "confusion.png", title)
    if args.json:
        paths.append(Path(args.json))
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2))
        log.info("results written to %s", path)
    return 0
