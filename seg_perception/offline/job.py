"""What a ``process`` run is given, what it reports, and what it knows before its frames.

:class:`ProcessOptions` are the node's parameters, offline; :class:`ProcessSummary` is what
``process`` and ``process-many`` report and decide their exit status on. Offline the whole
recording is there before the first frame, so every camera_info and the tf tree are read
ahead (:func:`read_ahead`) into each camera's :class:`CameraState` and the run's
:class:`Recording`: a frame can then be paired with a camera_info logged after it, and a
moving transform interpolated between samples on both sides of the frame. The frame loop
itself is :mod:`seg_perception.offline.process`.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from seg_perception.offline.reader import BadFrame, CameraStream, guarded_messages
from seg_perception.offline.topics import CAMERA_INFO, TF_MESSAGE, TF_TOPICS, BagError, typestore
from seg_perception.runtime.config import DEFAULTS, SINGLE_CAMERA, PipelineConfig
from seg_perception.runtime.geometry import CameraCalibration
from seg_perception.runtime.pipeline import CameraInfoBuffer
from seg_perception.runtime.tf import TransformBuffer, stamp_to_ns

if TYPE_CHECKING:
    from rosbags.rosbag2 import Reader

log = logging.getLogger(__name__)


@dataclass
class ProcessOptions:
    """How ``process`` runs the pipeline: the node's parameters, offline.

    ``config`` holds the parameters of every camera; ``configs`` overrides it per camera
    namespace (a params file's ``/<ns>/seg_node`` section). ``grid`` False writes no drivable
    grid and boundary. ``hfov_deg`` gives a pinhole camera model (principal point at the
    centre) to cameras whose bag has no CameraInfo. ``keep_input`` copies every message of
    the input bag too. ``output_reliability``/``output_depth`` are the QoS recorded for the
    outputs (the node's ``output_qos.*``). ``pipeline_depth`` is how many items may wait
    between two threads of the overlapped frame loop (:func:`process_bag`); 0 runs the
    same loop in the calling thread, one stage after the other.

    ``cameras`` (the node's parameter of that name; default: one unnamed camera) names the
    cameras of a rig: camera ``X`` is the bag's image topic in namespace ``.../X`` (see
    :func:`match_cameras`), their frames are processed cycle by cycle (:mod:`.stage`)
    and a fused ``/drivable/grid`` and ``/drivable/boundary`` are written per cycle, as
    ``seg_node`` with the same ``cameras`` publishes them. ``camera_configs`` are the
    cameras' own snapshots (their ``X.<name>`` parameters), used where ``configs`` has no
    section for the camera's namespace.
    """

    config: PipelineConfig = field(default_factory=PipelineConfig.from_params)
    configs: dict[str, PipelineConfig] = field(default_factory=dict)
    cameras: tuple[str, ...] = SINGLE_CAMERA
    camera_configs: dict[str, PipelineConfig] = field(default_factory=dict)
    grid: bool = True
    hfov_deg: float | None = None
    keep_input: bool = False
    output_reliability: str = DEFAULTS["output_qos.reliability"]
    output_depth: int = DEFAULTS["output_qos.depth"]
    max_pixels: int | None = DEFAULTS["max_image_pixels"]
    pipeline_depth: int = 2

    def config_for(self, namespace: str, camera: str = "") -> PipelineConfig:
        """The snapshot of the camera in ``namespace`` (named ``camera`` of ``cameras``)."""
        if namespace in self.configs:
            return self.configs[namespace]
        return self.camera_configs.get(camera, self.config)

    @property
    def fused(self) -> bool:
        """Whether a fused grid is written: named ``cameras`` and grid outputs on."""
        return self.grid and tuple(self.cameras) != SINGLE_CAMERA


@dataclass
class ProcessSummary:
    """What ``process`` did. ``interrupted`` is True after Ctrl-C; ``error`` is set when the
    input turned out to be unreadable part-way, ``write_error`` when the output could not be
    written (a full disk). The output bag is valid in all these cases.
    ``no_grid`` counts per image topic the frames that got image outputs but no grid (the
    reasons are in ``warnings``); ``poses`` says where each camera's pose came from."""

    input: Path
    output: Path
    cameras: list[CameraStream]
    frames: Counter[str] = field(default_factory=Counter)  # frames written or bad, per topic
    processed: int = 0
    written: Counter[str] = field(default_factory=Counter)  # messages per output topic
    bad: list[BadFrame] = field(default_factory=list)
    no_grid: Counter[str] = field(default_factory=Counter)
    poses: dict[str, str] = field(default_factory=dict)
    copied: int = 0
    interrupted: bool = False
    error: str | None = None
    #: writing the output failed (disk full, I/O error, ...): what failed; ``kept`` frames
    #: (None: unknown) are in the bag, closed valid unless ``unfinished``
    write_error: str | None = None
    kept: int | None = None
    unfinished: bool = False
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: named cameras: cycles run, fused grids written, and per camera the cycles whose
    #: fused grid left it out (its latest grid older than fusion.max_age)
    cycles: int = 0
    fused: int = 0
    left_out: Counter[str] = field(default_factory=Counter)
    _warned: set[str] = field(default_factory=set, init=False, repr=False)

    def warn(self, key: str, text: str) -> None:
        """Record (and log) a warning once per ``key``."""
        if key not in self._warned:
            self._warned.add(key)
            self.warnings.append(text)
            log.warning("%s", text)

    @property
    def fps(self) -> float:
        """Frames processed per second of the processing loop."""
        return self.processed / self.seconds if self.seconds > 0 else 0.0


class CameraState:
    """Per-camera state of a processing run: frame counter, its camera_infos by stamp."""

    def __init__(self, stream: CameraStream, options: ProcessOptions, name: str = "") -> None:
        self.stream = stream
        self.name = name  # its name in ``cameras`` ("" for unnamed cameras)
        self.config = options.config_for(stream.namespace, name)
        self.rectified = self.config.rectified(stream.image_topic)
        self.index = 0
        self.infos = CameraInfoBuffer(size=None)  # offline: the whole recording
        self.pose_source: str | None = None


@dataclass
class Recording:
    """What is read ahead of the frames: every camera_info and the tf tree."""

    tf: TransformBuffer
    info_topics: dict[str, list[CameraState]]


def read_ahead(reader: Reader, cams: dict[str, CameraState], summary: ProcessSummary,
               path: Path, want_grid: bool) -> Recording:
    """Camera_infos (paired with frames by stamp later) and /tf_static, /tf of the bag.

    Offline the recording is known in full before the first frame, so a frame can be paired
    with a camera_info logged after it, and a moving transform interpolated between samples
    on both sides of the frame.
    """
    info_topics: dict[str, list[CameraState]] = {}
    for cam in cams.values():
        if cam.stream.camera_info_topic:
            info_topics.setdefault(cam.stream.camera_info_topic, []).append(cam)
    tf = TransformBuffer()
    if not want_grid:
        return Recording(tf, info_topics)
    conns = [c for c in reader.connections
             if (c.topic in info_topics and c.msgtype == CAMERA_INFO)
             or (c.topic in TF_TOPICS and c.msgtype == TF_MESSAGE)]
    if not conns:
        return Recording(tf, info_topics)
    store = typestore()
    try:
        for conn, log_time, raw in guarded_messages(reader.messages(conns), path):
            try:
                msg = store.deserialize_cdr(raw, conn.msgtype)
            except Exception as exc:  # SerdeError and friends: one damaged message
                summary.warn(f"unreadable:{conn.topic}", f"{conn.topic}: message at log "
                             f"time {log_time} cannot be deserialised ({exc}); skipped")
                continue
            if conn.msgtype == TF_MESSAGE:
                tf.add_message(msg, static=TF_TOPICS[conn.topic])
                continue
            try:
                calibration = CameraCalibration.from_msg(msg)
            except ValueError as exc:
                summary.warn(f"camera_info:{conn.topic}",
                             f"{conn.topic}: camera_info ignored: {exc}")
                continue
            for cam in info_topics[conn.topic]:
                cam.infos.add(stamp_to_ns(msg.header.stamp), calibration)
    except BagError as exc:  # damaged or cut off: the frame loop meets it too and says so
        log.debug("camera_info/tf read-ahead stopped: %s", exc)
    return Recording(tf, info_topics)


__all__ = ["CameraState", "ProcessOptions", "ProcessSummary", "Recording", "read_ahead"]
