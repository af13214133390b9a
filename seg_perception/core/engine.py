"""Inference engine: RGB uint8 frame in; class ids, confidence and drivable mask out.

Everything between the upload of the uint8 frame and the single copy back to the host runs
on the model's device: resize, normalisation, channels-last, the network (fp16 on CUDA by
default), softmax/argmax, resize of the ids to the camera resolution (nearest).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .engine_options import DEVICE_CHOICES, PRECISION_CHOICES, EngineConfigError
from .models.meta import ModelMeta

log = logging.getLogger(__name__)



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


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """``auto`` is fp16 on CUDA and fp32 on CPU; fp16 on CPU is refused (slow, inexact)."""
    precision = (precision or "auto").strip().lower()
    if precision not in PRECISION_CHOICES:
        raise EngineConfigError(
            f"precision {precision!r} is not one of {', '.join(PRECISION_CHOICES)}"
        )
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision == "fp16" and device.type != "cuda":
        raise EngineConfigError("precision 'fp16' needs a CUDA device; use 'auto' or 'fp32'")
    return torch.float16 if precision == "fp16" else torch.float32


@dataclass
class SegResult:
    """Outputs for one frame, all at the frame's resolution, on the host.

    ``labels``: uint8 class ids; ``confidence``: uint8 winning probability x 255 (None when
    not requested); ``drivable``: uint8, 255 drivable / 0 not; ``timings``: milliseconds per
    stage (``preprocess``, ``inference``, ``postprocess``).
    """

    labels: np.ndarray
    confidence: np.ndarray | None
    drivable: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)


Backend = Callable[[torch.Tensor], torch.Tensor]


class SegEngine:
    """Runs one network on frames; thread-compatible (one frame at a time per engine)."""

    def __init__(
        self,
        model: nn.Module | Backend,
        meta: ModelMeta,
        device: str | torch.device = "auto",
        precision: str = "auto",
        input_size: tuple[int, int] | None = None,
        channels_last: bool = True,
    ) -> None:
        self.meta = meta
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.input_size = tuple(input_size or meta.input_size)  # (width, height)
        self.channels_last = channels_last and isinstance(model, nn.Module)
        if isinstance(model, nn.Module):
            model = model.eval().to(self.device, dtype=self.dtype)
            if self.channels_last:
                model = model.to(memory_format=torch.channels_last)
        else:
            # A foreign backend (e.g. ONNX Runtime) takes fp32 and manages its own device.
            self.dtype = torch.float32
        self.model = model
        mean = torch.tensor(meta.mean, dtype=torch.float32, device=self.device) * 255.0
        std = torch.tensor(meta.std, dtype=torch.float32, device=self.device) * 255.0
        self._mean = mean.view(1, 3, 1, 1)
        self._inv_std = (1.0 / std).view(1, 3, 1, 1)
        lut = np.zeros(256, dtype=np.uint8)
        lut[list(meta.drivable_classes)] = 255
        self._drivable_lut = lut

    @property
    def description(self) -> str:
        precision = "fp16" if self.dtype == torch.float16 else "fp32"
        w, h = self.input_size
        return f"{self.meta.arch} on {self.device} ({precision}, input {w}x{h})"

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """Upload the uint8 frame once; resize, normalise and lay out on the device."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {rgb.dtype} "
                             f"{rgb.shape}")
        t = torch.from_numpy(np.ascontiguousarray(rgb))
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        x = t.permute(2, 0, 1).unsqueeze(0).float()
        w, h = self.input_size
        if x.shape[-2:] != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > 2 * w)
        x = (x - self._mean) * self._inv_std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x.to(self.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Class scores (N, C, h, w) for a preprocessed batch.

        Multi-task networks (e.g. TwinLiteNet) return ``(scores, drivable_scores)`` where
        ``drivable_scores`` is (N, 2, h, w) from a dedicated drivable-area head; the drivable
        mask then comes from that head rather than from the classes.
        """
        with torch.inference_mode():
            return self.model(x)

    def _at_input_size(self, scores: torch.Tensor) -> torch.Tensor:
        w, h = self.input_size
        scores = scores.float()
        if scores.shape[-2:] != (h, w):
            scores = F.interpolate(scores, size=(h, w), mode="bilinear", align_corners=False)
        return scores

    def postprocess(
        self,
        scores: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
        out_hw: tuple[int, int],
        want_confidence: bool = True,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Argmax/confidence on the device at input size, nearest resize, one host copy.

        Returns labels, confidence (or None) and, for multi-task networks, the drivable head's
        mask (uint8 0/255, else None).
        """
        drivable_scores = None
        if isinstance(scores, (tuple, list)):
            scores, drivable_scores = scores
        with torch.inference_mode():
            scores = self._at_input_size(scores)
            top, labels = scores.max(dim=1)  # (1, h, w)
            planes = [labels.to(torch.uint8)]
            if want_confidence:
                prob = torch.exp(top - torch.logsumexp(scores, dim=1))
                planes.append((prob * 255.0).round_().to(torch.uint8))
            if drivable_scores is not None:
                head = self._at_input_size(drivable_scores)
                # Two channels: a comparison is the argmax, without a strided reduction.
                planes.append((head[:, 1] > head[:, 0]).to(torch.uint8) * 255)
            stacked = torch.cat(planes, dim=0).unsqueeze(1)  # (P, 1, h, w) uint8
            if stacked.shape[-2:] != tuple(out_hw):
                stacked = F.interpolate(stacked, size=tuple(out_hw), mode="nearest-exact")
            host = stacked[:, 0].cpu().numpy()  # the one copy back
        conf = host[1] if want_confidence else None
        drivable = host[-1] if drivable_scores is not None else None
        return host[0], conf, drivable

    def __call__(self, rgb: np.ndarray, want_confidence: bool = True) -> SegResult:
        """Segment one RGB uint8 frame; outputs at the frame's own resolution."""
        t0 = time.perf_counter()
        x = self.preprocess(rgb)
        self._sync()
        t1 = time.perf_counter()
        scores = self.forward(x)
        self._sync()
        t2 = time.perf_counter()
        labels, conf, drivable = self.postprocess(scores, rgb.shape[:2], want_confidence)
        if drivable is None:
            drivable = self._drivable_lut[labels]
        t3 = time.perf_counter()
        timings = {
            "preprocess": (t1 - t0) * 1e3,
            "inference": (t2 - t1) * 1e3,
            "postprocess": (t3 - t2) * 1e3,
        }
        return SegResult(labels, conf, drivable, timings)

    def warmup(self, width: int | None = None, height: int | None = None, runs: int = 2) -> float:
        """Run dummy frames so kernels, allocators and autotuning are ready; returns ms."""
        w, h = width or self.input_size[0], height or self.input_size[1]
        frame = np.zeros((h, w, 3), dtype=np.uint8)
        t0 = time.perf_counter()
        for _ in range(runs):
            self(frame)
        return (time.perf_counter() - t0) * 1e3


def is_onnx_path(model: str) -> bool:
    return str(model).lower().endswith(".onnx")


@dataclass
class EngineInfo:
    """What runs: for logs and /diagnostics."""

    model: str
    weights: str
    trained: bool
    device: str
    precision: str


def build_engine(
    model: str = "default",
    checkpoint: str | Path | None = None,
    device: str = "auto",
    precision: str = "auto",
    input_size: tuple[int, int] | None = None,
    threads: int | None = None,
) -> tuple[SegEngine, EngineInfo]:
    """Create the engine for a registered model (optionally with a checkpoint) or a .onnx file.

    ``threads`` sets the CPU threads of torch and ONNX Runtime (see :func:`resolve_threads`).
    """
    n_threads = resolve_threads(threads)
    torch.set_num_threads(n_threads)
    log.info("CPU threads for inference: %d of %d CPUs", n_threads, cpu_count())
    if is_onnx_path(model):
        from .onnx_backend import OnnxBackend  # optional dependency: onnxruntime

        dev = resolve_device(device)
        backend = OnnxBackend(model, dev, n_threads)
        # A fixed-size export only accepts its own size (clear error for any other).
        size = backend.resolve_input_size(input_size)
        engine = SegEngine(backend, backend.meta, dev, "fp32", size)
        info = EngineInfo(backend.model_name, backend.weights, backend.trained, str(dev), "fp32")
        return engine, info
    from .models.checkpoint import load_model

    loaded = load_model(model, checkpoint)
    engine = SegEngine(loaded.model, loaded.meta, device, precision, input_size)
    precision_name = "fp16" if engine.dtype == torch.float16 else "fp32"
    info = EngineInfo(loaded.name, loaded.weights, loaded.trained, str(engine.device),
                      precision_name)
    return engine, info
