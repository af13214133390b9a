"""Which device, CPU threads and precision the network runs on, from what a user asked for.

Split from the engine itself (:mod:`.seg_engine`) because the choices are made before any
network exists, by :func:`.build.build_engine` and :class:`.torch_backend.TorchBackend`:
``auto`` devices, thread budgets, ``auto`` precision per device (and the refusals, each one
:class:`EngineConfigError` line naming the valid values).
"""

from __future__ import annotations

import logging
import os

import torch

from seg_perception.runtime import hw
from seg_perception.runtime.engine_options import (
    DEVICE_CHOICES,
    PRECISION_CHOICES,
    EngineConfigError,
)

log = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str) -> torch.device:
    """Map ``auto``/``cpu``/``cuda``/``cuda:N`` to a device; asking for absent CUDA fails."""
    device = (device or "auto").strip().lower()
    if device == "auto":
        if torch.cuda.is_available():
            log.info("device auto: CUDA available (%s), using cuda:0",
                     torch.cuda.get_device_name(0))
            return torch.device("cuda:0")
        log.info("device auto: no CUDA device, using CPU (%d threads)", torch.get_num_threads())
        return torch.device("cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise EngineConfigError(
                f"device {device!r} requested but CUDA is not available "
                f"(torch {torch.__version__}, built with CUDA: {torch.version.cuda}); "
                "use device 'auto' or 'cpu'"
            )
        index = 0 if device == "cuda" else device.split(":", 1)[1]
        if not str(index).isdigit() or int(index) >= torch.cuda.device_count():
            raise EngineConfigError(
                f"device {device!r}: valid CUDA devices are cuda:0..cuda:"
                f"{torch.cuda.device_count() - 1}"
            )
        return torch.device(f"cuda:{int(index)}")
    raise EngineConfigError(f"device {device!r} is not one of {', '.join(DEVICE_CHOICES)}")


def cpu_count() -> int:
    """CPUs this process may run on (respects affinity masks and container cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_threads(threads: int | None) -> int:
    """CPU threads for inference; 0/None is half the CPUs (at least 1).

    OpenMP workers that wait on each other collapse when another process holds a core: on
    a loaded 2-core machine, 2 threads ran a 480x360 frame ~10x slower than 1. Half the CPUs
    leaves room for decoding, DDS and whatever else the robot runs.
    """
    if threads is None or threads <= 0:
        return max(1, cpu_count() // 2)
    return int(threads)


def precision_name(precision: str | None) -> str:
    """Normalise and validate a precision choice (message names the valid ones)."""
    name = (precision or "auto").strip().lower()
    if name not in PRECISION_CHOICES:
        raise EngineConfigError(
            f"precision {name!r} is not one of {', '.join(PRECISION_CHOICES)}"
        )
    return name


def auto_precision(device: torch.device) -> tuple[str, str]:
    """What ``auto`` means on ``device``, and why (for the log and /diagnostics).

    fp16 on CUDA; on a CPU bf16 where it has a bf16 matrix unit (AMX or AVX-512 BF16:
    matrix products run 4-5x faster than fp32 there), fp32 elsewhere (bf16 would be emulated).
    """
    if device.type == "cuda":
        return "fp16", "CUDA device"
    unit = hw.cpu_bf16_unit()
    if unit:
        return "bf16", f"CPU has {unit}"
    return "fp32", f"CPU has no bf16 unit ({'/'.join(hw.BF16_FLAGS)})"


def resolve_precision_name(precision: str | None, device: torch.device) -> str:
    """``auto``/``fp32``/``fp16``/``bf16``/``int8`` -> the precision that runs on ``device``.

    ``auto`` follows :func:`auto_precision` and logs its choice; fp16 on a CPU is refused
    (slow, inexact); int8 runs on CPUs only (a quantised export, see ``export --int8``).
    """
    name = precision_name(precision)
    if name == "auto":
        name, why = auto_precision(device)
        log.info("precision auto: %s (%s)", name, why)
        return name
    if name == "fp16" and device.type != "cuda":
        raise EngineConfigError(
            "precision 'fp16' needs a CUDA device; on a CPU use 'auto', 'bf16' or 'fp32'")
    if name == "int8" and device.type != "cpu":
        raise EngineConfigError("precision 'int8' runs on the CPU (OpenVINO or ONNX Runtime); "
                                f"on {device} use 'auto', 'fp16' or 'fp32'")
    if name == "bf16" and device.type == "cpu" and not hw.cpu_bf16_unit():
        log.warning("precision bf16 requested but this CPU has no bf16 unit (%s): it is "
                    "emulated and slower than fp32", "/".join(hw.BF16_FLAGS))
    return name


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The torch dtype the network runs in for ``precision`` on ``device`` (torch backend).

    int8 has no torch dtype here: it needs a quantised export (OpenVINO/ONNX Runtime).
    """
    name = resolve_precision_name(precision, device)
    if name == "int8":
        raise EngineConfigError(
            "precision 'int8' runs a quantised export, not a torch module: create one with "
            "`seg-perception export --model NAME --int8 --calib-data DIR` and use that .onnx "
            "file as the model")
    return _DTYPES[name]


__all__ = [
    "auto_precision",
    "cpu_count",
    "precision_name",
    "resolve_device",
    "resolve_precision",
    "resolve_precision_name",
    "resolve_threads",
]
