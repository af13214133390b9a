"""The node's sink for the cycle runner: what a cycle makes, published (and counted).

Split from :mod:`.worker` (its threads and calibration wait) because publishing is the one
place that knows the topics' subscribers: the camera's own grid and boundary go out where
subscribed, the fused grid and the persistent map on the node's own topics.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from seg_perception.ros.camera_io import frame_ref
from seg_perception.ros.conversions import KIT, numpy_to_imgmsg
from seg_perception.runtime import messages
from seg_perception.runtime.pipeline import IMAGE_ENCODINGS, Cycle, CycleFrame, FusedGrid
from seg_perception.runtime.pipeline.cycle import MapUpdate

if TYPE_CHECKING:
    from seg_perception.runtime.stats import Percentiles


class Publishing(Protocol):
    """What the sink publishes through and counts in (the node's worker)."""

    node: Any
    fused: Any
    map_pub: Any
    stage_ms: dict[str, Percentiles]
    fused_published: int
    map_published: int
    lookup_builds: int

    def warn(self, key: str, message: str, level: str = "warning") -> None: ...


class NodeSink:
    """Publishes each cycle's outputs for ``worker`` and keeps its statistics there."""

    def __init__(self, worker: Publishing) -> None:
        self.worker = worker

    def images(self, frame: CycleFrame) -> None:
        ref = frame_ref(frame)
        header = ref.frame.msg.header
        assert frame.result is not None
        for name, encoding in IMAGE_ENCODINGS.items():
            arr = frame.result.image(name)
            if arr is not None:
                ref.channel.pubs[name].publish(numpy_to_imgmsg(arr, encoding, header))

    def grid(self, frame: CycleFrame) -> None:
        w, ref, result, pose = self.worker, frame_ref(frame), frame.result, frame.pose
        channel, header = ref.channel, ref.frame.msg.header
        assert result is not None and pose is not None
        source = f"{pose.source} ({pose.detail})" if pose.detail else pose.source
        if pose.mounting is not None and source != channel.pose_source:
            channel.pose_source = source
            w.node.get_logger().info(f"{channel.image_topic}: camera pose from {source}")
        made = result.grid is not None and result.grid_spec is not None
        channel.note_grid(made, result.no_grid, time.monotonic())
        if not made:
            channel.no_grid += 1
            reason = result.no_grid or "unknown"
            key = "no_grid." + channel.name + "." + "".join(
                ch for ch in reason[:40] if not ch.isdigit())
            w.warn(key, f"{channel.image_topic}: no drivable/grid for this frame (image "
                   f"outputs were published): {reason}")
            return
        if result.lookup_built:
            w.lookup_builds += 1
            view = frame.calibration
            assert view is not None
            w.warn("lookup." + channel.name,
                   f"{channel.image_topic}: ground lookup built for a "
                   f"{view.image_size[0]}x{view.image_size[1]} "
                   f"{'rectified' if frame.rectified else 'raw'} camera at pose "
                   f"{pose.mounting} ({w.lookup_builds} builds so far)", "info")
        ghdr = messages.header(KIT, header.stamp.sec, header.stamp.nanosec, result.grid_frame)
        if channel.grid_pub is not None and channel.grid_pub.get_subscription_count() > 0:
            channel.grid_pub.publish(
                messages.grid_message(KIT, result.grid, result.grid_spec, ghdr))
        # The camera's boundary only where its own topic is subscribed.
        if channel.boundary_pub is not None and result.boundary is not None \
                and channel.boundary_pub.get_subscription_count() > 0:
            channel.boundary_pub.publish(messages.polygon_message(KIT, result.boundary, ghdr))
        for stage in ("grid", "boundary"):
            if stage in result.timings:
                w.stage_ms[stage].add(result.timings[stage])

    def fused_grid(self, cycle: Cycle, fused: FusedGrid) -> None:
        w = self.worker
        if fused.left_out:
            ages = ", ".join(f"{c} {a:.2f} s" for c, a in fused.left_out.items())
            w.warn("fusion.left_out", f"fused drivable/grid without cameras whose latest grid "
                   f"is older than fusion.max_age = {cycle.config.fusion_max_age:g} s: {ages}",
                   "info")
        sec, nsec = divmod(fused.stamp_ns, 1_000_000_000)
        ghdr = messages.header(KIT, sec, nsec, fused.grid_frame)
        assert w.fused is not None
        if "drivable/grid" in cycle.fused_want:
            w.fused.grid.publish(messages.grid_message(KIT, fused.grid, fused.spec, ghdr))
        if "drivable/boundary" in cycle.fused_want and fused.boundary is not None:
            w.fused.boundary.publish(messages.polygon_message(KIT, fused.boundary, ghdr))
        if cycle.fused_want:
            w.fused_published += 1

    def drivable_map(self, cycle: Cycle, update: MapUpdate) -> None:
        w = self.worker
        if update.map is None:
            w.warn("map.transform", update.problem or "drivable/map not updated", "warning")
            return
        if update.cleared:
            w.warn("map.cleared", "time went back: drivable/map cleared", "info")
        sec, nsec = divmod(update.stamp_ns, 1_000_000_000)
        hdr = messages.header(KIT, sec, nsec, update.frame)
        if w.map_pub is not None:
            w.map_pub.publish(messages.grid_message(KIT, update.map.grid(), update.spec, hdr))
            w.map_published += 1
        w.stage_ms["map"].add(cycle.timings.get("map", 0.0))


__all__ = ["NodeSink"]
