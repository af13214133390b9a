"""What offline bags are made of: types, the names of output topics, the QoS written.

The rest of ``offline`` (reading, writing, ``process``) and whoever builds a bag (the demo,
the tests) share these: rosbags' ROS 2 type store (pure Python, so nothing here needs a ROS
install or imports rclpy), the message kit of its types (messages are built by
:mod:`seg_perception.runtime.messages`, as the node builds its rclpy ones), the type names,
where a camera's outputs go, and the QoS recorded with them.

Output topics. Each camera's outputs go to the namespace of its image topic: the topic's
parent after dropping an image_transport ``/compressed`` suffix. ``/cam_front/image_raw``
and ``/cam_front/image_raw/compressed`` both give ``/cam_front``, whose outputs are
``/cam_front/labels``, ``/cam_front/overlay``, ... (the names of CONTRACT.md); a top-level
``/image`` gives ``/labels``, ``/overlay``, ... exactly as a node without namespace would.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from seg_perception.runtime import messages
from seg_perception.runtime.config import DEFAULTS
from seg_perception.runtime.messages import MessageKit
from seg_perception.runtime.pipeline import GRID_OUTPUTS as _GRID
from seg_perception.runtime.pipeline import IMAGE_ENCODINGS

if TYPE_CHECKING:
    from rosbags.interfaces import Qos

    from seg_perception.runtime.geometry import CameraModel, Transform

RAW = messages.IMAGE
COMPRESSED = messages.COMPRESSED_IMAGE
CAMERA_INFO = messages.CAMERA_INFO
OCCUPANCY_GRID = messages.OCCUPANCY_GRID
POLYGON_STAMPED = messages.POLYGON_STAMPED
TF_MESSAGE = messages.TF_MESSAGE
TF_TOPICS = {"/tf": False, "/tf_static": True}  # topic -> static
IMAGE_TYPES = {RAW: "raw", COMPRESSED: "compressed"}

#: Image outputs (relative names from CONTRACT.md) and their encodings.
IMAGE_OUTPUTS: dict[str, str] = dict(IMAGE_ENCODINGS)
#: Bird's-eye outputs, written when the camera's intrinsics and pose are known.
GRID_OUTPUTS: dict[str, str] = dict(zip(_GRID, (OCCUPANCY_GRID, POLYGON_STAMPED), strict=True))
OUTPUT_TYPES: dict[str, str] = {**dict.fromkeys(IMAGE_OUTPUTS, RAW), **GRID_OUTPUTS}


class BagError(RuntimeError):
    """A bag cannot be read or written; the message says which bag and why."""


@functools.cache
def typestore() -> Any:
    """The ROS 2 type store used for every (de)serialisation (Jazzy: current LTS).

    Jazzy's store holds sensor_msgs, nav_msgs, geometry_msgs, diagnostic_msgs and
    rosgraph_msgs; their CDR layouts are the same in every ROS 2 distro, so bags from older
    distros deserialise with it too.
    """
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


@functools.cache
def kit() -> MessageKit:
    """The message kit of the type store: rosbags' dataclasses, arrays kept as numpy."""
    return MessageKit(typestore().types, lambda values: values)


# --- messages (the type store's, built by runtime.messages) ----------------------------------

def make_header(sec: int, nanosec: int, frame_id: str) -> Any:
    """A std_msgs/Header for the type store."""
    return messages.header(kit(), sec, nanosec, frame_id)


def image_msg(arr: np.ndarray, encoding: str, header: Any) -> Any:
    """sensor_msgs/Image holding ``arr`` (see :func:`~seg_perception.runtime.messages.
    image_message`: mono8, mono16, rgb8, bgr8, rgba8, bgra8; no row padding)."""
    return messages.image_message(kit(), arr, encoding, header)


def raw_image_msg(data: bytes | np.ndarray, encoding: str, width: int, height: int, step: int,
                  header: Any) -> Any:
    """sensor_msgs/Image from an already encoded payload (any encoding, padding kept)."""
    return messages.raw_image_message(kit(), data, encoding, width, height, step, header)


