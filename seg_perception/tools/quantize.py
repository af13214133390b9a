"""int8 post-training static quantisation of an exported model (``export --int8``).

The fp32 ONNX export is quantised by ONNX Runtime's static quantiser (already a dependency,
pulls neither torch nor anything else): QDQ format, int8 weights per output channel
(symmetric), activations whose ranges come from running the network on calibration frames
preprocessed exactly as the engine does. Activation schemes (``activations``):

- ``s8`` (default): symmetric int8 activations on every quantisable layer, OpenVINO's own
  default scheme and its fastest path (PIDNet-S 1024x512: 1.8x its bf16 speed here);
  ONNX Runtime runs it too, but slowly (its x86 int8 kernels want uint8 activations).
- ``u8``: asymmetric uint8 activations on convolutions only, ONNX Runtime's fast path.
  uint8 QDQ around the other layers (Add, Mul, Resize, ...) crashed OpenVINO 2026.4's CPU
  plugin in ``compile_model`` (a segfault) for PIDNet, DDRNet and TwinLiteNet, so this
  scheme stops at convolutions. The result is a self-describing ``.onnx``
(the model metadata, ``seg_perception.precision = int8`` and how it was calibrated) that the
OpenVINO backend (int8 kernels on VNNI/AMX CPUs) and ONNX Runtime both run. It is a
reproducible command, not a file to keep in step by hand: the same weights, frames and
options give the same file, and the source weights' SHA-256 is recorded in it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from seg_perception.runtime.export import (
    INPUT_NAME,
    PRECISION_KEY,
    QUANT_KEY,
    ExportError,
    export_onnx,
)
from seg_perception.runtime.models.meta import ModelMeta

log = logging.getLogger(__name__)

CALIB_METHODS = ("minmax", "percentile", "entropy")
# Activation schemes (see the module docstring): "s8" symmetric int8 on every layer; "u8"
# asymmetric uint8 on convolutions only.
ACTIVATIONS = ("s8", "u8")
_U8_OPS = ("Conv",)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
SOURCE_SHA_KEY = "seg_perception.source_sha256"


def sha256_of(path: str | Path) -> str | None:
    """SHA-256 of a file, None where ``path`` is not a file (e.g. random weights)."""
    p = Path(str(path).split(" (")[0])
    if not p.is_file():
        return None
    h = hashlib.sha256()
    with p.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def evenly_spaced(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when k >= n)."""
    if k <= 0 or n <= 0:
        return []
    if k >= n:
        return list(range(n))
    return sorted({round(float(v)) for v in np.linspace(0, n - 1, k)})


