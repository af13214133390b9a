"""The engine: RGB uint8 frames in; class ids, confidence and drivable mask out.

Everything between the upload of the uint8 frame and the single copy back to the host runs
on the model's device: resize, normalisation, channels-last, the network, argmax (and the
winning probability when asked), resize of the ids to the camera resolution (nearest).

The network runs behind :class:`.backend.Backend`: torch (CUDA or CPU), OpenVINO (CPU; the
default there when installed, bf16 on CPUs with a bf16 matrix unit, and int8 for quantised
exports) and ONNX Runtime (CPU or CUDA); this module is the pre- and postprocessing around
it, the same for all three (:mod:`.build` picks and builds them).
Postprocessing (``upsample``):
- ``logits``: class scores upsampled bilinearly to the frame, then argmax: how benchmarks
  score a model; on a CPU it costs about as much as the network.
- ``edges``: the same labels as ``logits`` (exactly, see
  :mod:`seg_perception.runtime.upsample`), computing interpolated scores only where the
  low-resolution winners disagree; confidence at the network's output stride. A few
  milliseconds at 480x360.
- ``labels``: argmax and confidence at the output stride, ids resized nearest: the cheapest
  (0.6 points of CamVid mIoU below ``logits`` for the default model).
- ``auto`` (default): ``edges`` on a CPU, ``logits`` on CUDA (where the GPU upsamples fast).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seg_perception.runtime.engine.backend import Backend
from seg_perception.runtime.engine.choice import resolve_device
from seg_perception.runtime.engine.torch_backend import TorchBackend
from seg_perception.runtime.engine_options import UPSAMPLE_CHOICES, EngineConfigError
from seg_perception.runtime.models.meta import ModelMeta
from seg_perception.runtime.net_output import NetOutput
from seg_perception.runtime.upsample import edge_refined_labels


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

    ``model`` is a torch module (run by :class:`.torch_backend.TorchBackend` on ``device``
    in ``precision``) or a foreign backend (:class:`.backend.Backend`, e.g.
    :class:`.openvino_backend.OpenVinoBackend`). ``upsample`` chooses the postprocessing (see
    the module docstring): ``labels`` (cheap) or ``logits`` (eval parity).
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
        if isinstance(model, nn.Module):
            backend: Backend = TorchBackend(model, self.device, precision, channels_last)
        else:
            # A foreign backend takes fp32 (or, with ``uint8_input``, the uint8 frames) and
            # manages its own device and precision.
            backend = model
        #: What runs the network (see :class:`.backend.Backend` for what is read from it).
        self.backend = backend
        self.precision = str(getattr(backend, "precision", "fp32"))
        self.dtype = getattr(backend, "input_dtype", torch.float32)
        self.channels_last = bool(getattr(backend, "channels_last", False))
        self._uint8_input = bool(getattr(backend, "uint8_input", False))
        mean = torch.tensor(meta.mean, dtype=torch.float32, device=self.device) * 255.0
        std = torch.tensor(meta.std, dtype=torch.float32, device=self.device) * 255.0
        self._mean = mean.view(1, 3, 1, 1)
        self._inv_std = (1.0 / std).view(1, 3, 1, 1)
        lut = np.zeros(256, dtype=np.uint8)
        lut[list(meta.drivable_classes)] = 255
        self._drivable_lut = lut

    @property
    def model(self) -> nn.Module | Backend:
        """The network: the module the torch backend runs, else the foreign backend itself."""
        backend = self.backend
        return backend.module if isinstance(backend, TorchBackend) else backend

    @property
    def compute_dtype(self) -> str:
        """The dtype of the network's matrix products: fp32, fp16, bf16 or int8."""
        return self.precision

    @property
    def backend_name(self) -> str:
        return str(getattr(self.backend, "backend_name", "torch"))

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
        elif not isinstance(self.backend, TorchBackend):
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
            return self.backend(x)

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
        return getattr(self.backend, "max_batch", None)

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


__all__ = [
    "PendingBatch",
    "SegEngine",
    "SegResult",
]
