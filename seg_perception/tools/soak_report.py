"""The soak benchmark's options and its report: per-window figures, the whole-run summary,
the plot and the text a terminal shows.

The ROS side (the node, the flood of frames, the subscriptions) is in
:mod:`seg_perception.ros.soak`; what is here reads only numbers and ``/proc``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: The node's /diagnostics counters a window reports as deltas.
DIAG_KEYS = ("frames_received", "frames_processed", "frames_dropped",
             "frames_lost_in_transport", "frames_bad", "frames_without_subscribers",
             "frames_without_grid")


@dataclass
class SoakOptions:
    """What to flood the node with, for how long, and how to report it."""

    rate_hz: float = 100.0
    width: int = 640
    height: int = 480
    duration_s: float = 600.0
    window_s: float = 30.0
    namespace: str = "/soak"
    model: str = "default"
    device: str = "cpu"
    encoding: str = "rgb8"
    outputs: tuple[str, ...] = ("labels", "drivable/grid")
    attach: bool = False  # use a node already running in ``namespace``
    node_pid: int | None = None  # its process id when attaching (for RSS)
    node_params: dict[str, Any] = field(default_factory=dict)
    ready_timeout_s: float = 300.0
    out_dir: Path = Path("soak_out")


@dataclass
class Window:
    """Figures of one window of the soak."""

    t_start_s: float
    t_end_s: float
    published: int = 0
    late_ticks: int = 0  # publish ticks skipped because the publisher fell behind
    outputs_received: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    rss_mb: float = float("nan")  # at the end of the window
    rss_max_mb: float = float("nan")
    node: dict[str, int] = field(default_factory=dict)  # diagnostics counters, deltas
    load_avg_1m: float = float("nan")


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB (NaN when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return float("nan")


def load_average() -> tuple[float, float, float]:
    try:
        a, b, c = Path("/proc/loadavg").read_text().split()[:3]
        return float(a), float(b), float(c)
    except (OSError, ValueError):
        return (float("nan"),) * 3


def latency_stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "p50": float("nan"), "p95": float("nan"), "max": float("nan")}
    arr = np.asarray(values, float)
    return {"n": int(arr.size), "p50": float(np.percentile(arr, 50)),
            "p95": float(np.percentile(arr, 95)), "max": float(arr.max())}


def summarise(windows: list[Window], all_latencies: list[float], warmup_windows: int = 1,
              ) -> dict[str, Any]:
    """Whole-run figures: latency over all windows, RSS growth after the warm-up windows,
    totals of the node's counters."""
    lat = latency_stats(all_latencies)
    rss = [w.rss_mb for w in windows if math.isfinite(w.rss_mb)]
    after = [w.rss_mb for w in windows[warmup_windows:] if math.isfinite(w.rss_mb)]
    base = windows[warmup_windows - 1].rss_mb if 0 < warmup_windows <= len(windows) else \
        (rss[0] if rss else float("nan"))
    totals: dict[str, int] = {}
    for w in windows:
        for k, v in w.node.items():
            totals[k] = totals.get(k, 0) + v
    published = sum(w.published for w in windows)
    p95s = [w.latency_ms.get("p95", float("nan")) for w in windows]
    p95s = [v for v in p95s if math.isfinite(v)]
    return {
        "windows": len(windows),
        "published": published,
        "late_ticks": sum(w.late_ticks for w in windows),
        "outputs_received": sum(w.outputs_received for w in windows),
        "latency_ms": lat,
        "window_p95_ms": {"min": min(p95s) if p95s else float("nan"),
                          "max": max(p95s) if p95s else float("nan")},
        "rss_mb": {"first": rss[0] if rss else float("nan"),
                   "after_warmup": base,
                   "last": rss[-1] if rss else float("nan"),
                   "max": max(rss) if rss else float("nan"),
                   "growth_after_warmup": (after[-1] - base) if after and math.isfinite(base)
                   else float("nan"),
                   "max_growth_after_warmup": (max(after) - base)
                   if after and math.isfinite(base) else float("nan")},
        "node": totals,
        "not_received_by_node": published - totals.get("frames_received", 0)
        if "frames_received" in totals else None,
    }


