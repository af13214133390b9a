"""The messages this project builds, built once for both type systems (rclpy and rosbags).

``seg_node`` publishes rclpy messages; ``process`` writes rosbags type-store messages; the
demo, the soak and the tests build their inputs (Image, CompressedImage, CameraInfo,
TFMessage) in one or the other. All of them go through the builders here with a
:class:`MessageKit`, the type system's message classes by type name and its form of a
primitive array field, so a layout (an image's step and byte order, P = [K | 0], the grid's
origin, z = 0 of the boundary) cannot drift apart between the paths. Nothing here imports
rclpy or rosbags: ``ros.conversions.KIT`` hands in rclpy's classes, ``offline.topics.kit()``
rosbags' dataclasses.
"""

from __future__ import annotations

import array
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from seg_perception.runtime.geometry import GridSpec
from seg_perception.runtime.image_codec import encode_compressed

if TYPE_CHECKING:
    from seg_perception.runtime.geometry import CameraModel, Transform

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
OCCUPANCY_GRID = "nav_msgs/msg/OccupancyGrid"
POLYGON_STAMPED = "geometry_msgs/msg/PolygonStamped"

#: (channels, dtype) of each encoding :func:`image_message` writes an array as.
IMAGE_SHAPES: dict[str, tuple[int, np.dtype]] = {
    "mono8": (1, np.dtype(np.uint8)),
    "mono16": (1, np.dtype(np.uint16)),
    "rgb8": (3, np.dtype(np.uint8)),
    "bgr8": (3, np.dtype(np.uint8)),
    "rgba8": (4, np.dtype(np.uint8)),
    "bgra8": (4, np.dtype(np.uint8)),
}


class MessageKit:
    """How to build messages in one type system.

    ``types`` gives the message class of a type name such as ``nav_msgs/msg/OccupancyGrid``
    (a mapping, as rosbags' ``typestore.types``, or a function, as rclpy's classes are
    imported on demand); ``array(values)`` turns a 1-D contiguous numpy array into what the
    type system stores in a primitive array field of that element type (``uint8[]``,
    ``int8[]``, ``float64[]``): the array itself for rosbags, an ``array.array`` for rclpy.
    Fixed-size arrays (CameraInfo's K, R, P) are handed over as float64 numpy arrays, which
    both take.
    """

    def __init__(self, types: Mapping[str, type] | Callable[[str], type],
                 array: Callable[[np.ndarray], Any]) -> None:
        self.types: Callable[[str], type] = (
            types.__getitem__ if isinstance(types, Mapping) else types)
        self.array = array

    def new(self, name: str, **fields: Any) -> Any:
        """A message of type ``name`` with ``fields``.

        rclpy's constructors (Iron and later: classes with a ``_check_fields`` slot) copy an
        array field once more; their setters, with field checks on, keep the
        ``array.array`` they are given. A message with such a field is therefore made empty
        and its fields set one by one; any other with its constructor (cheaper for the many
        points of a polygon).
        """
        cls = self.types(name)
        if "_check_fields" not in getattr(cls, "__slots__", ()) or not any(
                isinstance(v, array.array) for v in fields.values()):
            return cls(**fields)
        msg = cls(check_fields=True)
        for key, value in fields.items():
            setattr(msg, key, value)
        return msg


def _flat(arr: np.ndarray, dtype: Any = None) -> np.ndarray:
    """``arr`` as a 1-D contiguous array (a view where it already is one)."""
    return np.ascontiguousarray(arr, dtype=dtype).reshape(-1)


def header(kit: MessageKit, sec: int, nanosec: int, frame_id: str) -> Any:
    """std_msgs/Header with ``stamp`` (sec, nanosec) and ``frame_id``."""
    stamp = kit.new("builtin_interfaces/msg/Time", sec=int(sec), nanosec=int(nanosec))
    return kit.new("std_msgs/msg/Header", stamp=stamp, frame_id=str(frame_id))


def _or_empty(kit: MessageKit, hdr: Any) -> Any:
    return header(kit, 0, 0, "") if hdr is None else hdr


