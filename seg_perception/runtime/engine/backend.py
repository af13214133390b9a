"""The one contract between the engine and what runs its network: a batch in, scores out.

Why a module of its own: :class:`~.seg_engine.SegEngine` does the same pre- and
postprocessing whatever runs the network, torch (:class:`.torch_backend.TorchBackend`),
OpenVINO (:class:`.openvino_backend.OpenVinoBackend`) or ONNX Runtime
(:class:`.onnx_backend.OnnxBackend`), and talks to each through this protocol alone.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class Backend(Protocol):
    """Runs the network on one preprocessed batch.

    Called with the normalised batch (N, 3, H, W) on the engine's device, in
    ``input_dtype`` and channels-last when ``channels_last`` (else a plain NCHW buffer), or,
    for a backend with ``uint8_input``, with the frames themselves resized to the input
    size, uint8 (N, H, W, 3). Returns class scores (N, C, h, w), ``(scores,
    drivable_scores)`` for two-head networks (e.g. TwinLiteNet), or a
    :class:`~seg_perception.runtime.net_output.NetOutput` when its graph computes more.

    The engine reads these attributes where a backend has them, else the default in
    brackets: ``backend_name`` ("torch"), ``precision`` ("fp32": what the network computes
    in), ``uint8_input`` (False), ``max_batch`` (None: any number of frames per call),
    ``input_dtype`` (torch.float32), ``channels_last`` (False). So any callable on a
    float32 batch is a backend (the int8 calibration passes the batch through one).
    """

    def __call__(self, x: torch.Tensor) -> Any: ...


__all__ = ["Backend"]