def plot(report: dict[str, Any], path: Path) -> None:
    """Latency p50/p95/max, node RSS and rates per window, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = report["windows"]
    t = [(w["t_start_s"] + w["t_end_s"]) / 2 / 60.0 for w in windows]
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    ax = axes[0]
    for key, style in (("p50", "-o"), ("p95", "-s"), ("max", ":^")):
        ax.plot(t, [w["latency_ms"].get(key, float("nan")) for w in windows], style,
                label=key, markersize=3)
    ax.set_ylabel("latency, stamp -> labels (ms)")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    ax = axes[1]
    ax.plot(t, [w["rss_mb"] for w in windows], "-o", markersize=3, label="end of window")
    ax.plot(t, [w["rss_max_mb"] for w in windows], ":", label="max in window")
    ax.set_ylabel("node RSS (MB)")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    ax = axes[2]
    dur = [max(1e-9, w["t_end_s"] - w["t_start_s"]) for w in windows]
    ax.plot(t, [w["published"] / d for w, d in zip(windows, dur, strict=True)], "-o",
            markersize=3, label="published")
    for key, label in (("frames_processed", "processed"), ("frames_dropped", "dropped"),
                       ("frames_lost_in_transport", "lost")):
        ax.plot(t, [w["node"].get(key, float("nan")) / d for w, d in
                    zip(windows, dur, strict=True)], "-", label=label)
    ax.set_ylabel("frames/s")
    ax.set_xlabel("minutes")
    ax.legend(loc="center right")
    ax.grid(alpha=0.3)
    o = report["options"]
    fig.suptitle(f"seg_node soak: {o['width']}x{o['height']} {o['encoding']} at "
                 f"{o['rate_hz']:g} Hz, model {o['model']} on {o['device']}; load avg "
                 f"{report['load_average_start'][0]:.1f} -> {report['load_average_end'][0]:.1f}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def counters(diag: dict[str, str]) -> dict[str, int]:
    """The node's frame counters out of its /diagnostics values (those it sends)."""
    out = {}
    for key in DIAG_KEYS:
        with contextlib.suppress(KeyError, ValueError):
            out[key] = int(diag[key])
    return out


def format_summary(report: dict[str, Any]) -> str:
    """The whole run in five lines, for the terminal (the figures are in ``soak.json``)."""
    s = report["summary"]
    lat, rss, node = s["latency_ms"], s["rss_mb"], s["node"]
    return "\n".join([
        f"{s['windows']} windows, {s['published']} frames published "
        f"({s['late_ticks']} publish ticks skipped by a late publisher), "
        f"{s['outputs_received']} labels received",
        f"latency stamp -> labels: p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms, max "
        f"{lat['max']:.1f} ms; per-window p95 {s['window_p95_ms']['min']:.1f}.."
        f"{s['window_p95_ms']['max']:.1f} ms",
        f"node RSS: {rss['first']:.1f} MB first window, {rss['after_warmup']:.1f} after "
        f"warm-up, {rss['last']:.1f} last, {rss['max']:.1f} max; growth after warm-up "
        f"{rss['growth_after_warmup']:+.1f} MB (max {rss['max_growth_after_warmup']:+.1f})",
        "node: " + ", ".join(f"{k.replace('frames_', '')} {v}" for k, v in node.items())
        + (f"; not received by the node {s['not_received_by_node']}"
           if s.get("not_received_by_node") is not None else ""),
        f"node alive at the end: {report['node_alive_at_end']}; load average "
        f"{report['load_average_start'][0]:.2f} -> {report['load_average_end'][0]:.2f} on "
        f"{report['cpus']} CPUs",
    ])
