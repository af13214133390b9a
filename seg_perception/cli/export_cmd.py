"""``seg-perception export``: write a model as a self-describing ONNX file."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)

FORMATS = ("onnx",)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a model to ONNX (metadata included, runnable by the node as-is)",
        description="Export a registered model with its weights to ONNX. The file holds the "
        "model's metadata (classes, palette, normalisation, input size), so `--model "
        "FILE.onnx` works in the node, predict and bench without further options. The graph "
        "takes `input` (N,3,H,W) float32 normalised and returns `scores` (and "
        "`drivable_scores` for multi-task networks). A fixed-size export must be fed its "
        "size; the engine resizes camera frames to it.",
    )
    p.add_argument("--model", default="default", help="registered model (default: %(default)s)")
    p.add_argument("--checkpoint", default=None,
                   help="weights file (default: the weights shipped with the model)")
    p.add_argument("--format", choices=FORMATS, default="onnx",
                   help="output format (only onnx for now)")
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..core.engine_options import EngineConfigError
    from ..core.export import ExportError, export_onnx
    from ..core.models.checkpoint import CheckpointError, load_model
    from ..core.onnx_backend import max_abs_difference

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
