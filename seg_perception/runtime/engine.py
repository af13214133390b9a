"""Inference engine: RGB uint8 frame in; class ids, confidence and drivable mask out.

Everything between the upload of the uint8 frame and the single copy back to the host runs
on the model's device: resize, normalisation, channels-last, the network, argmax (and the
winning probability when asked), resize of the ids to the camera resolution (nearest).

Backends: torch (CUDA or CPU), OpenVINO (CPU; the default there when installed, bf16 on CPUs
with a bf16 matrix unit, and int8 for quantised exports) and ONNX Runtime (CPU or CUDA).
Postprocessing (``upsample``):
- ``logits``: class scores upsampled bilinearly to the frame, then argmax: how benchmarks
  score a model; on a CPU it costs about as much as the network.
- ``edges``: the same labels as ``logits`` (exactly, see :mod:`.upsample`), computing
  interpolated scores only where the low-resolution winners disagree; confidence at the
  network's output stride. A few milliseconds at 480x360.
- ``labels``: argmax and confidence at the output stride, ids resized nearest: the cheapest
  (0.6 points of CamVid mIoU below ``logits`` for the default model).
- ``auto`` (default): ``edges`` on a CPU, ``logits`` on CUDA (where the GPU upsamples fast).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seg_perception.runtime import hw
from seg_perception.runtime.engine_options import (
    BACKEND_CHOICES,
    DEVICE_CHOICES,
    PRECISION_CHOICES,
    UPSAMPLE_CHOICES,
    EngineConfigError,
)
from seg_perception.runtime.models.meta import ModelMeta
from seg_perception.runtime.net_output import NetOutput
from seg_perception.runtime.upsample import edge_refined_labels

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


@dataclass
class PendingBatch:
    """A batch between :meth:`SegEngine.start_batch` and :meth:`SegEngine.finish_batch`:
    the network's scores, each frame's (height, width) and confidence flag, the pass's and
    each frame's preprocessing time (ms)."""

    scores: Any
    shapes: list[tuple[int, int]]
    wants: list[bool]
    inference_ms: float
    preprocess_ms: list[float]


