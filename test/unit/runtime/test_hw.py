"""CPU feature detection behind the precision defaults."""

from __future__ import annotations

from seg_perception.runtime import hw


def test_flags_come_from_cpuinfo_and_pick_a_unit(monkeypatch) -> None:
    monkeypatch.setattr(hw, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert hw.cpu_bf16_unit() == "avx512_bf16"
    assert hw.cpu_int8_unit() is None
    monkeypatch.setattr(hw, "cpu_flags", lambda: frozenset({"amx_bf16", "amx_int8"}))
    assert hw.cpu_bf16_unit() == "amx_bf16" and hw.cpu_int8_unit() == "amx_int8"
    monkeypatch.setattr(hw, "cpu_flags", lambda: frozenset())
    assert hw.cpu_bf16_unit() is None


def test_real_flags_are_read() -> None:
    hw.cpu_flags.cache_clear()
    flags = hw.cpu_flags()
    assert isinstance(flags, frozenset)
