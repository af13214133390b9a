"""The demo's data and pictures: a synthetic drive as a rosbag, and the side-by-side report.

ROS-free: bags are written with rosbags (see :mod:`bagio`), pictures with OpenCV/Pillow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .bagio import BagWriter, camera_info_msg, image_msg, make_header, tf_msg, tf_static_qos
from .geometry import (
    BODY_FROM_OPTICAL,
    CameraModel,
    CameraMounting,
    GridSpec,
    Transform,
    drive_sequence,
    render_scene,
)

log = logging.getLogger(__name__)

DEMO_IMAGE_TOPIC = "/camera/image_raw"
DEMO_INFO_TOPIC = "/camera/camera_info"
DEMO_FRAME_ID = "camera_optical_frame"
DEMO_BODY_FRAME = "camera_link"
DEMO_BASE_FRAME = "base_footprint"
START_NS = 1_700_000_000 * 1_000_000_000  # bag time of the first synthetic frame


@dataclass(frozen=True)
class SyntheticDrive:
    """What was written: where, which topics, and the camera that took the frames."""

    bag: Path
    image_topic: str
    camera_info_topic: str
    camera: CameraModel
    mounting: CameraMounting
    frames: int
    fps: float


def write_synthetic_drive(
    bag: str | Path,
    frames: int = 100,
    fps: float = 10.0,
    width: int = 640,
    height: int = 360,
    hfov_deg: float = 70.0,
    mounting: CameraMounting | None = None,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> SyntheticDrive:
    """Render a drive along a winding road (cars, lane markings, pavements) into a bag.

    Each frame is a raw ``rgb8`` image plus its ``camera_info``, stamped and logged at bag
    time ``START_NS + i / fps``. The camera's pose is on ``/tf_static`` as a robot publishes
    it: ``base_footprint -> camera_link`` (the mounting) ``-> camera_optical_frame``
    (REP 103's fixed rotation), the images' frame_id.
    """
    camera = CameraModel.from_fov(width, height, hfov_deg)
    mounting = mounting or CameraMounting(x=1.0, y=0.0, z=1.5, pitch=0.06)
    rng = np.random.default_rng(seed)
    with BagWriter(bag) as writer:
        writer.write("/tf_static", camera_tf(mounting), START_NS, qos=tf_static_qos())
        for i, spec in enumerate(drive_sequence(frames, fps=fps, rng=rng)):
            t = START_NS + round(i * 1e9 / fps)
            header = make_header(t // 1_000_000_000, t % 1_000_000_000, DEMO_FRAME_ID)
            scene = render_scene(spec, camera, mounting, rng=np.random.default_rng(seed + i))
            writer.write(DEMO_IMAGE_TOPIC, image_msg(scene.rgb, "rgb8", header), t)
            writer.write(DEMO_INFO_TOPIC, camera_info_msg(camera, header), t)
            if progress:
                progress(i + 1)
    return SyntheticDrive(Path(bag), DEMO_IMAGE_TOPIC, DEMO_INFO_TOPIC, camera, mounting,
                          frames, fps)


def camera_tf(mounting: CameraMounting) -> object:
    """tf2_msgs/TFMessage: base_footprint -> camera_link -> camera_optical_frame."""
    body = Transform.from_matrix(mounting.rotation_body, mounting.position)
    optical = Transform.from_matrix(BODY_FROM_OPTICAL, (0.0, 0.0, 0.0))
    return tf_msg([(DEMO_BASE_FRAME, DEMO_BODY_FRAME, body),
                   (DEMO_BODY_FRAME, DEMO_FRAME_ID, optical)])


# Colours of the bird's-eye picture: unseen, drivable, not drivable.
GRID_COLOURS = {-1: (45, 45, 50), 0: (80, 190, 90), 100: (190, 60, 60)}


def grid_picture(grid: np.ndarray, spec: GridSpec, boundary: np.ndarray | None = None,
                 height: int = 360) -> np.ndarray:
    """Bird's-eye RGB picture of an OccupancyGrid-layout array: forward up, left on the left.

    The boundary polygon (x, y in the grid frame) is drawn in yellow and the origin of the
    grid frame (the vehicle) as a white triangle.
    """
    lut = np.zeros((256, 3), np.uint8)
    for value, colour in GRID_COLOURS.items():
        lut[value & 0xFF] = colour
    # Row r of the picture is x = x_max - r*res; column c is y = y_max - c*res.
    view = grid[::-1, ::-1].T.astype(np.uint8)
    img = lut[view]
    scale = height / img.shape[0]
    img = cv2.resize(img, (max(1, round(img.shape[1] * scale)), height),
                     interpolation=cv2.INTER_NEAREST)

    def to_px(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        col = (spec.y_max - y) / spec.resolution * scale
        row = (spec.x_max - x) / spec.resolution * scale
        return np.stack([col, row], axis=-1)

    if boundary is not None and len(boundary) >= 3:
        pts = to_px(boundary[:, 0], boundary[:, 1]).round().astype(np.int32)
        cv2.polylines(img, [pts], isClosed=True, color=(255, 220, 0), thickness=2)
    ego = to_px(np.array([0.0, -1.5, -1.5]), np.array([0.0, 0.8, -0.8])).round()
    cv2.fillPoly(img, [ego.astype(np.int32)], (255, 255, 255))
    return img


def side_by_side(images: Sequence[np.ndarray], height: int = 360,
                 labels: Sequence[str] = ()) -> np.ndarray:
    """Scale RGB images to one height and join them left to right, with optional captions."""
    row = []
    for i, img in enumerate(images):
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
        scale = height / img.shape[0]
        img = cv2.resize(img, (max(1, round(img.shape[1] * scale)), height),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        if i < len(labels):
            cv2.putText(img, labels[i], (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3,
                        cv2.LINE_AA)
            cv2.putText(img, labels[i], (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                        (255, 255, 255), 1, cv2.LINE_AA)
        row.append(img)
    out = np.hstack(row)
    return out[:, : out.shape[1] - out.shape[1] % 2]  # even width for video codecs


def write_animation(frames: Sequence[np.ndarray], path_stem: str | Path, fps: float) -> Path:
    """An MP4 (OpenCV's mp4v) of RGB frames; an animated PNG where no MP4 writer works."""
    if not frames:
        raise ValueError("no frames to write")
    stem = Path(path_stem)
    h, w = frames[0].shape[:2]
    mp4 = stem.with_suffix(".mp4")
    writer = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if writer.isOpened():
        for frame in frames:
            writer.write(cv2.cvtColor(np.ascontiguousarray(frame[:h, :w]), cv2.COLOR_RGB2BGR))
        writer.release()
        if mp4.is_file() and mp4.stat().st_size > 0:
            return mp4
    log.warning("OpenCV has no MP4 writer here; writing an animated PNG instead")
    from PIL import Image

    apng = stem.with_suffix(".png")
    pics = [Image.fromarray(f[:h, :w]) for f in frames]
    pics[0].save(apng, save_all=True, append_images=pics[1:], duration=int(1000 / fps), loop=0)
    return apng