class SegEngine:
    """Runs one network on frames; thread-compatible (one frame at a time per engine).

    ``model`` is a torch module or a foreign backend (a callable taking the normalised
    float32 (N, 3, H, W) tensor and returning scores, with a ``precision`` attribute, e.g.
    :class:`~seg_perception.runtime.openvino_backend.OpenVinoBackend`). ``upsample`` chooses the
    postprocessing (see the module docstring): ``labels`` (cheap) or ``logits`` (eval parity).
    """

    def __init__(
        self,
        model: nn.Module | Backend,
        meta: ModelMeta,
        device: str | torch.device = "auto",
        precision: str = "auto",
        input_size: tuple[int, int] | None = None,
        channels_last: bool = True,
        upsample: str = "auto",
    ) -> None:
        self.meta = meta
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        if upsample not in UPSAMPLE_CHOICES:
            raise EngineConfigError(
                f"upsample {upsample!r} is not one of {', '.join(UPSAMPLE_CHOICES)}")
        if upsample == "auto":
            upsample = "edges" if self.device.type == "cpu" else "logits"
        elif upsample == "edges" and self.device.type != "cpu":
            upsample = "logits"  # the same labels; on a GPU the full upsampling is cheap
        self.upsample = upsample
        self.input_size = tuple(input_size or meta.input_size)  # (width, height)
        self.channels_last = channels_last and isinstance(model, nn.Module)
        self._autocast: torch.dtype | None = None
        if isinstance(model, nn.Module):
            self.precision = resolve_precision_name(precision, self.device)
            self.dtype = resolve_precision(self.precision, self.device)
            if self.dtype == torch.bfloat16 and self.device.type == "cpu":
                # Autocast keeps the weights in fp32 and runs convolutions and matrix
                # products in bf16: as fast as bf16 weights and closer to fp32 (measured on
                # CamVid, see docs/models.md); the input stays fp32.
                self._autocast = torch.bfloat16
                model = model.eval().to(self.device, dtype=torch.float32)
                self.dtype = torch.float32
            else:
                model = model.eval().to(self.device, dtype=self.dtype)
            if self.channels_last:
                model = model.to(memory_format=torch.channels_last)
        else:
            # A foreign backend takes fp32 (or, with ``uint8_input``, the uint8 frames) and
            # manages its own device and precision.
            self.dtype = torch.float32
            self.precision = str(getattr(model, "precision", "fp32"))
        self.model = model
        self._uint8_input = bool(getattr(model, "uint8_input", False))
        mean = torch.tensor(meta.mean, dtype=torch.float32, device=self.device) * 255.0
        std = torch.tensor(meta.std, dtype=torch.float32, device=self.device) * 255.0
        self._mean = mean.view(1, 3, 1, 1)
        self._inv_std = (1.0 / std).view(1, 3, 1, 1)
        lut = np.zeros(256, dtype=np.uint8)
        lut[list(meta.drivable_classes)] = 255
        self._drivable_lut = lut

    @property
    def compute_dtype(self) -> str:
        """The dtype of the network's matrix products: fp32, fp16, bf16 or int8."""
        return self.precision

    @property
    def backend_name(self) -> str:
        return str(getattr(self.model, "backend_name", "torch"))

    @property
    def description(self) -> str:
        w, h = self.input_size
        return (f"{self.meta.arch} on {self.device} ({self.backend_name}, {self.precision}, "
                f"input {w}x{h}, upsample {self.upsample})")

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @staticmethod
    def _frame_tensor(rgb: np.ndarray) -> torch.Tensor:
        """The (H, W, 3) uint8 frame as a tensor (no copy when contiguous); refuses others."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {rgb.dtype} "
                             f"{rgb.shape}")
        return torch.from_numpy(np.ascontiguousarray(rgb))

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """Upload the uint8 frame once; resize, normalise and lay out on the device."""
        t = self._frame_tensor(rgb)
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        x = t.permute(2, 0, 1).unsqueeze(0)  # a channels-last view, no copy
        w, h = self.input_size
        if x.shape[-2:] != (h, w):
            antialias = x.shape[-1] > 2 * w
            if self.device.type == "cpu":
                # torch's uint8 bilinear kernel reads the interleaved frame directly: 3x
                # faster than resizing floats (the result is rounded to uint8, <= 0.5/255).
                x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False,
                                  antialias=antialias).float()
            else:
                x = F.interpolate(x.float(), size=(h, w), mode="bilinear",
                                  align_corners=False, antialias=antialias)
        else:
            x = x.float()
        x = (x - self._mean) * self._inv_std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        elif not isinstance(self.model, nn.Module):
            x = x.contiguous()  # foreign backends read a plain NCHW buffer
        return x.to(self.dtype)

    def _prepare(self, rgb: np.ndarray) -> torch.Tensor:
        """The network's input for one frame: :meth:`preprocess`, or for a backend that
        normalises inside its own graph (``uint8_input``) the frame resized to the input
        size and kept uint8 (1, H, W, 3), with no float copy."""
        if not self._uint8_input:
            return self.preprocess(rgb)
        t = self._frame_tensor(rgb).unsqueeze(0)
        w, h = self.input_size
        if t.shape[1:3] != (h, w):
            # The same uint8 bilinear resize as preprocess (its result is uint8 too).
            x = F.interpolate(t.permute(0, 3, 1, 2), size=(h, w), mode="bilinear",
                              align_corners=False, antialias=t.shape[2] > 2 * w)
            t = x.permute(0, 2, 3, 1).contiguous()
        return t

    def forward(self, x: torch.Tensor) -> Any:
        """Class scores (N, C, h, w) for a preprocessed batch.

        Multi-task networks (e.g. TwinLiteNet) return ``(scores, drivable_scores)`` where
        ``drivable_scores`` is (N, 2, h, w) from a dedicated drivable-area head; the drivable
        mask then comes from that head rather than from the classes. A backend that computes
        more in its graph returns a :class:`NetOutput`.
        """
        with torch.inference_mode():
            if self._autocast is not None:
                with torch.autocast(self.device.type, dtype=self._autocast):
                    return self.model(x)
            return self.model(x)

    def _planes(self, scores: torch.Tensor, drivable_scores: torch.Tensor | None,
                want_confidence: bool, size: tuple[int, int] | None,
                net: NetOutput | None = None) -> list[torch.Tensor]:
        """uint8 planes (1, h, w): labels, [confidence], [drivable head], at ``size``
        (bilinear scores) or at the scores' own resolution when ``size`` is None (there the
        labels and confidence ``net`` brings from the backend's graph, if any, are used)."""
        if size is not None and tuple(scores.shape[-2:]) != size:
            # Channels-last makes the upsampling and the reduction over classes several times
            # faster on a CPU (one pixel's scores become contiguous).
            scores = F.interpolate(scores.float().contiguous(memory_format=torch.channels_last),
                                   size=size, mode="bilinear", align_corners=False)
        elif net is not None and net.labels is not None and (
                net.confidence is not None or not want_confidence):
            planes = [net.labels] + ([net.confidence] if want_confidence else [])
            return self._with_head(planes, drivable_scores, size)
        top, labels = scores.max(dim=1)  # (1, h, w): argmax without a second pass
        planes = [labels.to(torch.uint8)]
        if want_confidence:
            # Winning probability = 1 / sum(exp(s - max)): one pass, no logsumexp.
            denom = torch.exp(scores.float() - top.float().unsqueeze(1)).sum(dim=1)
            planes.append((255.0 / denom).round_().to(torch.uint8))
        return self._with_head(planes, drivable_scores, size)

    @staticmethod
    def _with_head(planes: list[torch.Tensor], drivable_scores: torch.Tensor | None,
                   size: tuple[int, int] | None) -> list[torch.Tensor]:
        """``planes`` and, for a two-head network, its drivable head's mask at ``size``."""
        if drivable_scores is not None:
            head = drivable_scores
            if size is not None and tuple(head.shape[-2:]) != size:
                head = F.interpolate(head.float(), size=size, mode="bilinear",
                                     align_corners=False)
            # Two channels: a comparison is the argmax, without a strided reduction.
            planes.append((head[:, 1] > head[:, 0]).to(torch.uint8) * 255)
        return planes

    def postprocess(
        self,
        scores: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
        out_hw: tuple[int, int],
        want_confidence: bool = True,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Labels, confidence (or None) and drivable mask (uint8 0/255) at ``out_hw``.

        ``labels`` mode: argmax/confidence (and the drivable mask, a lookup of the ids, or
        the drivable head of multi-task networks) at the network's output resolution, then
        a nearest (pixel-centre) resize of the uint8 planes; ``logits`` mode: scores resized
        bilinearly to ``out_hw`` first. On CUDA the planes are resized on the device and
        copied to the host once; on a CPU OpenCV resizes them (no copy at all).
        """
        drivable_scores = None
        net = None
        if isinstance(scores, NetOutput):
            net = scores
            scores, drivable_scores = net.scores, net.drivable_scores
        elif isinstance(scores, (tuple, list)):
            scores, drivable_scores = scores
        out_hw = (int(out_hw[0]), int(out_hw[1]))
        with torch.inference_mode():
            size = out_hw if self.upsample == "logits" else None
            planes = self._planes(scores, drivable_scores, want_confidence, size, net)
            if self.upsample == "edges":
                low = planes[0][0].numpy()
                labels = edge_refined_labels(scores[0].float().numpy(), out_hw, low)
                rest = [_nearest_host(p[0].numpy(), out_hw) for p in planes[1:]]
                if drivable_scores is None:
                    rest.append(cv2.LUT(labels, self._drivable_lut))
                conf = rest[0] if want_confidence else None
                return labels, conf, rest[-1]
            if drivable_scores is None:
                planes.append(self._drivable_plane(planes[0]))
            if self.device.type == "cpu":
                host = [_nearest_host(p[0].numpy(), out_hw) for p in planes]
            else:
                if len({tuple(p.shape[-2:]) for p in planes}) > 1:
                    planes = [_nearest(p, out_hw) for p in planes]
                stacked = _nearest(torch.cat(planes, dim=0), out_hw)  # (P, h, w) uint8
                host = list(stacked.cpu().numpy())  # the one copy back
        conf = host[1] if want_confidence else None
        return host[0], conf, host[-1]

    def _drivable_plane(self, labels: torch.Tensor) -> torch.Tensor:
        """255 where the class id is drivable: a lookup, done before any upsampling."""
        if labels.device.type == "cpu":
            ids = np.ascontiguousarray(labels.numpy())
            return torch.from_numpy(cv2.LUT(ids, self._drivable_lut))
        lut = getattr(self, "_drivable_lut_dev", None)
        if lut is None:
            lut = self._drivable_lut_dev = torch.from_numpy(self._drivable_lut).to(labels.device)
        return lut[labels.long()]

    def __call__(self, rgb: np.ndarray, want_confidence: bool = True) -> SegResult:
        """Segment one RGB uint8 frame; outputs at the frame's own resolution."""
        t0 = time.perf_counter()
        x = self._prepare(rgb)
        self._sync()
        t1 = time.perf_counter()
        scores = self.forward(x)
        self._sync()
        t2 = time.perf_counter()
        labels, conf, drivable = self.postprocess(scores, rgb.shape[:2], want_confidence)
        t3 = time.perf_counter()
        timings = {
            "preprocess": (t1 - t0) * 1e3,
            "inference": (t2 - t1) * 1e3,
            "postprocess": (t3 - t2) * 1e3,
        }
        return SegResult(labels, conf, drivable, timings)

    def run_batch(self, frames: Sequence[np.ndarray],
                  want_confidence: bool | Sequence[bool] = True) -> list[SegResult]:
        """Segment several RGB uint8 frames (any sizes, e.g. one per camera) with ONE forward
        pass: each is resized to the network input, the batch runs once, and each frame's
        outputs come back at its own resolution (the same as :meth:`__call__` gives it).

        ``want_confidence`` is one flag for all or one per frame. Each result's timings
        hold its own ``preprocess`` and ``postprocess``, the batch's ``inference`` and
        ``batch`` (the batch size). Backends that take one frame per call (a fixed-batch
        ``.onnx`` export) run the frames one after the other inside the same call.
        """
        return self.finish_batch(self.start_batch(frames, want_confidence))

    def start_batch(self, frames: Sequence[np.ndarray],
                    want_confidence: bool | Sequence[bool] = True) -> PendingBatch:
        """The first half of :meth:`run_batch`: preprocessing and the forward pass.

        :meth:`finish_batch` (the postprocessing) may run in another thread, while this one
        starts the next batch: the network releases the GIL for its whole pass, the
        postprocessing's numpy work mostly does not, so ``process`` overlaps the two.
        """
        n = len(frames)
        if isinstance(want_confidence, bool):
            wants = [want_confidence] * n
        else:
            wants = [bool(w) for w in want_confidence]
            if len(wants) != n:
                raise ValueError(f"{len(wants)} want_confidence flags for {n} frames")
        if n == 0:
            return PendingBatch(None, [], [], 0.0, [])
        pre_ms = []
        xs = []
        for rgb in frames:
            t = time.perf_counter()
            xs.append(self._prepare(rgb))
            pre_ms.append((time.perf_counter() - t) * 1e3)
        t0 = time.perf_counter()
        x = xs[0] if n == 1 else torch.cat(xs, dim=0)
        if self.channels_last and n > 1:
            x = x.contiguous(memory_format=torch.channels_last)
        self._sync()
        t1 = time.perf_counter()
        scores = self._forward_batch(x)
        self._sync()
        t2 = time.perf_counter()
        cat_ms = (t1 - t0) * 1e3 / n
        return PendingBatch(scores, [tuple(rgb.shape[:2]) for rgb in frames], wants,
                            (t2 - t1) * 1e3, [ms + cat_ms for ms in pre_ms])

    def finish_batch(self, pending: PendingBatch) -> list[SegResult]:
        """The second half of :meth:`run_batch`: each frame's outputs at its resolution."""
        n = len(pending.shapes)
        results = []
        for i, (shape, want) in enumerate(zip(pending.shapes, pending.wants, strict=True)):
            t = time.perf_counter()
            labels, conf, drivable = self.postprocess(_item(pending.scores, i), shape, want)
            results.append(SegResult(labels, conf, drivable, {
                "preprocess": pending.preprocess_ms[i], "inference": pending.inference_ms,
                "postprocess": (time.perf_counter() - t) * 1e3, "batch": n}))
        return results

    @property
    def max_batch(self) -> int | None:
        """Most frames one forward pass takes (None: any number)."""
        return getattr(self.model, "max_batch", None) if not isinstance(self.model, nn.Module) \
            else None

    def _forward_batch(self, x: torch.Tensor) -> Any:
        """:meth:`forward` on a batch, split where the backend takes fewer frames per call."""
        limit = self.max_batch
        if limit is None or x.shape[0] <= limit:
            return self.forward(x)
        parts = [self.forward(x[i:i + limit]) for i in range(0, x.shape[0], limit)]
        if isinstance(parts[0], NetOutput):
            return NetOutput.cat(parts)
        if isinstance(parts[0], (tuple, list)):
            return tuple(torch.cat([p[k] for p in parts], dim=0) for k in range(len(parts[0])))
        return torch.cat(parts, dim=0)

    def warmup(self, width: int | None = None, height: int | None = None, runs: int = 2,
               batch_sizes: Sequence[int] = (1,)) -> float:
        """Run dummy frames so kernels, allocators and autotuning are ready, for every batch
        size of ``batch_sizes`` (backends compiled per batch size compile each here); returns
        ms."""
        w, h = width or self.input_size[0], height or self.input_size[1]
        frame = np.zeros((h, w, 3), dtype=np.uint8)
        t0 = time.perf_counter()
        for n in sorted(set(batch_sizes)):
            for _ in range(runs):
                if n == 1:
                    self(frame)
                else:
                    self.run_batch([frame] * n)
        return (time.perf_counter() - t0) * 1e3


def _item(scores: Any, i: int) -> Any:
    """Frame ``i`` of a batch's scores (or (scores, drivable_scores), or a
    :class:`NetOutput`), batch axis kept."""
    if isinstance(scores, NetOutput):
        return scores.item(i)
    if isinstance(scores, (tuple, list)):
        return tuple(t[i:i + 1] for t in scores)
    return scores[i:i + 1]


def _nearest_host(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest (pixel-centre) resize of a uint8 (h, w) plane on the host, by OpenCV."""
    if plane.shape == size:
        return plane
    return cv2.resize(np.ascontiguousarray(plane), (size[1], size[0]),
                      interpolation=cv2.INTER_NEAREST_EXACT)


def _nearest(planes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of uint8 (P, h, w) planes (pixel centres, no shift)."""
    if tuple(planes.shape[-2:]) == size:
        return planes
    return F.interpolate(planes.unsqueeze(0), size=size, mode="nearest-exact")[0]


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
    from seg_perception.runtime.openvino_backend import OPENVINO_PIN, openvino_available

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
        from seg_perception.runtime.openvino_backend import OpenVinoBackend

        net: nn.Module | Backend = OpenVinoBackend.from_module(
            loaded.model, loaded.meta, size, prec, n_threads, model_name=loaded.name,
            weights=loaded.weights, trained=loaded.trained, uint8_input=True, planes=True)
    elif chosen == "onnx":
        import tempfile

        from seg_perception.runtime.export import export_onnx
        from seg_perception.runtime.onnx_backend import OnnxBackend

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
        from seg_perception.runtime.openvino_backend import OpenVinoBackend

        net: Any = OpenVinoBackend.from_onnx(path, prec, threads, input_size, uint8_input=True,
                                             planes=True)
    else:
        from seg_perception.runtime.onnx_backend import (
            OnnxBackend,  # optional dependency: onnxruntime
        )

        net = OnnxBackend(path, dev, threads)
    # A fixed-size export only accepts its own size (clear error for any other).
    size = net.resolve_input_size(input_size)
    engine = SegEngine(net, net.meta, dev, prec, size, upsample=upsample)
    engine.precision = prec
    info = EngineInfo(net.model_name, net.weights, net.trained, str(dev), prec, backend, why)
    return engine, info
