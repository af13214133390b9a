"""Pieces ``seg_node`` and ``seg_lifecycle_node`` share besides the worker and the camera
channel: rate-limited warnings, the warm-up, the start-up log lines and the /diagnostics
status of one camera.

They take the node's logger and parts as arguments, so a node of any shape (plain, managed,
several cameras) calls them without inheriting from another node class.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from sensor_msgs.msg import Image

from ..core.engine import EngineInfo
from ..core.stats import WarningLimiter
from .conversions import numpy_to_imgmsg

if TYPE_CHECKING:
    from ..core.config import PipelineConfig
    from . import tf_pose
    from .camera_io import CameraChannel
    from .node import FrameWorker


def log_limited(logger: Any, limiter: WarningLimiter, key: str, message: str,
                level: str = "warning") -> None:
    """Log ``message`` at most every few seconds per ``key`` (a kind of problem), saying how
    many were suppressed since the last one."""
    suppressed = limiter.check(key)
    if suppressed is None:
        return
    more = f" ({suppressed} more since the last one)" if suppressed else ""
    # (rclpy fixes a call site's severity: one call per level)
    if level == "info":
        logger.info(message + more)
    else:
        logger.warning(message + more)


def warm_up(engine: Any, logger: Any) -> float:
    """Exercise the model and the message path once so the first frame is not slow; the
    time it took (ms), which is also logged."""
    t0 = time.perf_counter()
    w, h = engine.input_size
    engine.warmup(w, h)
    from rclpy.serialization import deserialize_message, serialize_message

    dummy = numpy_to_imgmsg(np.zeros((h, w, 3), np.uint8), "rgb8", Image().header)
    deserialize_message(serialize_message(dummy), Image)
    ms = (time.perf_counter() - t0) * 1e3
    logger.info(f"warm-up done in {ms:.0f} ms")
    return ms


def log_engine(logger: Any, info: EngineInfo) -> None:
    """What runs where (and a warning when the weights are random)."""
    logger.info(
        f"model {info.model}, weights: {info.weights}, device {info.device}, "
        f"backend {info.backend}, precision {info.precision} ({info.precision_reason})")
    if not info.trained:
        logger.warning(
            f"model {info.model} runs with RANDOM weights: its labels are meaningless. "
            "Pass `checkpoint` or use a model with shipped weights.")


def log_pose_source(logger: Any, config: PipelineConfig, tf: tf_pose.TfPoses | None,
                    tf_reason: str) -> None:
    """Where the camera pose for the grid comes from: tf2 or the camera.* parameters."""
    if config.use_tf and tf is not None:
        logger.info(f"camera pose from tf2: the image's frame_id in {config.grid_frame} "
                    "(use_tf)")
    else:
        why = "use_tf is false" if not config.use_tf else tf_reason
        logger.info(f"camera pose from the camera.* parameters ({why})")


def segmentation_status(name: str, worker: FrameWorker, camera: CameraChannel,
                        info: EngineInfo, grid_frame: str,
                        extra: dict[str, str] | None = None) -> DiagnosticStatus:
    """One status with rates, latency percentiles, drops and what runs where; ``extra``
    values are appended (e.g. a lifecycle node's state)."""
    import torch

    w, cam = worker, camera
    values = {
        "input_rate_hz": f"{cam.rx.rate():.2f}",
        "processed_rate_hz": f"{w.done.rate():.2f}",
        "latency_p50_ms": f"{w.latency.percentile(50):.1f}",
        "latency_p95_ms": f"{w.latency.percentile(95):.1f}",
        "frames_received": str(cam.rx.total),
        "frames_processed": str(w.done.total),
        "frames_dropped": str(cam.dropped),
        "frames_lost_in_transport": str(cam.lost),
        "frames_bad": str(cam.bad),
        "frames_without_subscribers": str(w.idle),
        "frames_without_grid": str(cam.no_grid),
        "camera_infos_received": str(cam.infos.count),
        "camera_pose": cam.pose_source or "not yet known",
        "grid_frame": grid_frame,
        "model": info.model,
        "weights": info.weights,
        "device": info.device,
        "precision": info.precision,
        "precision_reason": info.precision_reason,
        "backend": info.backend,
        "cpu_threads": str(torch.get_num_threads()),
    }
    for stage, pct in w.stage_ms.items():
        values[f"{stage}_p50_ms"] = f"{pct.percentile(50):.1f}"
    values.update(extra or {})
    level, message = DiagnosticStatus.OK, "ok"
    if not info.trained:
        level, message = DiagnosticStatus.WARN, "model has random weights"
    elif cam.rx.total == 0:
        level, message = DiagnosticStatus.WARN, "no images received yet"
    return DiagnosticStatus(
        level=level,
        name=f"{name}: segmentation",
        message=message,
        hardware_id=info.device,
        values=[KeyValue(key=k, value=v) for k, v in values.items()],
    )


__all__ = ["log_engine", "log_limited", "log_pose_source", "segmentation_status", "warm_up"]
