"""The demo's plan and report, read from its bags: no DDS here.

Which topics of a bag the demo plays and how it poses the camera (the plan), and what it
makes of the recorded outputs afterwards (the report): the node's last diagnostics, latency
figures, the side-by-side video and stills, and ``summary.md``. The ROS side (the node, the
player, the recorder) is :mod:`seg_perception.ros.demo`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from seg_perception.offline.reader import bag_topics, decode_frame, open_bag
from seg_perception.offline.topics import BagError, output_topic, typestore
from seg_perception.runtime.geometry import GridSpec
from seg_perception.sim.demo_report import (
    agreement,
    grid_picture,
    mosaic,
    side_by_side,
    write_animation,
)

log = logging.getLogger(__name__)

RAW_IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
SURROUND_NAMES = ("front", "left", "right", "rear")

Stamp = tuple[int, int]


# --- the plan ----------------------------------------------------------------------------------

def image_topic(bag: Path, wanted: str | None) -> tuple[str, str]:
    """The image topic to play (``wanted``, or the first of the bag's) and its message type."""
    with open_bag(bag) as reader:
        topics = bag_topics(reader)
    images = {t: v.msgtype for t, v in topics.items() if v.msgtype in (RAW_IMAGE,
                                                                       COMPRESSED_IMAGE)}
    if wanted:
        if wanted not in images:
            raise BagError(f"{wanted} is not an image topic of {bag}; image topics: "
                           f"{', '.join(sorted(images)) or 'none'}")
        return wanted, images[wanted]
    if not images:
        raise BagError(f"{bag} has no sensor_msgs/Image or CompressedImage topic")
    first = sorted(images)[0]
    if len(images) > 1:
        log.info("several image topics in %s; using %s (choose with --image-topic)", bag, first)
    return first, images[first]


def pose_params(m: Any, prefix: str = "") -> dict[str, float]:
    """The ``camera.*`` parameters (``prefix``: ``X.`` for camera X) of a mounting."""
    return {f"{prefix}camera.{k}": float(getattr(m, k))
            for k in ("x", "y", "z", "roll", "pitch", "yaw")}


def tf_topics(bag: Path) -> list[str]:
    """The bag's /tf_static and /tf: the node takes the camera pose from them."""
    with open_bag(bag) as reader:
        topics = bag_topics(reader)
    return [t for t in ("/tf_static", "/tf") if t in topics]


# --- the report --------------------------------------------------------------------------------

def latency_ms(outputs: dict[Stamp, float], inputs: dict[Stamp, float]) -> dict[str, Any]:
    """p50 and p95 of output arrival - input arrival (ms) over the stamps both saw."""
    lat = [(outputs[k] - inputs[k]) * 1e3 for k in outputs if k in inputs]
    return {"p50": round(float(np.percentile(lat, 50)), 1) if lat else None,
            "p95": round(float(np.percentile(lat, 95)), 1) if lat else None,
            "frames": len(lat)}


def all_diagnostics(bag: Path) -> dict[str, dict[str, str]]:
    """The last values of each seg_node status, by what follows ``seg_node: `` in its name
    (``segmentation``, ``camera front``, ...)."""
    store = typestore()
    out: dict[str, dict[str, str]] = {}
    with open_bag(bag) as reader:
        conns = [c for c in reader.connections if c.topic == "/diagnostics"]
        for conn, _t, raw in reader.messages(connections=conns):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            for status in msg.status:
                if "seg_node" in status.name:
                    what = status.name.rsplit(": ", 1)[-1]
                    out[what] = {kv.key: kv.value for kv in status.values}
    return out


def read_diagnostics(bag: Path) -> dict[str, dict[str, str]]:
    """:func:`all_diagnostics`, or nothing with a warning: a report does not fail on them."""
    try:
        return all_diagnostics(bag)
    except Exception as exc:  # the report should not fail on a missing diagnostics message
        log.warning("no diagnostics read back: %s", exc)
        return {}


def _read_outputs(output_bag: Path, overlay_topics: dict[str, str], grid_topic: str,
                  boundary_topic: str) -> tuple[dict[Stamp, dict[str, np.ndarray]],
                                                dict[Stamp, np.ndarray],
                                                dict[Stamp, np.ndarray]]:
    """Overlays (by stamp, then by the name ``overlay_topics`` gives their topic), grids and
    boundary polygons recorded in ``output_bag``."""
    store = typestore()
    overlays: dict[Stamp, dict[str, np.ndarray]] = {}
    grids: dict[Stamp, np.ndarray] = {}
    boundaries: dict[Stamp, np.ndarray] = {}
    with open_bag(output_bag) as reader:
        for conn, _t, raw in reader.messages():
            if conn.topic in overlay_topics:
                header, rgb = decode_frame(conn.msgtype, raw)
                overlays.setdefault((header.stamp.sec, header.stamp.nanosec), {})[
                    overlay_topics[conn.topic]] = rgb
            elif conn.topic == grid_topic:
                msg = store.deserialize_cdr(raw, conn.msgtype)
                grids[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = np.asarray(
                    msg.data, np.int8).reshape(msg.info.height, msg.info.width)
            elif conn.topic == boundary_topic:
                msg = store.deserialize_cdr(raw, conn.msgtype)
                boundaries[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = np.array(
                    [[p.x, p.y] for p in msg.polygon.points], np.float64).reshape(-1, 2)
    return overlays, grids, boundaries


def _write_stills(frames: list[np.ndarray], report: Path) -> None:
    import cv2

    for name, idx in (("first", 0), ("middle", len(frames) // 2), ("last", len(frames) - 1)):
        cv2.imwrite(str(report / f"frame_{name}.png"), cv2.cvtColor(frames[idx],
                                                                    cv2.COLOR_RGB2BGR))


def render_report(input_bag: Path, output_bag: Path, image_topic: str, ns: str,
                  spec: GridSpec, report: Path, fps: float) -> Path:
    """camera | overlay | bird's-eye grid for every processed frame, as a video and stills."""
    overlays, grids, boundaries = _read_outputs(
        output_bag, {output_topic(ns, "overlay"): "overlay"}, output_topic(ns, "drivable/grid"),
        output_topic(ns, "drivable/boundary"))
    frames = []
    blank = spec.empty()
    with open_bag(input_bag) as reader:
        conns = [c for c in reader.connections if c.topic == image_topic]
        for conn, _t, raw in reader.messages(connections=conns):
            header, rgb = decode_frame(conn.msgtype, raw)
            key = (header.stamp.sec, header.stamp.nanosec)
            if key not in overlays:
                continue  # dropped by the node (counted in the summary)
            grid = grids.get(key, blank)
            pic = grid_picture(grid, spec, boundaries.get(key), rgb.shape[0])
            frames.append(side_by_side([rgb, overlays[key]["overlay"], pic], 360,
                                       ["camera", "segmentation overlay", "drivable grid"]))
    if not frames:
        raise RuntimeError("the node produced no overlay for any frame: see the node log")
    _write_stills(frames, report)
    return write_animation(frames, report / "drive", fps)


def markdown(s: dict[str, Any]) -> str:
    """``summary.md`` of a one-camera demo."""
    lat = s["latency_input_to_labels_ms"]
    diag = s.get("node_diagnostics", {})
    lines = [
        "# seg_perception demo",
        "",
        f"- video: `{s['video']}`",
        f"- input bag: `{s['input_bag']}` (topic `{s['image_topic']}`)",
        f"- output bag: `{s['output_bag']}`",
        f"- node log: `{s['node_log']}`",
        f"- frames played: {s['frames_played']} at rate {s['rate']}",
        "- outputs recorded: " + ", ".join(f"`{t}` {n}" for t, n in
                                           s["outputs_recorded"].items()),
        f"- latency input -> labels (wall clock, whole path over DDS): p50 {lat['p50']} ms, "
        f"p95 {lat['p95']} ms over {lat['frames']} frames",
        f"- node: model {diag.get('model')}, device {diag.get('device')}, processed "
        f"{diag.get('frames_processed')} / received {diag.get('frames_received')}, dropped "
        f"{diag.get('frames_dropped')}, stages p50: decode {diag.get('decode_p50_ms')} ms, "
        f"inference {diag.get('inference_p50_ms')} ms, publish {diag.get('publish_p50_ms')} ms,"
        f" grid {diag.get('grid_p50_ms')} ms",
        f"- wall time: {s['wall_time_s']} s",
        "",
    ]
    return "\n".join(lines)


def render_surround(input_bag: Path, output_bag: Path, drive: Any, names: list[str],
                    report: Path, fps: float) -> tuple[Path, dict[Stamp, Any]]:
    """The cameras' overlays | fused grid | exact fused truth, per fused grid; the agreement
    of each fused grid with the truth of its stamp."""
    overlays, grids, boundaries = _read_outputs(
        output_bag, {output_topic(f"/{n}", "overlay"): n for n in names}, "/drivable/grid",
        "/drivable/boundary")
    truth = np.load(drive.truth)
    by_stamp = {divmod(int(t), 1_000_000_000): i for i, t in enumerate(truth["stamps"])}
    spec = drive.grid
    frames, scores = [], {}
    for key in sorted(grids):
        views = overlays.get(key, {})
        if key not in by_stamp or not views:
            continue
        exact = truth["fused"][by_stamp[key]]
        scores[key] = agreement(grids[key], exact)
        tiles = mosaic([views.get(n) for n in names], names, 240)
        h = tiles.shape[0]
        pics = [grid_picture(grids[key], spec, boundaries.get(key), h),
                grid_picture(exact, spec, None, h)]
        row = side_by_side([tiles, *pics], h, ["", f"fused grid ({scores[key][0]:.1%} agree)",
                                               "exact fused truth"])
        frames.append(row)
    if not frames:
        raise RuntimeError("the node produced no fused grid with overlays: see the node log")
    _write_stills(frames, report)
    return write_animation(frames, report / "drive", fps), scores


def surround_markdown(s: dict[str, Any]) -> str:
    """``summary.md`` of a several-camera demo."""
    lat = s["latency_input_to_fused_grid_ms"]
    diag = s.get("node_diagnostics", {})
    agree = s["fused_agreement_with_truth"]
    lines = [
        f"# seg_perception demo: {len(s['cameras'])} cameras, one node",
        "",
        f"- video: `{s['video']}` (the cameras' overlays | fused grid | exact fused truth)",
        f"- input bag: `{s['input_bag']}` (cameras {', '.join(s['cameras'])})",
        f"- output bag: `{s['output_bag']}`",
        f"- node log: `{s['node_log']}`",
        f"- frames played per camera: {s['frames_played']} at rate {s['rate']}",
        "- outputs recorded: " + ", ".join(f"`{t}` {n}" for t, n in
                                           s["outputs_recorded"].items()),
        f"- fused grid vs the generator's exact fused truth: mean {agree['mean']}, worst "
        f"{agree['min']} of about {agree['seen_cells_per_frame']} seen cells per frame, over "
        f"{agree['frames']} fused grids",
        f"- latency first camera's input -> fused grid (wall clock, over DDS): p50 "
        f"{lat['p50']} ms, p95 {lat['p95']} ms over {lat['frames']} cycles",
        f"- node: model {diag.get('model')}, device {diag.get('device')}, backend "
        f"{diag.get('backend')}, batch size p50 {diag.get('batch_size_p50')}, cycle time p50 "
        f"{diag.get('cycle_time_p50_ms')} ms (p95 {diag.get('cycle_time_p95_ms')} ms), "
        f"fused grids {diag.get('fused_grids_published')}",
        "",
        "| camera | received | processed | dropped | rate Hz | latency p50 ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, d in s["camera_diagnostics"].items():
        lines.append(f"| {name} | {d.get('frames_received')} | {d.get('frames_processed')} | "
                     f"{d.get('frames_dropped')} | {d.get('processed_rate_hz')} | "
                     f"{d.get('latency_p50_ms')} |")
    lines += ["", f"- wall time: {s['wall_time_s']} s", ""]
    return "\n".join(lines)
