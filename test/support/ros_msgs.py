"""The rclpy messages the integration tests send to a node, built with the node's own message
kit (:mod:`seg_perception.runtime.messages` with ``ros.conversions.KIT``), so a test's input
has the layout the node and ``process`` agree on (P = [K | 0], unpadded rows)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import TransformStamped
from sensor_msgs.msg import CameraInfo, Image

from seg_perception.ros.conversions import KIT
from seg_perception.runtime.geometry import CameraModel, Transform
from seg_perception.runtime.messages import camera_info_message, image_message, tf_message


def image(rgb: np.ndarray, hdr: Any) -> Image:
    """An rgb8 Image of ``rgb`` under ``hdr``."""
    return image_message(KIT, rgb, "rgb8", hdr)


def info(hdr: Any, model: CameraModel) -> CameraInfo:
    """The CameraInfo of ``model`` under ``hdr`` (R identity, P = [K | 0])."""
    return camera_info_message(KIT, model, hdr)


def key(msg: Any) -> tuple[int, int]:
    """A message's header stamp as (sec, nanosec), to match outputs to inputs."""
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def transforms(entries: Sequence[tuple[str, str, Transform]],
               stamp: Time | None = None) -> list[TransformStamped]:
    """TransformStamped for each (parent, child, transform), all stamped ``stamp`` (zero,
    as /tf_static sends them, when None)."""
    sec, nanosec = (0, 0) if stamp is None else (stamp.sec, stamp.nanosec)
    return list(tf_message(KIT, entries, sec, nanosec).transforms)

