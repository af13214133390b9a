"""Pillow vs OpenCV JPEG decoding to RGB, interleaved in one run (issue 14, item 6).

seg_perception decodes JPEG/PNG with Pillow because OpenCV's libjpeg/libpng print corrupt-data
messages straight to stderr. This measures what that costs on real frames: each repetition
decodes the same file once with each decoder, in alternating order, so machine load hits both
alike; the minimum is the cost without interference, the median what a loaded machine sees.

    python scripts/jpeg_decode_bench.py ../shared/data/bdd100k_samples/*.jpg --reps 400
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from seg_perception.runtime.image_codec import decode_compressed


def opencv_rgb(data: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED),
                        cv2.COLOR_BGR2RGB)


def pillow_rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data), formats=["JPEG"]) as im:
        im.load()
        return np.asarray(im).copy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--reps", type=int, default=400)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    decoders = {"opencv imdecode+cvtColor": opencv_rgb, "pillow open+load+copy": pillow_rgb,
                "seg_perception decode_compressed": lambda d: decode_compressed("jpeg", d)}
    report = {}
    for path in args.files:
        data = path.read_bytes()
        ref = opencv_rgb(data)
        times = {k: [] for k in decoders}
        for i in range(args.reps):
            order = list(decoders.items())
            for name, fn in order if i % 2 else reversed(order):
                t0 = time.perf_counter()
                out = fn(data)
                times[name].append(time.perf_counter() - t0)
        diff = int(np.abs(pillow_rgb(data).astype(int) - ref).max())
        row = {name: {"min_ms": 1e3 * min(v), "median_ms": 1e3 * float(np.median(v))}
               for name, v in times.items()}
        base = row["opencv imdecode+cvtColor"]
        for r in row.values():
            r["min_ratio"] = r["min_ms"] / base["min_ms"]
            r["median_ratio"] = r["median_ms"] / base["median_ms"]
        report[path.name] = {"size": f"{ref.shape[1]}x{ref.shape[0]}", "bytes": len(data),
                             "max_pixel_difference": diff, "decoders": row}
        print(f"{path.name} {ref.shape[1]}x{ref.shape[0]}, {len(data)} bytes, max pixel "
              f"difference pillow vs opencv {diff} (shape {out.shape})")
        for name, r in row.items():
            print(f"  {name:34s} min {r['min_ms']:6.2f} ms ({r['min_ratio']:.2f}x)  median "
                  f"{r['median_ms']:6.2f} ms ({r['median_ratio']:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