def compressed_msg(rgb: np.ndarray, header: Any, fmt: str = "jpeg", quality: int = 90) -> Any:
    """sensor_msgs/CompressedImage (JPEG/PNG) as image_transport's compressed plugin writes."""
    return messages.compressed_message(kit(), rgb, header, fmt, quality)


def camera_info_msg(model: CameraModel, header: Any, binning: tuple[int, int] = (0, 0),
                    roi: tuple[int, int, int, int] = (0, 0, 0, 0),
                    p: np.ndarray | None = None, r: np.ndarray | None = None) -> Any:
    """sensor_msgs/CameraInfo for a camera model (R identity and P = [K | 0] unless given)."""
    return messages.camera_info_message(kit(), model, header, binning, roi, p, r)


def tf_msg(transforms: Sequence[tuple[str, str, Transform]], sec: int = 0,
           nanosec: int = 0) -> Any:
    """tf2_msgs/TFMessage of (parent, child, transform) entries, all stamped (sec, nanosec)."""
    return messages.tf_message(kit(), transforms, sec, nanosec)


# --- topic naming ----------------------------------------------------------------------------

def camera_namespace(image_topic: str) -> str:
    """The namespace a camera's outputs go to: the image topic's parent.

    A trailing image_transport ``compressed`` segment is dropped first, so the raw and the
    compressed topic of one camera share a namespace. Returns ``""`` for a top-level topic.
    """
    parts = [p for p in image_topic.split("/") if p]
    if len(parts) > 1 and parts[-1] == "compressed":
        parts = parts[:-1]
    return "/" + "/".join(parts[:-1]) if len(parts) > 1 else ""


def output_topic(namespace: str, name: str) -> str:
    """Absolute output topic ``name`` (e.g. ``drivable/grid``) under ``namespace``."""
    return f"{namespace.rstrip('/')}/{name}"


def map_topic(namespace: str) -> str:
    """The persistent map's topic for the camera (or rig: ``""``) in ``namespace``."""
    return output_topic(namespace, "drivable/map")


#: Topics of the fused surround grid of named ``cameras`` (the node's own, unprefixed).
FUSED_OUTPUTS: dict[str, str] = {output_topic("", name): t for name, t in GRID_OUTPUTS.items()}


# --- QoS recorded ----------------------------------------------------------------------------

def output_qos(reliability: str = DEFAULTS["output_qos.reliability"],
               depth: int = DEFAULTS["output_qos.depth"]) -> list[Qos]:
    """The QoS the node offers for its outputs (its output_qos.* parameters)."""
    from rosbags.interfaces import QosReliability

    rel = QosReliability.BEST_EFFORT if reliability == "best_effort" else QosReliability.RELIABLE
    return _qos(int(depth), rel, transient_local=False)


def tf_static_qos() -> list[Qos]:
    """The QoS of /tf_static (tf2's static broadcaster: reliable, transient local), so a
    player republishes it latched."""
    from rosbags.interfaces import QosReliability

    return _qos(1, QosReliability.RELIABLE, transient_local=True)


def map_qos() -> list[Qos]:
    """The QoS of drivable/map (the node's: reliable, transient local, depth 1)."""
    from rosbags.interfaces import QosReliability

    return _qos(1, QosReliability.RELIABLE, transient_local=True)


def _qos(depth: int, reliability: Any, transient_local: bool) -> list[Qos]:
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosTime

    zero = QosTime(0, 0)
    durability = QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE
    return [Qos(QosHistory.KEEP_LAST, depth, reliability, durability, zero, zero,
                QosLiveliness.AUTOMATIC, zero, False)]


__all__ = [
    "CAMERA_INFO",
    "COMPRESSED",
    "FUSED_OUTPUTS",
    "GRID_OUTPUTS",
    "IMAGE_OUTPUTS",
    "IMAGE_TYPES",
    "OCCUPANCY_GRID",
    "OUTPUT_TYPES",
    "POLYGON_STAMPED",
    "RAW",
    "TF_MESSAGE",
    "TF_TOPICS",
    "BagError",
    "camera_info_msg",
    "camera_namespace",
    "compressed_msg",
    "image_msg",
    "kit",
    "make_header",
    "map_qos",
    "map_topic",
    "output_qos",
    "output_topic",
    "raw_image_msg",
    "tf_msg",
    "tf_static_qos",
    "typestore",
]
