"""``seg-perception export``: write a model as a self-describing ONNX file."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from seg_perception.runtime.models.checkpoint import LoadedModel

log = logging.getLogger(__name__)

FORMATS = ("onnx", "safetensors")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a model to ONNX (metadata included, runnable by the node as-is)",
        description="Export a registered model with its weights to ONNX. The file holds the "
        "model's metadata (classes, palette, normalisation, input size), so `--model "
        "FILE.onnx` works in the node, predict and bench without further options. The graph "
        "takes `input` (N,3,H,W) float32 normalised and returns `scores` (and "
        "`drivable_scores` for multi-task networks). A fixed-size export must be fed its "
        "size; the engine resizes camera frames to it. `--format safetensors` writes our own "
        "checkpoint instead, the same weights with their metadata, at --width/--height: how a "
        "model trained at one input size ships to run at another.",
    )
    p.add_argument("--model", default="default", help="registered model (default: %(default)s)")
    p.add_argument("--checkpoint", default=None,
                   help="weights file (default: the weights shipped with the model)")
    p.add_argument("--format", choices=FORMATS, default="onnx",
                   help="onnx (default), or safetensors: our checkpoint with the input size "
                   "in its metadata set to --width/--height")
    p.add_argument("--output", "-o", default=None, metavar="FILE",
                   help="output file (default: <model>_<W>x<H>.onnx in the current folder)")
    p.add_argument("--width", type=int, default=None,
                   help="network input width (default: the model's)")
    p.add_argument("--height", type=int, default=None,
                   help="network input height (default: the model's)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: %(default)s)")
    p.add_argument("--dynamic", action="store_true",
                   help="leave batch, height and width free instead of fixing the size")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip comparing ONNX Runtime's outputs with PyTorch's")
    q = p.add_argument_group(
        "int8", "post-training static quantisation (QDQ: int8 weights per channel, uint8 "
        "activations calibrated on real frames); the file runs with precision int8 on the "
        "OpenVINO and ONNX Runtime backends. Calibrate on training frames, judge on another "
        "split (e.g. seg-perception bench / eval on val).")
    q.add_argument("--int8", action="store_true", help="write an int8-quantised model")
    q.add_argument("--calib-data", default=None, metavar="PATH",
                   help="calibration frames: a folder of images, or a dataset root with "
                   "--calib-dataset")
    q.add_argument("--calib-dataset", choices=("images", "camvid", "cityscapes"),
                   default="images", help="layout of --calib-data (default: %(default)s)")
    q.add_argument("--calib-split", default="train",
                   help="dataset split to calibrate on (default: %(default)s)")
    q.add_argument("--calib-frames", type=int, default=300,
                   help="frames, evenly spaced over the sorted list (default: %(default)s)")
    q.add_argument("--calib-method", choices=("minmax", "percentile", "entropy"),
                   default="minmax", help="activation range estimator (default: %(default)s)")
    q.add_argument("--int8-activations", choices=("s8", "u8"), default="s8",
                   help="s8: symmetric int8 activations on every layer (OpenVINO's fast path, "
                   "the default); u8: uint8 activations on convolutions only (ONNX Runtime's "
                   "fast path)")
    p.set_defaults(func=run)


def _run_safetensors(args: argparse.Namespace, loaded: LoadedModel, w: int, h: int) -> int:
    """The weights unchanged, the metadata's input size set: the engine then runs them there."""
    from seg_perception.runtime.models.checkpoint import save_checkpoint

    if args.int8 or args.dynamic:
        log.error("--format safetensors takes neither --int8 nor --dynamic")
        return 2
    divisor = int(loaded.meta.extra.get("input_divisor", 1))
    if w <= 0 or h <= 0 or w % divisor or h % divisor:
        log.error("input %dx%d: width and height must be positive multiples of %d for %s",
                  w, h, divisor, loaded.name)
        return 2
    output = Path(args.output or f"{loaded.name}_{w}x{h}.safetensors")
    meta = loaded.meta.replace(input_size=(w, h))
    save_checkpoint(loaded.model, output, meta)
    log.info("%s at input %dx%d (trained for %dx%d) -> %s", loaded.name, w, h,
             *loaded.meta.input_size, output)
    print(output)
    return 0


