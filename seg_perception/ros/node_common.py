"""What the node uses besides its worker and camera channels: loading the model, the
warm-up, rate-limited warnings, the start-up log lines, the /diagnostics statuses (the
node's, and one per camera of a multi-camera node) and the executables' ``main``
(:func:`run_node`: one fatal line on a start-up error, a clean exit on Ctrl-C).

They take the node's logger and parts as arguments, so they are testable without a node.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from sensor_msgs.msg import Image

from seg_perception.ros.conversions import numpy_to_imgmsg
from seg_perception.ros.params import ParameterBridge, StartupError
from seg_perception.runtime.engine import EngineConfigError, EngineInfo, build_engine
from seg_perception.runtime.signals import SIGINT_SEEN, ensure_signal_stack, note_sigint
from seg_perception.runtime.stats import Percentiles, RateMeter, WarningLimiter

if TYPE_CHECKING:
    from seg_perception.ros import tf_pose
    from seg_perception.ros.camera_io import CameraChannel
    from seg_perception.runtime.config import PipelineConfig


class WorkerStats(Protocol):
    """What the statuses read of a node's worker (:class:`.worker.FrameWorker`), named here so
    that this module does not import the node module, which imports it."""

    done: RateMeter
    latency: Percentiles
    idle: int
    cycles: RateMeter
    cycle_ms: Percentiles
    batch: Percentiles
    last_batch: int
    fused_published: int
    stage_ms: dict[str, Percentiles]

    @property
    def fused(self) -> Any:
        """The fused grid's publishers (a multi-camera node), else None."""


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


def warm_up(engine: Any, logger: Any, cameras: int = 1) -> float:
    """Exercise the model (every batch size a cycle of ``cameras`` can have) and the message
    path once so the first real frames are not slow; the time it took (ms), also logged."""
    t0 = time.perf_counter()
    w, h = engine.input_size
    if cameras > 1 and getattr(engine, "run_batch", None) is not None:
        engine.warmup(w, h, batch_sizes=range(1, cameras + 1))
    else:
        engine.warmup(w, h)
    from rclpy.serialization import deserialize_message, serialize_message

    dummy = numpy_to_imgmsg(np.zeros((h, w, 3), np.uint8), "rgb8", Image().header)
    deserialize_message(serialize_message(dummy), Image)
    ms = (time.perf_counter() - t0) * 1e3
    batches = f" (batch sizes 1-{cameras})" if cameras > 1 else ""
    logger.info(f"warm-up done in {ms:.0f} ms{batches}")
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


def log_pose_source(logger: Any, config: PipelineConfig, tf: tf_pose.Poses | None,
                    tf_reason: str) -> None:
    """Where the camera pose for the grid comes from: /tf (tf2_ros, or read directly without
    it) or the camera.* parameters; a warning when use_tf is on and /tf cannot be read."""
    from seg_perception.ros.tf_pose import NoTfPoses

    if not config.use_tf:
        logger.info("camera pose from the camera.* parameters (use_tf is false)")
    elif tf is None or isinstance(tf, NoTfPoses):
        logger.warning(f"{tf_reason or 'no tf'}: no drivable grid unless use_tf is set false "
                       "and the camera.* parameters give the pose")
    else:
        if tf_reason:
            logger.info(tf_reason)
        logger.info(f"camera pose from tf: the image's frame_id in {config.grid_frame} "
                    "(use_tf)")


def log_ready(logger: Any, worker: WorkerStats, cameras: Sequence[CameraChannel]) -> None:
    """The last start-up line, ``ready: listening on <topics>`` (which tools wait for),
    after the fused grid's topic on a multi-camera node."""
    if worker.fused is not None:
        names = ", ".join(c.name for c in cameras)
        logger.info(f"{len(cameras)} cameras ({names}), one batched forward pass per cycle; "
                    f"fused grid on {worker.fused.grid.topic_name}")
    logger.info(f"ready: listening on {', '.join(c.image_topic for c in cameras)}")


