"""What the CPU can do: instruction-set flags that decide precision defaults.

bf16 matrix products run 4-5x faster than fp32 on CPUs with AMX or AVX-512 BF16 (measured
on this project's machines: 88 -> 367 GFLOP/s on one Zen 5 core, 148 -> 735 on one Sapphire
Rapids core), and not at all natively elsewhere, so ``auto`` precision reads the flags.
"""

from __future__ import annotations

import functools
from pathlib import Path

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """Flags of the first CPU in /proc/cpuinfo (empty where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_bf16_unit() -> str | None:
    """The CPU's bf16 matrix unit (``amx_bf16`` or ``avx512_bf16``), None without one."""
    flags = cpu_flags()
    return next((f for f in BF16_FLAGS if f in flags), None)


def cpu_int8_unit() -> str | None:
    """The CPU's int8 dot-product unit (AMX, AVX-512 VNNI or AVX-VNNI), None without one."""
    flags = cpu_flags()
    return next((f for f in INT8_FLAGS if f in flags), None)


__all__ = ["BF16_FLAGS", "INT8_FLAGS", "cpu_bf16_unit", "cpu_flags", "cpu_int8_unit"]
