"""``seg-perception predict``: segment image files into label, colour and drivable PNGs."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="segment image files: labels, colours, drivable mask (and overlay) as PNG",
        description="For each IMAGE write, at the image's own resolution: <stem>_labels.png "
        "(class ids, one channel), <stem>_color.png (palette colours), <stem>_drivable.png "
        "(255 drivable, 0 not) and <stem>_overlay.png (colours blended over the image). A "
        "folder stands for the images in it. Unreadable files are reported and skipped; the "
        "exit status is then 1.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    p.add_argument("--model", default="default",
                   help="registered model or exported .onnx file (default: %(default)s)")
    p.add_argument("--checkpoint", default=None,
                   help="weights file (default: the weights shipped with the model)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", default="auto",
                   help="auto, fp32, fp16 (CUDA), bf16, int8 (an int8 .onnx model)")
    p.add_argument("--no-overlay", dest="overlay", action="store_false",
                   help="do not write <stem>_overlay.png")
    p.add_argument("--alpha", type=float, default=0.5,
                   help="weight of the palette in the overlay (default: %(default)s)")
    p.set_defaults(func=run)


def expand_images(items: list[str]) -> list[Path]:
    """Files as given (even with odd suffixes, so errors name them); folders' images sorted."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.iterdir()
                                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            paths.append(path)
    return paths


def read_rgb(path: Path) -> np.ndarray | None:
    """RGB uint8 (H, W, 3), or None when the file is missing or not a decodable image."""
    import cv2
    import numpy as np

    if not path.is_file():
        return None
    data = np.fromfile(str(path), dtype=np.uint8)  # works with any file name
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _unique_stem(path: Path, used: set[str]) -> str:
    stem, n = path.stem, 1
    while stem in used:
        n += 1
        stem = f"{path.stem}_{n}"
    if stem != path.stem:
        log.warning("another input is also named %s: writing %s as %s_*", path.stem, path, stem)
    used.add(stem)
    return stem


def run(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from seg_perception.runtime.engine import EngineConfigError, build_engine
    from seg_perception.runtime.models.checkpoint import CheckpointError
    from seg_perception.runtime.render import colorize, overlay, palette_lut

    paths = expand_images(args.images)
    if not paths:
        log.error("no images found in %s", ", ".join(args.images))
        return 2
    try:
        engine, info = build_engine(args.model, args.checkpoint, args.device, args.precision)
    except (EngineConfigError, CheckpointError, FileNotFoundError, ValueError, KeyError) as exc:
        log.error("%s", exc.args[0] if isinstance(exc, KeyError) else exc)
        return 2
    log.info("model %s, weights: %s; %s", info.model, info.weights, engine.description)
    if not info.trained:
        log.warning("model %s runs with RANDOM weights: its labels are meaningless. Pass "
                    "--checkpoint or use a model with shipped weights.", info.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lut = palette_lut(engine.meta.palette)
    failed: list[Path] = []
    used: set[str] = set()
    times: list[float] = []
    with logging_redirect_tqdm():
        for path in tqdm(paths, desc="predict", unit="img", disable=len(paths) < 2):
            rgb = read_rgb(path)
            if rgb is None:
                log.error("cannot read image %s (missing, empty or not an image file)", path)
                failed.append(path)
                continue
            result = engine(rgb, want_confidence=False)
            times.append(sum(result.timings.values()))
            color = colorize(result.labels, lut)
            stem = _unique_stem(path, used)
            images = {
                "labels": result.labels,
                "color": cv2.cvtColor(color, cv2.COLOR_RGB2BGR),
                "drivable": result.drivable,
            }
            if args.overlay:
                images["overlay"] = cv2.cvtColor(overlay(rgb, color, args.alpha),
                                                 cv2.COLOR_RGB2BGR)
            for kind, image in images.items():
                target = out / f"{stem}_{kind}.png"
                if not cv2.imwrite(str(target), np.ascontiguousarray(image)):
                    log.error("cannot write %s", target)
                    failed.append(path)
                    break
    done = len(paths) - len(set(failed))
    if times:
        log.info("%d image(s) written to %s; %.1f ms per image (median)", done, out,
                 float(np.median(times)))
    if failed:
        log.error("%d of %d image(s) failed: %s", len(set(failed)), len(paths),
                  ", ".join(str(p) for p in dict.fromkeys(failed)))
        return 1
    return 0