def segmentation_status(name: str, worker: WorkerStats, cameras: Sequence[CameraChannel],
                        info: EngineInfo, grid_frame: str,
                        extra: dict[str, str] | None = None) -> DiagnosticStatus:
    """The node's status: rates, latency percentiles, drops (all ``cameras`` together),
    batch size and cycle time, and what runs where; ``extra`` values are appended (e.g. a
    lifecycle node's state). A multi-camera node (``worker.fused`` set) adds its fused
    grids; a single camera its pose source. WARN, with the reason, for: random weights, no
    images yet, a camera that has made no grid for a while although its grid is wanted
    (:meth:`.camera_io.CameraChannel.grid_problem`)."""
    import torch

    w, cams = worker, cameras
    multi = w.fused is not None
    values = {
        "input_rate_hz": f"{sum(c.rx.rate() for c in cams):.2f}",
        "processed_rate_hz": f"{w.done.rate():.2f}",
        "latency_p50_ms": f"{w.latency.percentile(50):.1f}",
        "latency_p95_ms": f"{w.latency.percentile(95):.1f}",
        "frames_received": str(sum(c.rx.total for c in cams)),
        "frames_processed": str(w.done.total),
        "frames_dropped": str(sum(c.dropped for c in cams)),
        "frames_lost_in_transport": str(sum(c.lost for c in cams)),
        "frames_bad": str(sum(c.bad for c in cams)),
        "frames_without_subscribers": str(w.idle),
        "frames_without_grid": str(sum(c.no_grid for c in cams)),
        "camera_infos_received": str(sum(c.infos.count for c in cams)),
    }
    if not multi and cams:
        values["camera_pose"] = cams[0].pose_source or "not yet known"
    values.update({
        "cameras": str(len(cams)),
        "cycle_rate_hz": f"{w.cycles.rate():.2f}",
        "cycle_time_p50_ms": f"{w.cycle_ms.percentile(50):.1f}",
        "cycle_time_p95_ms": f"{w.cycle_ms.percentile(95):.1f}",
        "batch_size_p50": f"{w.batch.percentile(50):.1f}",
        "batch_size_last": str(w.last_batch),
        "grid_frame": grid_frame,
        "model": info.model,
        "weights": info.weights,
        "device": info.device,
        "precision": info.precision,
        "precision_reason": info.precision_reason,
        "backend": info.backend,
        "cpu_threads": str(torch.get_num_threads()),
    })
    if multi:
        values["fused_grids_published"] = str(w.fused_published)
        values["fusion_left_out"] = str(sum(c.left_out for c in cams))
    for stage, pct in w.stage_ms.items():
        values[f"{stage}_p50_ms"] = f"{pct.percentile(50):.1f}"
    now = time.monotonic()
    grid_problems = [(c.name, p) for c in cams if (p := c.grid_problem(now)) is not None]
    if grid_problems:
        values["grid_problem"] = "; ".join(
            f"{n}: {p}" if multi else p for n, p in grid_problems)
    values.update(extra or {})
    problems = []
    silent = [c.name for c in cams if c.rx.total == 0]
    if not info.trained:
        problems.append("model has random weights")
    if len(silent) == len(cams):
        problems.append("no images received yet")
    elif silent:
        problems.append(f"no images yet from {', '.join(silent)}")
    if grid_problems:
        problems.append(values["grid_problem"] if not multi else
                        f"no drivable/grid lately from {', '.join(n for n, _ in grid_problems)}")
    level, message = DiagnosticStatus.OK, "ok"
    if problems:
        level, message = DiagnosticStatus.WARN, "; ".join(problems)
    return DiagnosticStatus(
        level=level,
        name=f"{name}: segmentation",
        message=message,
        hardware_id=info.device,
        values=[KeyValue(key=k, value=v) for k, v in values.items()],
    )