def calibration_images(
    source: str | Path, dataset: str = "images", split: str = "train", frames: int = 300,
) -> tuple[list[np.ndarray], str]:
    """RGB uint8 calibration frames and a description of where they came from.

    ``dataset`` ``images``: every image under the folder ``source`` (recursively, sorted);
    ``camvid``/``cityscapes``: the frames of ``split`` of that dataset layout. ``frames``
    are taken evenly spaced over the sorted list, so the choice is reproducible.
    """
    import cv2

    root = Path(source)
    if dataset == "images":
        if root.is_file():
            paths = [root]
        elif root.is_dir():
            paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            raise FileNotFoundError(f"calibration data {root} does not exist")
        if not paths:
            raise ExportError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
        chosen = [paths[i] for i in evenly_spaced(len(paths), frames)]
        images = []
        for p in chosen:
            bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ExportError(f"cannot read calibration image {p}")
            images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        return images, f"{len(images)} of {len(paths)} images under {root}"
    from seg_perception.training.datasets import open_dataset

    data = open_dataset(dataset, root, split, cache=False)
    if len(data) == 0:
        raise ExportError(f"{dataset} split {split!r} under {root} has no frames")
    idx = evenly_spaced(len(data), frames)
    images = [data.load(i)[0] for i in idx]
    return images, f"{len(images)} of {len(data)} frames of {dataset} {split} under {root}"


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantiser logs through the root logger; its per-channel notes (e.g.
    "Axis 1 is out-of-range for weight ... with rank 1": a standalone BatchNorm scale is
    quantised per tensor instead) go to our debug log rather than the user's console."""

    class _ToDebug(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if record.name == "root" and record.levelno < logging.ERROR:
                log.debug("onnxruntime.quantization: %s", record.getMessage())
                return False
            return True

    root = logging.getLogger()
    flt = _ToDebug()
    handlers = [root, *root.handlers]
    for h in handlers:
        h.addFilter(flt)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(flt)


class _Frames:
    """ONNX Runtime calibration reader over preprocessed frames (engine preprocessing)."""

    def __init__(self, images: Sequence[np.ndarray], meta: ModelMeta,
                 size: tuple[int, int]) -> None:
        from seg_perception.runtime.engine import SegEngine

        # The engine's own preprocessing, so calibration sees what inference will see.
        self._pre = SegEngine(lambda x: x, meta, "cpu", "fp32", size)
        self._images = images
        self._it: Iterator[np.ndarray] = iter(images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        rgb = next(self._it, None)
        if rgb is None:
            return None
        return {INPUT_NAME: self._pre.preprocess(rgb).numpy()}

    def rewind(self) -> None:
        self._it = iter(self._images)


def _reader(images: Sequence[np.ndarray], meta: ModelMeta, size: tuple[int, int]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_Frames, CalibrationDataReader):
        pass

    return Reader(images, meta, size)


def quantize_onnx(
    fp32_path: str | Path, out_path: str | Path, images: Sequence[np.ndarray],
    meta: ModelMeta, method: str = "minmax", calibration: str = "",
    activations: str = ACTIVATIONS[0], op_types: Sequence[str] | None = None,
) -> Path:
    """Quantise an exported fp32 ``.onnx`` with ``images`` as calibration data.

    The metadata of ``fp32_path`` is carried over, with ``precision`` int8 and a JSON record
    of the calibration (method, frames, source, library versions).
    """
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIB_METHODS:
        raise ExportError(f"calibration method {method!r} is not one of "
                          f"{', '.join(CALIB_METHODS)}")
    if not images:
        raise ExportError("int8 calibration needs at least one frame")
    if activations not in ACTIVATIONS:
        raise ExportError(f"activations {activations!r} is not one of {', '.join(ACTIVATIONS)}")
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    source = onnx.load(str(fp32_path))
    w, h = meta.input_size
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    with tempfile.TemporaryDirectory(prefix="seg-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        # Shape inference and graph fusions (BN into convolutions) before the quantiser.
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        tmp_out = Path(tmp) / "int8.onnx"
        symmetric = activations == "s8"
        if not symmetric and not op_types:
            op_types = _U8_OPS
        with _quiet_root_logger():
            quantize_static(
                str(pre), str(tmp_out), _reader(images, meta, (w, h)),
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                weight_type=QuantType.QInt8, calibrate_method=methods[method],
                op_types_to_quantize=list(op_types) if op_types else None,
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": symmetric,
                               "CalibMovingAverage": False},
            )
        proto = onnx.load(str(tmp_out))
    acts = "int8 (symmetric)" if activations == "s8" else "uint8 (asymmetric)"
    record = {"method": method, "frames": len(images), "calibration": calibration,
              "format": f"QDQ, weights int8 per channel (symmetric), activations {acts}",
              "activations": activations, "op_types": list(op_types) if op_types else "all",
              "onnxruntime": onnxruntime.__version__}
    props = {p.key: p.value for p in source.metadata_props}
    props[PRECISION_KEY] = "int8"
    props[QUANT_KEY] = json.dumps(record, sort_keys=True)
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = source.doc_string + " (int8)"
    onnx.checker.check_model(proto)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(out_path))
    log.info("int8 model written to %s (%s calibration on %s)", out_path, method, calibration)
    return out_path


def export_int8(
    model: nn.Module, meta: ModelMeta, path: str | Path, images: Sequence[np.ndarray],
    width: int | None = None, height: int | None = None, *, method: str = "minmax",
    calibration: str = "", model_name: str | None = None, weights: str | None = None,
    trained: bool | None = None, opset: int = 17, activations: str = ACTIVATIONS[0],
    op_types: Sequence[str] | None = None,
) -> Path:
    """Export ``model`` to fp32 ONNX at ``width`` x ``height`` and quantise it to int8."""
    import onnx

    w = int(width or meta.input_size[0])
    h = int(height or meta.input_size[1])
    with tempfile.TemporaryDirectory(prefix="seg-export-") as tmp:
        fp32 = export_onnx(model, meta, Path(tmp) / "fp32.onnx", w, h, opset,
                           model_name=model_name, weights=weights, trained=trained)
        out = quantize_onnx(fp32, path, images, meta.replace(input_size=(w, h)), method,
                            calibration, activations, op_types)
    digest = sha256_of(weights) if weights else None
    if digest:
        proto = onnx.load(str(out))
        entry = proto.metadata_props.add()
        entry.key, entry.value = SOURCE_SHA_KEY, digest
        onnx.save(proto, str(out))
    return out


def label_agreement(int8_path: str | Path, model: nn.Module, meta: ModelMeta,
                    images: Sequence[np.ndarray]) -> float:
    """Fraction of pixels where the int8 file (ONNX Runtime) and the fp32 torch module give
    the same class, at the network's output resolution, on ``images``."""
    import torch

    from seg_perception.runtime.engine import SegEngine
    from seg_perception.runtime.engine.onnx_backend import OnnxBackend

    backend = OnnxBackend(int8_path, torch.device("cpu"))
    pre = SegEngine(lambda x: x, meta, "cpu", "fp32", meta.input_size)
    net = model.float().cpu().eval()
    same = total = 0
    with torch.inference_mode():
        for rgb in images:
            x = pre.preprocess(rgb)
            a, b = net(x), backend(x)
            a = a[0] if isinstance(a, (tuple, list)) else a
            b = b[0] if isinstance(b, (tuple, list)) else b
            same += int((a.argmax(1) == b.argmax(1)).sum())
            total += a[:, 0].numel()
    return same / max(1, total)


__all__ = [
    "ACTIVATIONS",
    "CALIB_METHODS",
    "SOURCE_SHA_KEY",
    "calibration_images",
    "evenly_spaced",
    "export_int8",
    "label_agreement",
    "quantize_onnx",
    "sha256_of",
]
