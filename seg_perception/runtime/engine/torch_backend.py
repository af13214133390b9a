"""The torch backend: a torch module on the engine's device, in the precision it runs.

Beside :mod:`.onnx_backend` and :mod:`.openvino_backend`: each keeps the
:class:`.backend.Backend` contract, so :class:`~.seg_engine.SegEngine` holds no torch-only
branch of its own. This one moves the module to the device and dtype, lays its weights out
channels-last, and runs bf16 on a CPU under autocast.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from seg_perception.runtime.engine.choice import resolve_precision, resolve_precision_name


class TorchBackend:
    """A torch module ready to run: evaluation mode, on ``device``, in ``precision``.

    ``precision`` is resolved for the device (``auto`` as :func:`.choice.auto_precision`
    says; refusals as :func:`.choice.resolve_precision`). ``input_dtype`` is the dtype the
    batch must have (the weights'); ``channels_last`` lays the weights out channels-last and
    asks the engine for a channels-last batch.
    """

    backend_name = "torch"
    uint8_input = False
    max_batch: int | None = None

    def __init__(self, module: nn.Module, device: torch.device, precision: str = "auto",
                 channels_last: bool = True) -> None:
        self.device = device
        self.precision = resolve_precision_name(precision, device)
        self.input_dtype = resolve_precision(self.precision, device)
        self.autocast: torch.dtype | None = None
        if self.input_dtype == torch.bfloat16 and device.type == "cpu":
            # Autocast keeps the weights in fp32 and runs convolutions and matrix
            # products in bf16: as fast as bf16 weights and closer to fp32 (measured on
            # CamVid, see docs/models.md); the input stays fp32.
            self.autocast = torch.bfloat16
            module = module.eval().to(device, dtype=torch.float32)
            self.input_dtype = torch.float32
        else:
            module = module.eval().to(device, dtype=self.input_dtype)
        self.channels_last = channels_last
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module

    def __call__(self, x: torch.Tensor) -> Any:
        """The module's outputs for a preprocessed batch (under autocast for CPU bf16)."""
        if self.autocast is not None:
            with torch.autocast(self.device.type, dtype=self.autocast):
                return self.module(x)
        return self.module(x)


__all__ = ["TorchBackend"]