def image_message(kit: MessageKit, arr: np.ndarray, encoding: str | None = None,
                  hdr: Any = None) -> Any:
    """sensor_msgs/Image holding ``arr``: (H, W) uint8 -> mono8, (H, W, 3) -> rgb8.

    ``encoding`` may also be mono16, bgr8, rgba8 or bgra8 when ``arr`` matches it (else
    ValueError). Rows are unpadded, in native byte order (as cv_bridge writes); the pixels
    are copied at most once. ``hdr`` None gives an empty header.
    """
    arr = np.asarray(arr)
    if encoding is None:
        encoding = "mono8" if arr.ndim == 2 else "rgb8"
    if encoding not in IMAGE_SHAPES:
        raise ValueError(f"cannot publish encoding {encoding!r}; use one of "
                         f"{', '.join(IMAGE_SHAPES)}")
    channels, dtype = IMAGE_SHAPES[encoding]
    shape_ok = arr.ndim == 2 if channels == 1 else arr.ndim == 3 and arr.shape[2] == channels
    if not shape_ok or arr.dtype != dtype or arr.shape[0] == 0 or arr.shape[1] == 0:
        want = "(H, W)" if channels == 1 else f"(H, W, {channels})"
        raise ValueError(f"{encoding} needs a non-empty {dtype} {want} array, got {arr.dtype} "
                         f"{arr.shape}")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return kit.new(
        IMAGE, header=_or_empty(kit, hdr),
        height=int(arr.shape[0]), width=int(arr.shape[1]), encoding=encoding,
        is_bigendian=int(sys.byteorder == "big"),
        step=int(arr.shape[1] * channels * dtype.itemsize),
        data=kit.array(_flat(arr).view(np.uint8)))


def raw_image_message(kit: MessageKit, data: bytes | np.ndarray, encoding: str, width: int,
                      height: int, step: int, hdr: Any = None) -> Any:
    """sensor_msgs/Image from an already encoded payload (any encoding, row padding kept);
    ``hdr`` None gives an empty header."""
    buf = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray)) else data
    return kit.new(IMAGE, header=_or_empty(kit, hdr), height=int(height), width=int(width),
                   encoding=encoding, is_bigendian=0, step=int(step),
                   data=kit.array(_flat(buf, np.uint8)))


def compressed_message(kit: MessageKit, rgb: np.ndarray, hdr: Any = None, fmt: str = "jpeg",
                       quality: int = 90) -> Any:
    """sensor_msgs/CompressedImage (JPEG or PNG) of an RGB (H, W, 3) or grey (H, W) uint8
    frame, as image_transport's compressed plugin publishes it (``format`` reads e.g.
    ``"rgb8; jpeg compressed bgr8"``). ``hdr`` None gives an empty header."""
    data, fmt_str = encode_compressed(rgb, fmt, quality)
    return kit.new(COMPRESSED_IMAGE, header=_or_empty(kit, hdr),
                   format=fmt_str, data=kit.array(np.frombuffer(data, np.uint8)))


def camera_info_message(kit: MessageKit, model: CameraModel, hdr: Any,
                        binning: tuple[int, int] = (0, 0),
                        roi: tuple[int, int, int, int] = (0, 0, 0, 0),
                        p: np.ndarray | None = None, r: np.ndarray | None = None) -> Any:
    """sensor_msgs/CameraInfo for a camera model (R identity and P = [K | 0] unless given)."""
    k = np.asarray(model.K, np.float64)
    if p is None:
        p = np.zeros(12)
        p[[0, 1, 2, 4, 5, 6, 10]] = k[[0, 1, 2, 3, 4, 5, 8]]
    return kit.new(
        CAMERA_INFO, header=hdr, height=int(model.height), width=int(model.width),
        distortion_model=str(model.distortion_model),
        d=kit.array(_flat(np.asarray(model.D, np.float64))), k=k,
        r=np.eye(3).reshape(-1) if r is None else _flat(r, np.float64),
        p=_flat(p, np.float64), binning_x=int(binning[0]), binning_y=int(binning[1]),
        roi=kit.new("sensor_msgs/msg/RegionOfInterest", x_offset=int(roi[0]),
                    y_offset=int(roi[1]), width=int(roi[2]), height=int(roi[3]),
                    do_rectify=False))


