"""Build the engine users ask for: a model name or .onnx file, device, precision, backend.

Split from the engine (:mod:`.seg_engine`), which only runs what it is given: this module
chooses the backend (``auto``: OpenVINO on a CPU where installed, else torch or ONNX
Runtime), the precision it runs and why (:class:`EngineInfo`, for logs and /diagnostics),
loads the weights and builds the backend; the ONNX Runtime and OpenVINO modules are
imported only when chosen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seg_perception.runtime.engine.backend import Backend
from seg_perception.runtime.engine.choice import (
    auto_precision,
    cpu_count,
    precision_name,
    resolve_device,
    resolve_precision_name,
    resolve_threads,
)
from seg_perception.runtime.engine.seg_engine import SegEngine
from seg_perception.runtime.engine_options import (
    BACKEND_CHOICES,
    UPSAMPLE_CHOICES,
    EngineConfigError,
)

log = logging.getLogger(__name__)


def is_onnx_path(model: str) -> bool:
    return str(model).lower().endswith(".onnx")


@dataclass
class EngineInfo:
    """What runs: for logs and /diagnostics.

    ``precision`` is what the network computes in (fp32, fp16, bf16, int8);
    ``precision_reason`` says why (``auto: CPU has avx512_bf16``, ``requested``, ...).
    """

    model: str
    weights: str
    trained: bool
    device: str
    precision: str
    backend: str = "torch"
    precision_reason: str = ""

    @property
    def summary(self) -> str:
        why = f" ({self.precision_reason})" if self.precision_reason else ""
        return f"{self.backend} on {self.device}, {self.precision}{why}"


_fallback_logged = False


def resolve_backend(backend: str | None, device: torch.device, onnx_file: bool = False) -> str:
    """``auto``/``torch``/``openvino``/``onnx`` -> the backend that runs on ``device``.

    ``auto`` is OpenVINO on a CPU where it is installed (the fastest CPU path measured), else
    torch (one log line says so), or ONNX Runtime for a ``.onnx`` file; torch on CUDA (ONNX
    Runtime's CUDA provider for a ``.onnx`` file).
    """
    global _fallback_logged
    name = (backend or "auto").strip().lower()
    if name not in BACKEND_CHOICES:
        raise EngineConfigError(f"backend {name!r} is not one of {', '.join(BACKEND_CHOICES)}")
    from seg_perception.runtime.engine.openvino_backend import OPENVINO_PIN, openvino_available

    if name == "auto":
        if device.type == "cpu" and openvino_available():
            return "openvino"
        name = "onnx" if onnx_file else "torch"
        if device.type == "cpu" and not _fallback_logged:
            _fallback_logged = True
            log.info("openvino is not installed: running on %s (pip install %s for the faster "
                     "CPU path)", "ONNX Runtime" if onnx_file else "torch", OPENVINO_PIN)
        return name
    if name == "openvino" and device.type != "cpu":
        raise EngineConfigError(f"backend 'openvino' runs on the CPU; for device {device} use "
                                "backend 'torch' (or 'onnx' for a .onnx file)")
    if name == "torch" and onnx_file:
        raise EngineConfigError("a .onnx model runs on backend 'openvino' or 'onnx', not 'torch'")
    return name


def _precision_for(requested: str | None, device: torch.device, backend: str,
                   file_precision: str = "fp32") -> tuple[str, str]:
    """The precision ``backend`` runs and why; refuses combinations that cannot work."""
    name = precision_name(requested)
    if file_precision == "int8":
        if name not in ("auto", "int8"):
            raise EngineConfigError(f"this model file is quantised to int8; precision {name!r} "
                                    "needs the fp32 export (or use precision 'auto'/'int8')")
        if device.type != "cpu":
            raise EngineConfigError(f"int8 exports run on the CPU, not on {device}")
        return "int8", "int8 export" if name == "auto" else "requested"
    if name == "int8":
        raise EngineConfigError(
            "precision 'int8' runs a quantised export: create one with `seg-perception export "
            "--model NAME --int8 --calib-data DIR` and use that .onnx file as the model")
    if backend == "onnx":
        if name == "auto":
            log.info("precision auto: fp32 (ONNX Runtime runs fp32 exports in fp32)")
            return "fp32", "auto: ONNX Runtime runs fp32"
        if name != "fp32":
            raise EngineConfigError(f"backend 'onnx' runs fp32 exports in fp32 (or int8 "
                                    f"exports); for {name} use backend 'openvino' or 'torch'")
        return "fp32", "requested"
    if name == "auto":
        chosen, why = auto_precision(device)
        log.info("precision auto: %s (%s)", chosen, why)
        return chosen, f"auto: {why}"
    return resolve_precision_name(name, device), "requested"


def build_engine(
    model: str = "default",
    checkpoint: str | Path | None = None,
    device: str = "auto",
    precision: str = "auto",
    input_size: tuple[int, int] | None = None,
    threads: int | None = None,
    *,
    backend: str = "auto",
    upsample: str = "auto",
    map_to: Any = None,
) -> tuple[SegEngine, EngineInfo]:
    """Create the engine for a registered model (optionally with a checkpoint) or a .onnx file.

    ``threads`` sets the CPU threads of torch, OpenVINO and ONNX Runtime (see
    :func:`resolve_threads`); ``backend`` is one of :data:`BACKEND_CHOICES` (see
    :func:`resolve_backend`); ``upsample`` is the postprocessing mode (:data:`UPSAMPLE_CHOICES`,
    see the module docstring). ``map_to`` (a dataset's class facts) reads the model's classes
    as that dataset's (:func:`.models.checkpoint.load_model`).
    """
    n_threads = resolve_threads(threads)
    torch.set_num_threads(n_threads)
    log.info("CPU threads for inference: %d of %d CPUs", n_threads, cpu_count())
    if upsample not in UPSAMPLE_CHOICES:
        raise EngineConfigError(
            f"upsample {upsample!r} is not one of {', '.join(UPSAMPLE_CHOICES)}")
    dev = resolve_device(device)
    onnx_file = is_onnx_path(model)
    chosen = resolve_backend(backend, dev, onnx_file)
    if onnx_file:
        return _build_from_onnx(model, dev, precision, input_size, n_threads, chosen, upsample)
    from seg_perception.runtime.models.checkpoint import load_model

    loaded = load_model(model, checkpoint, map_to=map_to)
    prec, why = _precision_for(precision, dev, chosen)
    size = tuple(input_size or loaded.meta.input_size)
    if chosen == "openvino":
        from seg_perception.runtime.engine.openvino_backend import OpenVinoBackend

        net: nn.Module | Backend = OpenVinoBackend.from_module(
            loaded.model, loaded.meta, size, prec, n_threads, model_name=loaded.name,
            weights=loaded.weights, trained=loaded.trained, uint8_input=True, planes=True)
    elif chosen == "onnx":
        import tempfile

        from seg_perception.runtime.engine.onnx_backend import OnnxBackend
        from seg_perception.runtime.export import export_onnx

        with tempfile.TemporaryDirectory(prefix="seg-onnx-") as tmp:
            path = export_onnx(loaded.model, loaded.meta, Path(tmp) / f"{loaded.name}.onnx",
                               size[0], size[1], model_name=loaded.name,
                               weights=loaded.weights, trained=loaded.trained)
            net = OnnxBackend(path, dev, n_threads)  # the session holds the graph in memory
        net.weights = loaded.weights
    else:
        net = loaded.model
    engine = SegEngine(net, loaded.meta, dev, prec, size, upsample=upsample)
    info = EngineInfo(loaded.name, loaded.weights, loaded.trained, str(engine.device),
                      engine.precision, chosen, why)
    return engine, info


def _build_from_onnx(path: str, dev: torch.device, precision: str,
                     input_size: tuple[int, int] | None, threads: int, backend: str,
                     upsample: str) -> tuple[SegEngine, EngineInfo]:
    from seg_perception.runtime.export import ExportError, read_onnx_info

    try:
        file_precision = read_onnx_info(path).precision
    except ExportError as exc:
        raise EngineConfigError(str(exc)) from exc
    prec, why = _precision_for(precision, dev, backend, file_precision)
    if backend == "openvino":
        from seg_perception.runtime.engine.openvino_backend import OpenVinoBackend

        net: Any = OpenVinoBackend.from_onnx(path, prec, threads, input_size, uint8_input=True,
                                             planes=True)
    else:
        from seg_perception.runtime.engine.onnx_backend import (
            OnnxBackend,  # optional dependency: onnxruntime
        )

        net = OnnxBackend(path, dev, threads)
    # A fixed-size export only accepts its own size (clear error for any other).
    size = net.resolve_input_size(input_size)
    engine = SegEngine(net, net.meta, dev, prec, size, upsample=upsample)
    engine.precision = prec
    info = EngineInfo(net.model_name, net.weights, net.trained, str(dev), prec, backend, why)
    return engine, info


__all__ = [
    "EngineInfo",
    "build_engine",
    "is_onnx_path",
    "resolve_backend",
]
