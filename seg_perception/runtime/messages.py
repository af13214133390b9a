"""The grid and polygon messages, built once for both type systems (rclpy and rosbags).

``seg_node`` publishes rclpy messages and ``process`` writes rosbags type-store messages; both
build ``nav_msgs/OccupancyGrid``, ``geometry_msgs/PolygonStamped`` and headers through the
functions here, with a :class:`MessageKit` that knows how to make a message of a type name
and how to hand over array data. The layout (origin, orientation, map_load_time, z = 0)
therefore cannot drift apart between the two paths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from seg_perception.runtime.geometry import GridSpec

OCCUPANCY_GRID = "nav_msgs/msg/OccupancyGrid"
POLYGON_STAMPED = "geometry_msgs/msg/PolygonStamped"


class MessageKit:
    """How to build messages in one type system.

    ``new(type_name, **fields)`` makes a message (``type_name`` like
    ``nav_msgs/msg/OccupancyGrid``); ``int8(array)`` turns an int8 array into what that type
    system stores in an ``int8[]`` field.
    """

    def __init__(self, new: Callable[..., Any], int8: Callable[[np.ndarray], Any]) -> None:
        self.new = new
        self.int8 = int8


def header(kit: MessageKit, sec: int, nanosec: int, frame_id: str) -> Any:
    """std_msgs/Header with ``stamp`` (sec, nanosec) and ``frame_id``."""
    stamp = kit.new("builtin_interfaces/msg/Time", sec=int(sec), nanosec=int(nanosec))
    return kit.new("std_msgs/msg/Header", stamp=stamp, frame_id=str(frame_id))


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
                   resolution=float(spec.resolution), width=spec.width, height=spec.height,
                   origin=pose)
    data = kit.int8(np.ascontiguousarray(grid, dtype=np.int8).reshape(-1))
    return kit.new(OCCUPANCY_GRID, header=hdr, info=info, data=data)


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
    "MessageKit",
    "grid_from_message",
    "grid_message",
    "header",
    "polygon_from_message",
    "polygon_message",
]
