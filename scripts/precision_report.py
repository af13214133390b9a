#!/usr/bin/env python3
"""Accuracy and speed of engine configurations side by side on a labelled split.

Every configuration (backend, precision, postprocessing mode, optionally a .onnx model) runs
through the engine exactly as the node and ``seg-perception eval`` do (``build_engine`` and
``engine(rgb)``, outputs at the frame's resolution) on the same frames, in one process, one
frame after another across configurations so machine load affects all alike. Reports per
configuration: mIoU and pixel accuracy against the annotations, label agreement with the
first (reference) configuration, and median engine stage times.

    python scripts/precision_report.py --data-root ../shared/data/camvid --split val \\
        --config torch:fp32:logits --config openvino:bf16:labels \\
        --config openvino:int8:logits:default_int8.onnx --threads 1 --json out.json

A configuration is ``BACKEND:PRECISION:UPSAMPLE[:MODEL]`` (MODEL defaults to --model).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import numpy as np


def parse_config(text: str, default_model: str) -> dict[str, str]:
    parts = text.split(":", 3)
    if len(parts) < 3:
        raise argparse.ArgumentTypeError(
            f"expected BACKEND:PRECISION:UPSAMPLE[:MODEL], got {text!r}")
    backend, precision, upsample = parts[:3]
    model = parts[3] if len(parts) == 4 else default_model
    return {"name": text, "backend": backend, "precision": precision, "upsample": upsample,
            "model": model}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--dataset", default="camvid", choices=("camvid", "cityscapes"))
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--config", action="append", default=[],
                    help="BACKEND:PRECISION:UPSAMPLE[:MODEL]; the first is the reference")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    import torch

    from seg_perception.runtime.engine import build_engine
    from seg_perception.training.datasets import open_dataset
    from seg_perception.training.metrics import ConfusionMatrix

    configs = [parse_config(c, args.model) for c in args.config] or [
        parse_config(c, args.model) for c in ("torch:fp32:logits", "torch:fp32:labels")]
    data = open_dataset(args.dataset, args.data_root, args.split, limit=args.limit, cache=False)
    engines = []
    for c in configs:
        ckpt = None if c["model"].endswith(".onnx") else args.checkpoint
        engine, info = build_engine(c["model"], ckpt, "cpu", c["precision"],
                                    threads=args.threads, backend=c["backend"],
                                    upsample=c["upsample"])
        c["info"] = {"model": info.model, "weights": info.weights, "backend": info.backend,
                     "precision": info.precision, "reason": info.precision_reason}
        engine.warmup(480, 360)
        engines.append(engine)
    n_cls = data.info.num_classes
    cms = [ConfusionMatrix(n_cls, data.info.ignore_index) for _ in configs]
    agree = [0] * len(configs)
    pixels = 0
    stages: list[dict[str, list[float]]] = [{} for _ in configs]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    for i in range(len(data)):
        rgb, target = data.load(i)
        ref = None
        for k, engine in enumerate(engines):
            result = engine(rgb, want_confidence=False)
            for s, v in result.timings.items():
                stages[k].setdefault(s, []).append(v)
            cms[k].update(torch.from_numpy(result.labels.astype(np.int64)),
                          torch.from_numpy(target.astype(np.int64)))
            if ref is None:
                ref = result.labels
            agree[k] += int((result.labels == ref).sum())
        pixels += target.size
        if (i + 1) % 20 == 0:
            print(f"{i + 1}/{len(data)} frames", file=sys.stderr)
    report = {
        "dataset": args.dataset, "split": args.split, "frames": len(data),
        "threads": args.threads, "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "seconds": round(time.perf_counter() - t0, 1), "reference": configs[0]["name"],
        "configs": [],
    }
    print(f"{args.dataset} {args.split}: {len(data)} frames, {args.threads} thread(s), load "
          f"{report['load_average_before'][0]:.2f} -> {report['load_average_after'][0]:.2f}")
    print(f"{'config':<48}{'mIoU':>7}{'pixacc':>8}{'agree':>9}{'pre':>7}{'inf':>7}{'post':>7}")
    for c, cm, a, st in zip(configs, cms, agree, stages, strict=True):
        med = {s: float(np.median(v)) for s, v in st.items()}
        entry = {"config": c["name"], **c["info"], "upsample": c["upsample"],
                 "miou": cm.miou(), "pixel_accuracy": cm.pixel_accuracy(),
                 "agreement_with_reference": a / pixels, "stages_median_ms": med}
        report["configs"].append(entry)
        print(f"{c['name']:<48}{cm.miou() * 100:7.2f}{cm.pixel_accuracy() * 100:8.2f}"
              f"{a / pixels * 100:9.3f}{med['preprocess']:7.2f}{med['inference']:7.2f}"
              f"{med['postprocess']:7.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