def camera_values(cam: CameraChannel) -> dict[str, str]:
    """One camera's figures: rates, latency, frames received, processed, dropped, ..."""
    return {
        "image_topic": cam.image_topic,
        "input_rate_hz": f"{cam.rx.rate():.2f}",
        "processed_rate_hz": f"{cam.done.rate():.2f}",
        "latency_p50_ms": f"{cam.latency.percentile(50):.1f}",
        "latency_p95_ms": f"{cam.latency.percentile(95):.1f}",
        "frames_received": str(cam.rx.total),
        "frames_processed": str(cam.done.total),
        "frames_dropped": str(cam.dropped),
        "frames_lost_in_transport": str(cam.lost),
        "frames_bad": str(cam.bad),
        "frames_without_subscribers": str(cam.idle),
        "frames_without_grid": str(cam.no_grid),
        "fusion_left_out": str(cam.left_out),
        "camera_infos_received": str(cam.infos.count),
        "camera_pose": cam.pose_source or "not yet known",
        "camera_info_problem": cam.info_problem or "",
    }


def camera_statuses(name: str, worker: WorkerStats, cameras: Sequence[CameraChannel],
                    info: EngineInfo) -> list[DiagnosticStatus]:
    """One status per camera of a multi-camera node (rates, drops, latency); none for the
    single unprefixed camera, whose figures are the node's."""
    if worker.fused is None:
        return []
    out = []
    for cam in cameras:
        level, message = DiagnosticStatus.OK, "ok"
        grid_problem = cam.grid_problem()
        if cam.rx.total == 0:
            level, message = DiagnosticStatus.WARN, "no images received yet"
        elif cam.rx.rate() == 0.0 and cam.done.rate() == 0.0:
            level, message = DiagnosticStatus.WARN, "silent: no images in the last seconds"
        elif grid_problem is not None:
            level, message = DiagnosticStatus.WARN, grid_problem
        out.append(DiagnosticStatus(
            level=level, name=f"{name}: camera {cam.name}", message=message,
            hardware_id=info.device,
            values=[KeyValue(key=k, value=v) for k, v in camera_values(cam).items()]))
    return out




def load_engine(params: ParameterBridge) -> tuple[Any, EngineInfo]:
    """The engine the parameters ask for; StartupError (one line) when it cannot be built."""
    try:
        built = build_engine(params["model"], params["checkpoint"] or None, params["device"],
                             params["precision"], threads=params["cpu_threads"])
    except KeyError as exc:  # unknown model: the message lists the registered ones
        raise StartupError(exc.args[0] if exc.args else str(exc)) from None
    except (EngineConfigError, ValueError, FileNotFoundError, OSError) as exc:
        raise StartupError(str(exc)) from None
    ensure_signal_stack()  # OpenVINO's is too small for Ctrl-C twice on AMX: see runtime.signals
    return built


def run_node(name: str, make: Callable[[], Any], spin: Callable[[Any], None],
             close: Callable[[Any], None], args: list[str] | None = None) -> int:
    """The executables' main (``seg_node``, ``seg_lifecycle_node``): a start-up error is one
    fatal line and exit 1, never a traceback; Ctrl-C and an external shutdown are a clean
    exit; ``close`` and ``destroy_node`` run whatever happened."""
    note_sigint()
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = make()
        spin(node)
    except (StartupError, ParameterException) as exc:
        rclpy.logging.get_logger(name).fatal(f"cannot start: {exc}")
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok() and not SIGINT_SEEN.is_set():
            raise
        # Shutting down (SIGINT): rclpy can raise from a message take that races the
        # context's shutdown under load, or the KeyboardInterrupt itself can come out of a
        # pybind11 call as a RuntimeError; that is a clean exit, not an error.
    finally:
        if node is not None:
            close(node)
            node.destroy_node()
        rclpy.try_shutdown()
    return code


__all__ = [
    "WorkerStats",
    "camera_statuses",
    "camera_values",
    "load_engine",
    "log_engine",
    "log_limited",
    "log_pose_source",
    "log_ready",
    "run_node",
    "segmentation_status",
    "warm_up",
]
