#!/usr/bin/env python3
"""Engine configurations timed side by side in one process, rounds interleaved.

The machine is shared and noisy, so absolute figures move with the load; ratios between
configurations measured in the same rounds do not. Each round times ``--per-round`` frames
of every configuration in turn; the report gives per configuration the median of every
engine stage over all rounds, end-to-end frames/s, the ratio to the first configuration, and
the load average before and after.

    python scripts/speed_report.py --model default --camera 480x360 --threads 1 \\
        --config torch:fp32:logits --config openvino:bf16:labels \\
        --config openvino:int8:labels:default_int8.onnx

A configuration is ``BACKEND:PRECISION:UPSAMPLE[:MODEL]`` (MODEL defaults to --model);
``torch-compile:PRECISION:UPSAMPLE`` wraps the torch module in ``torch.compile`` (timed, not
part of the engine: its compile time is reported).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--camera", default="480x360")
    ap.add_argument("--input-size", default=None, help="WxH network input (default: model's)")
    ap.add_argument("--config", action="append", default=[])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--per-round", type=int, default=10)
    ap.add_argument("--confidence", action="store_true", help="also compute confidence")
    ap.add_argument("--frame", default=None, help="an image file to use (default: noise)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import cv2
    import torch

    from seg_perception.runtime.engine import build_engine

    cw, ch = (int(v) for v in args.camera.split("x"))
    size = tuple(int(v) for v in args.input_size.split("x")) if args.input_size else None
    if args.frame:
        frame = cv2.cvtColor(cv2.resize(cv2.imread(args.frame), (cw, ch)), cv2.COLOR_BGR2RGB)
    else:
        frame = np.random.default_rng(0).integers(0, 256, (ch, cw, 3), dtype=np.uint8)
    configs = []
    for text in args.config or ["torch:fp32:logits", "auto:auto:labels"]:
        parts = text.split(":", 3)
        backend, precision, upsample = parts[:3]
        model = parts[3] if len(parts) == 4 else args.model
        compile_ = backend == "torch-compile"
        t0 = time.perf_counter()
        engine, info = build_engine(model, None, "cpu", precision, size, threads=args.threads,
                                    backend="torch" if compile_ else backend,
                                    upsample=upsample)
        if compile_:
            engine.backend.module = torch.compile(engine.backend.module)
        engine.warmup(cw, ch, runs=3)
        setup = time.perf_counter() - t0
        configs.append({"name": text, "engine": engine, "backend": info.backend,
                        "precision": info.precision, "setup_s": setup,
                        "times": {"preprocess": [], "inference": [], "postprocess": [],
                                  "total": []}})
        print(f"{text}: {info.backend} {info.precision}, set-up {setup:.1f} s", file=sys.stderr)
    load_before = os.getloadavg()
    for _ in range(args.rounds):
        for c in configs:
            for _ in range(args.per_round):
                t0 = time.perf_counter()
                r = c["engine"](frame, want_confidence=args.confidence)
                c["times"]["total"].append((time.perf_counter() - t0) * 1e3)
                for s, v in r.timings.items():
                    c["times"][s].append(v)
    load_after = os.getloadavg()
    rows = []
    base = None
    for c in configs:
        med = {s: float(np.median(v)) for s, v in c["times"].items()}
        fps = 1e3 / med["total"]
        base = base or fps
        best = float(np.min(c["times"]["total"]))
        rows.append({"config": c["name"], "backend": c["backend"], "precision": c["precision"],
                     "setup_s": round(c["setup_s"], 1), "median_ms": med, "fps": fps,
                     "best_total_ms": best, "fps_at_best": 1e3 / best,
                     "ratio_to_first": fps / base,
                     "postprocess_over_inference": med["postprocess"] / med["inference"]})
    report = {"model": args.model, "camera": [cw, ch], "threads": args.threads,
              "rounds": args.rounds, "per_round": args.per_round,
              "confidence": args.confidence,
              "load_average_before": [round(v, 2) for v in load_before],
              "load_average_after": [round(v, 2) for v in load_after], "configs": rows}
    print(f"{args.model} camera {cw}x{ch}, {args.threads} thread(s), "
          f"{args.rounds}x{args.per_round} frames each, confidence {args.confidence}; load "
          f"{load_before[0]:.2f} -> {load_after[0]:.2f}")
    print(f"{'config':<44}{'pre':>7}{'inf':>8}{'post':>7}{'total':>8}{'fps':>8}{'ratio':>7}"
          f"{'post/inf':>9}{'best fps':>9}")
    for r in rows:
        m = r["median_ms"]
        print(f"{r['config']:<44}{m['preprocess']:7.2f}{m['inference']:8.2f}"
              f"{m['postprocess']:7.2f}{m['total']:8.2f}{r['fps']:8.1f}"
              f"{r['ratio_to_first']:7.2f}{r['postprocess_over_inference'] * 100:8.0f}%"
              f"{r['fps_at_best']:9.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
