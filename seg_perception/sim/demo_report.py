"""The demo's data and pictures: a synthetic drive as a rosbag, and the side-by-side report.

ROS-free: bags are written with rosbags (:mod:`seg_perception.offline.writer`), pictures with
OpenCV/Pillow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from seg_perception.offline.topics import (
    camera_info_msg,
    image_msg,
    make_header,
    tf_msg,
    tf_static_qos,
)
from seg_perception.offline.writer import BagWriter
from seg_perception.runtime.geometry import (
    BODY_FROM_OPTICAL,
    CameraModel,
    CameraMounting,
    GridSpec,
    Transform,
)
from seg_perception.sim.map_eval import pose_transform
from seg_perception.sim.rig import BASE_FRAME, SURROUND_GRID, Rig, render_rig, surround_rig
from seg_perception.sim.scene import drive_sequence, render_scene

log = logging.getLogger(__name__)

DEMO_IMAGE_TOPIC = "/camera/image_raw"
DEMO_INFO_TOPIC = "/camera/camera_info"
DEMO_FRAME_ID = "camera_optical_frame"
DEMO_BODY_FRAME = "camera_link"
DEMO_BASE_FRAME = "base_footprint"
START_NS = 1_700_000_000 * 1_000_000_000  # bag time of the first synthetic frame
#: The odometry frame of the synthetic drives (REP 105), the persistent map's default frame.
ODOM_FRAME = "odom"


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


@dataclass(frozen=True)
class SurroundDrive:
    """A drive seen by a camera rig: the bag, the rig, each camera's topics, the grid the
    exact fused truth is on, and where that truth is (``truth``: an .npz with ``stamps``
    (N,) ns, ``fused`` (N, H, W) int8 and ``cameras``/``per_camera`` (N, C, H, W) int8)."""

    bag: Path
    rig: Rig
    image_topics: dict[str, str]
    info_topics: dict[str, str]
    grid: GridSpec
    frames: int
    fps: float
    truth: Path | None = None


def write_surround_drive(
    bag: str | Path,
    frames: int = 100,
    fps: float = 10.0,
    width: int = 480,
    height: int = 360,
    rig: Rig | None = None,
    grid: GridSpec = SURROUND_GRID,
    seed: int = 0,
    truth: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> SurroundDrive:
    """Render a drive (:func:`drive_sequence`) from every camera of ``rig`` (default: the
    four-camera :func:`~.geometry.rig.surround_rig` at ``width`` x ``height``) into a bag.

    Per frame and camera: ``/X/image_raw`` (rgb8) and ``/X/camera_info``, all cameras with
    the same stamp (a hardware-triggered rig), ``frame_id`` the camera's optical frame; the
    rig on ``/tf_static`` (``base_footprint -> X_camera_link -> X_camera_optical_frame``);
    per frame the vehicle's exact odometry on ``/tf`` (``odom -> base_footprint``, odom
    being the road frame moved to the start pose, REP 105), for the persistent map.
    With ``truth`` the generator's exact per-camera and fused grids on ``grid`` go to that
    .npz, to score a fused grid against.
    """
    rig = rig or surround_rig(width, height)
    image_topics = {c.name: f"/{c.name}/image_raw" for c in rig.cameras}
    info_topics = {c.name: f"/{c.name}/camera_info" for c in rig.cameras}
    stamps, fused, per_cam = [], [], []
    rng = np.random.default_rng(seed)
    odom_from_road: Transform | None = None
    with BagWriter(bag) as writer:
        writer.write("/tf_static", tf_msg(rig.transforms(BASE_FRAME)), START_NS,
                     qos=tf_static_qos())
        for i, spec in enumerate(drive_sequence(frames, fps=fps, rng=rng)):
            t = START_NS + round(i * 1e9 / fps)
            if odom_from_road is None:
                odom_from_road = pose_transform(*spec.ego).inverse()
            odom = odom_from_road @ pose_transform(*spec.ego)
            writer.write("/tf", tf_msg([(ODOM_FRAME, BASE_FRAME, odom)], t // 1_000_000_000,
                                       t % 1_000_000_000), t)
            render = render_rig(spec, rig, grid, np.random.default_rng(seed + i))
            for cam in rig.cameras:
                header = make_header(t // 1_000_000_000, t % 1_000_000_000, cam.optical_frame)
                writer.write(image_topics[cam.name],
                             image_msg(render.views[cam.name].rgb, "rgb8", header), t)
                writer.write(info_topics[cam.name], camera_info_msg(cam.model, header), t)
            if truth is not None:
                stamps.append(t)
                fused.append(render.fused)
                per_cam.append(np.stack([render.views[c.name].grid for c in rig.cameras]))
            if progress:
                progress(i + 1)
    if truth is not None:
        truth = Path(truth)
        np.savez_compressed(truth, stamps=np.asarray(stamps, np.int64),
                            fused=np.asarray(fused, np.int8),
                            per_camera=np.asarray(per_cam, np.int8),
                            cameras=np.asarray(rig.names), grid=np.asarray(
                                [grid.resolution, grid.x_min, grid.x_max, grid.y_min,
                                 grid.y_max]))
    return SurroundDrive(Path(bag), rig, image_topics, info_topics, grid, frames, fps,
                         Path(truth) if truth is not None else None)


def agreement(grid: np.ndarray, truth: np.ndarray) -> tuple[float, int]:
    """Fraction of the cells ``truth`` sees (not -1) where ``grid`` says the same, and how
    many cells that is (a cell ``grid`` leaves unknown counts as a disagreement)."""
    seen = truth >= 0
    n = int(seen.sum())
    return (float((grid[seen] == truth[seen]).mean()) if n else float("nan")), n


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


def mosaic(images: Sequence[np.ndarray], labels: Sequence[str], tile_height: int = 240,
           columns: int = 2) -> np.ndarray:
    """Images in a grid of ``columns`` (each scaled to ``tile_height``, captioned); a missing
    one (None) is a dark tile of the first one's size."""
    first = next(img for img in images if img is not None)
    tiles = [side_by_side([img if img is not None else np.full_like(first, 30)],
                          tile_height, [label]) for img, label in zip(images, labels,
                                                                     strict=True)]
    width = max(t.shape[1] for t in tiles)
    tiles = [np.pad(t, ((0, 0), (0, width - t.shape[1]), (0, 0))) for t in tiles]
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i:i + columns]) for i in range(0, len(tiles), columns)]
    return np.vstack(rows)
