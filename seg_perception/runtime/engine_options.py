"""Engine choices users type (device, precision) and the error for impossible ones.

Torch-free on purpose: the parameter table (:mod:`seg_perception.runtime.config`) names the
valid values without loading torch, and the backends (:mod:`.engine`, :mod:`.engine.onnx_backend`)
raise :class:`EngineConfigError` without importing each other.
"""

from __future__ import annotations

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")
PRECISION_CHOICES = ("auto", "fp32", "fp16", "bf16", "int8")
BACKEND_CHOICES = ("auto", "torch", "openvino", "onnx")
UPSAMPLE_CHOICES = ("auto", "edges", "labels", "logits")


class EngineConfigError(ValueError):
    """A device/precision/model choice that cannot work on this machine."""


def is_device_choice(value: str) -> bool:
    """True for ``auto``, ``cpu``, ``cuda`` and ``cuda:N`` (N a device index)."""
    head, sep, index = str(value).partition(":")
    if not sep:
        return value in ("auto", "cpu", "cuda")
    return head == "cuda" and index.isdigit()


__all__ = [
    "BACKEND_CHOICES",
    "DEVICE_CHOICES",
    "PRECISION_CHOICES",
    "UPSAMPLE_CHOICES",
    "EngineConfigError",
    "is_device_choice",
]
