"""rclpy messages <-> numpy: image messages decoded, and the message kit of rclpy's types.

cv_bridge is used for raw input when it is importable (a ROS install from apt has it), and
:mod:`seg_perception.runtime.image_codec` otherwise (pip/venv installs); both give the same
pixels. Compressed input and every output always go through the core codec: cv_bridge's
compressed decoder labels every file ``bgr8`` (wrong for mono and 16-bit PNG), and its
``cv2_to_imgmsg`` copies the pixels twice where the message kit copies once. Every message
the node publishes is built by :mod:`seg_perception.runtime.messages` with :data:`KIT`,
the kit of rclpy's classes (``process`` builds the same with rosbags' types).
"""

from __future__ import annotations

import array
import importlib
from functools import cache
from typing import Any

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from seg_perception.runtime import messages
from seg_perception.runtime.image_codec import (
    DEFAULT_MAX_PIXELS,
    SUPPORTED_ENCODINGS,
    ImageDecodeError,
    decode_compressed,
    decode_raw,
    image_payload,
    validate_raw,
)
from seg_perception.runtime.messages import MessageKit

try:
    from cv_bridge import CvBridge

    HAVE_CV_BRIDGE = True
    _BRIDGE: Any = CvBridge()
except ImportError:  # not pip-installable: the core codec takes over
    HAVE_CV_BRIDGE = False
    _BRIDGE = None

__all__ = [
    "HAVE_CV_BRIDGE",
    "KIT",
    "SUPPORTED_ENCODINGS",
    "ImageDecodeError",
    "compressed_to_rgb",
    "imgmsg_to_rgb",
    "numpy_to_imgmsg",
    "rgb_to_compressed_msg",
]

# Encodings every cv_bridge release converts to rgb8; the newer aliases "uyvy"/"yuyv" are
# left to the core codec so an older cv_bridge cannot reject them.
_BRIDGE_ENCODINGS = frozenset(SUPPORTED_ENCODINGS) - {"uyvy", "yuyv"}


@cache
def message_type(name: str) -> type:
    """The rclpy class of a message type name such as ``nav_msgs/msg/OccupancyGrid``."""
    package, _, cls = name.partition("/msg/")
    return getattr(importlib.import_module(f"{package}.msg"), cls)


def _array(values: np.ndarray) -> array.array:
    """rclpy's form of a primitive array field: an ``array.array`` of the field's type,
    which its setters keep as it is (bytes, memoryviews and ndarrays are walked element by
    element or rejected), filled with one memcpy."""
    return image_payload(values, values.dtype.char)


#: Builds rclpy messages with :mod:`seg_perception.runtime.messages` (every message the node
#: publishes, and the soak's inputs).
KIT = MessageKit(message_type, _array)


def imgmsg_to_rgb(msg: Image, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """RGB uint8 (H, W, 3) pixels of a raw ``sensor_msgs/Image``.

    Raises :class:`ImageDecodeError` naming the problem for any malformed or unsupported
    message, or one larger than ``max_pixels``. An ``rgb8`` result may share memory with
    ``msg.data`` (no copy); copy it before changing it.
    """
    enc = msg.encoding
    if HAVE_CV_BRIDGE and _BRIDGE is not None and enc in _BRIDGE_ENCODINGS:
        validate_raw(enc, msg.width, msg.height, msg.step, msg.data, max_pixels)
        try:
            return np.asarray(_BRIDGE.imgmsg_to_cv2(msg, "rgb8"))
        except Exception as err:  # CvBridgeError, TypeError from numpy, cv2.error
            raise ImageDecodeError(f"cv_bridge cannot convert {enc}: {err}",
                                   kind="convert.failed") from err
    return decode_raw(enc, msg.width, msg.height, msg.step, msg.is_bigendian, msg.data,
                      max_pixels=max_pixels)


def compressed_to_rgb(msg: CompressedImage,
                      max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """RGB uint8 (H, W, 3) pixels of a JPEG/PNG ``sensor_msgs/CompressedImage`` (refused
    before decoding when its header says it has more than ``max_pixels`` pixels)."""
    return decode_compressed(msg.format, msg.data, max_pixels)


def numpy_to_imgmsg(arr: np.ndarray, encoding: str | None = None,
                    header: Header | None = None) -> Image:
    """A ``sensor_msgs/Image`` holding ``arr``: (H, W) uint8 -> mono8, (H, W, 3) -> rgb8.

    ``encoding`` may also be mono16, bgr8, rgba8 or bgra8 when ``arr`` matches it (else
    ValueError). The pixels are copied once (rclpy messages own their data); ``header`` is
    shared, not copied (None: an empty one).
    """
    return messages.image_message(KIT, arr, encoding, header)


def rgb_to_compressed_msg(rgb: np.ndarray, header: Header | None = None, fmt: str = "jpeg",
                          quality: int = 90) -> CompressedImage:
    """A ``sensor_msgs/CompressedImage`` (JPEG or PNG) as image_transport would publish it.

    Accepts RGB (H, W, 3) or grey (H, W) uint8; ``format`` reads e.g.
    ``"rgb8; jpeg compressed bgr8"``.
    """
    return messages.compressed_message(KIT, rgb, header, fmt, quality)