def tf_message(kit: MessageKit, transforms: Sequence[tuple[str, str, Transform]], sec: int = 0,
               nanosec: int = 0) -> Any:
    """tf2_msgs/TFMessage of (parent, child, transform) entries, all stamped (sec, nanosec)."""
    out = []
    for parent, child, tr in transforms:
        x, y, z = (float(v) for v in tr.translation)
        qx, qy, qz, qw = (float(v) for v in tr.quaternion)
        out.append(kit.new(
            "geometry_msgs/msg/TransformStamped", header=header(kit, sec, nanosec, parent),
            child_frame_id=str(child), transform=kit.new(
                "geometry_msgs/msg/Transform",
                translation=kit.new("geometry_msgs/msg/Vector3", x=x, y=y, z=z),
                rotation=kit.new("geometry_msgs/msg/Quaternion", x=qx, y=qy, z=qz, w=qw))))
    return kit.new(TF_MESSAGE, transforms=out)


def grid_message(kit: MessageKit, grid: np.ndarray, spec: GridSpec, hdr: Any) -> Any:
    """nav_msgs/OccupancyGrid of an int8 (height, width) grid laid out as ``spec`` says:
    origin at (x_min, y_min), identity orientation, row-major from y_min."""
    if grid.shape != spec.shape:
        raise ValueError(f"grid shape {grid.shape} does not match {spec.shape} of its spec")
    pose = kit.new(
        "geometry_msgs/msg/Pose",
        position=kit.new("geometry_msgs/msg/Point", x=float(spec.x_min), y=float(spec.y_min),
                         z=0.0),
        orientation=kit.new("geometry_msgs/msg/Quaternion", x=0.0, y=0.0, z=0.0, w=1.0))
    info = kit.new("nav_msgs/msg/MapMetaData", map_load_time=hdr.stamp,
                   resolution=float(spec.resolution), width=int(spec.width),
                   height=int(spec.height), origin=pose)
    return kit.new(OCCUPANCY_GRID, header=hdr, info=info,
                   data=kit.array(_flat(grid, np.int8)))


def polygon_message(kit: MessageKit, points: np.ndarray, hdr: Any) -> Any:
    """geometry_msgs/PolygonStamped from (N, 2) x, y points on the ground (z = 0)."""
    pts = [kit.new("geometry_msgs/msg/Point32", x=float(x), y=float(y), z=0.0)
           for x, y in np.asarray(points, dtype=np.float64).reshape(-1, 2)]
    return kit.new(POLYGON_STAMPED, header=hdr,
                   polygon=kit.new("geometry_msgs/msg/Polygon", points=pts))


def grid_from_message(msg: Any) -> tuple[np.ndarray, GridSpec]:
    """The int8 grid and its spec back from an OccupancyGrid built by :func:`grid_message`."""
    info = msg.info
    spec = GridSpec(float(info.resolution), float(info.origin.position.x),
                    float(info.origin.position.x) + info.width * float(info.resolution),
                    float(info.origin.position.y),
                    float(info.origin.position.y) + info.height * float(info.resolution))
    data = np.asarray(msg.data, dtype=np.int8).reshape(info.height, info.width)
    return data, spec


def polygon_from_message(msg: Any) -> np.ndarray:
    """(N, 2) x, y of a PolygonStamped."""
    return np.array([(p.x, p.y) for p in msg.polygon.points], dtype=np.float64).reshape(-1, 2)


__all__ = [
    "CAMERA_INFO",
    "COMPRESSED_IMAGE",
    "IMAGE",
    "IMAGE_SHAPES",
    "OCCUPANCY_GRID",
    "POLYGON_STAMPED",
    "TF_MESSAGE",
    "MessageKit",
    "camera_info_message",
    "compressed_message",
    "grid_from_message",
    "grid_message",
    "header",
    "image_message",
    "polygon_from_message",
    "polygon_message",
    "raw_image_message",
    "tf_message",
]