def run(args: argparse.Namespace) -> int:
    from seg_perception.runtime.engine.onnx_backend import max_abs_difference
    from seg_perception.runtime.engine_options import EngineConfigError
    from seg_perception.runtime.export import ExportError, export_onnx
    from seg_perception.runtime.models.checkpoint import CheckpointError, load_model

    if args.format not in FORMATS:  # argparse already refuses; kept for programmatic calls
        log.error("format %r is not supported; valid choices: %s", args.format,
                  ", ".join(FORMATS))
        return 2
    try:
        loaded = load_model(args.model, args.checkpoint)
    except (CheckpointError, FileNotFoundError, ValueError, KeyError) as exc:
        log.error("%s", exc.args[0] if isinstance(exc, KeyError) else exc)
        return 2
    log.info("model %s, weights: %s", loaded.name, loaded.weights)
    if not loaded.trained:
        log.warning("model %s has RANDOM weights: the exported file will give meaningless "
                    "labels; pass --checkpoint", loaded.name)
    w = args.width or loaded.meta.input_size[0]
    h = args.height or loaded.meta.input_size[1]
    if args.format == "safetensors":  # first: it refuses --int8 rather than quantising
        return _run_safetensors(args, loaded, w, h)
    if args.int8:
        return _run_int8(args, loaded, w, h)
    output = Path(args.output or f"{loaded.name}_{w}x{h}.onnx")
    try:
        export_onnx(loaded.model, loaded.meta, output, w, h, args.opset, args.dynamic,
                    model_name=loaded.name, weights=loaded.weights, trained=loaded.trained)
    except (ExportError, ValueError, RuntimeError) as exc:
        log.error("export of %s failed: %s", loaded.name, exc)
        return 1
    if args.verify:
        try:
            diff = max_abs_difference(output, loaded.model, w, h)
        except EngineConfigError as exc:  # e.g. onnxruntime not installed
            log.warning("not verified (%s)", exc)
        else:
            log.info("ONNX Runtime vs PyTorch: max |difference| %.2e", diff)
            if diff > 1e-3:
                log.warning("outputs differ by up to %.2e; check the exported graph", diff)
    print(output)
    return 0


def _run_int8(args: argparse.Namespace, loaded: LoadedModel, w: int, h: int) -> int:
    """``--int8``: export, calibrate, quantise; report agreement with fp32 on a few frames."""
    from seg_perception.runtime.export import ExportError
    from seg_perception.tools.quantize import calibration_images, export_int8, label_agreement

    if args.dynamic:
        log.error("--int8 exports a fixed input size; drop --dynamic")
        return 2
    if not args.calib_data:
        log.error("--int8 needs calibration frames: --calib-data DIR (e.g. the training "
                  "split: --calib-data CamVid --calib-dataset camvid --calib-split train)")
        return 2
    if args.calib_frames < 1:
        log.error("--calib-frames must be at least 1")
        return 2
    output = Path(args.output or f"{loaded.name}_{w}x{h}_int8.onnx")
    try:
        images, where = calibration_images(args.calib_data, args.calib_dataset,
                                           args.calib_split, args.calib_frames)
    except (ExportError, FileNotFoundError, ValueError) as exc:
        log.error("calibration data: %s", exc)
        return 2
    log.info("calibrating on %s (%s)", where, args.calib_method)
    try:
        export_int8(loaded.model, loaded.meta, output, images, w, h,
                    method=args.calib_method, calibration=where, model_name=loaded.name,
                    weights=loaded.weights, trained=loaded.trained, opset=args.opset,
                    activations=args.int8_activations)
    except (ExportError, ValueError, RuntimeError) as exc:
        log.error("int8 export of %s failed: %s", loaded.name, exc)
        return 1
    if args.verify:
        frames = images[:: max(1, len(images) // 8)][:8]
        agree = label_agreement(output, loaded.model, loaded.meta.replace(input_size=(w, h)),
                                frames)
        log.info("int8 vs fp32 (PyTorch) label agreement on %d calibration frames: %.2f%%",
                 len(frames), agree * 100)
        if agree < 0.95:
            log.warning("int8 labels agree with fp32 on only %.1f%% of pixels; check the "
                        "calibration data", agree * 100)
    print(output)
    return 0
