"""Synthetic drives with exact truth: the scene renderer, camera rigs and the demo report.

Used by the demo, the benchmarks and the tests to score grids against known geometry. It
may import :mod:`seg_perception.runtime` and :mod:`seg_perception.offline` (to write and
read demo bags); never ``ros``, ``tools``, ``training`` or ``cli``, and never rclpy.
"""
