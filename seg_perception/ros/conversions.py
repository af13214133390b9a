"""sensor_msgs Image / CompressedImage <-> numpy: the only place that touches image messages.

cv_bridge is used for raw input when it is importable (a ROS install from apt has it), and
:mod:`seg_perception.runtime.image_codec` otherwise (pip/venv installs); both give the same
pixels. Compressed input and every output always go through the core codec: cv_bridge's
compressed decoder labels every file ``bgr8`` (wrong for mono and 16-bit PNG), and its
``cv2_to_imgmsg`` copies the pixels twice where :func:`image_payload` copies once.
"""

from __future__ import annotations

import array
import importlib
import sys
from functools import cache
from typing import Any

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from seg_perception.runtime.image_codec import (
    DEFAULT_MAX_PIXELS,
    SUPPORTED_ENCODINGS,
    ImageDecodeError,
    decode_compressed,
    decode_raw,
    encode_compressed,
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

# (channels, dtype) each output encoding needs.
_OUTPUT_SHAPES: dict[str, tuple[int, np.dtype]] = {
    "mono8": (1, np.dtype(np.uint8)),
    "mono16": (1, np.dtype(np.uint16)),
    "rgb8": (3, np.dtype(np.uint8)),
    "bgr8": (3, np.dtype(np.uint8)),
    "rgba8": (4, np.dtype(np.uint8)),
    "bgra8": (4, np.dtype(np.uint8)),
}


def _new(msg_type: type) -> Any:
    """A message whose ``data`` setter keeps an ``array.array('B')`` as is (no copy).

    With field checks on (rosidl's ``check_fields``, Iron and later) the setter stores the
    array; with them off it copies it once more. Releases without the option check always.
    """
    if "_check_fields" in msg_type.__slots__:
        return msg_type(check_fields=True)
    return msg_type()


@cache
def message_type(name: str) -> type:
    """The rclpy class of a message type name such as ``nav_msgs/msg/OccupancyGrid``."""
    package, _, cls = name.partition("/msg/")
    return getattr(importlib.import_module(f"{package}.msg"), cls)


#: Builds rclpy messages for :mod:`seg_perception.runtime.messages` (grid, polygon, header).
KIT = MessageKit(lambda name, **fields: message_type(name)(**fields),
                 lambda a: array.array("b", np.ascontiguousarray(a, np.int8).tobytes()))


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

    ``encoding`` may also be mono16, bgr8, rgba8 or bgra8 when ``arr`` matches it. The pixels
    are copied once (rclpy messages own their data); ``header`` is shared, not copied.
    """
    arr = np.asarray(arr)
    if encoding is None:
        encoding = "mono8" if arr.ndim == 2 else "rgb8"
    if encoding not in _OUTPUT_SHAPES:
        raise ValueError(f"cannot publish encoding {encoding!r}; use one of "
                         f"{', '.join(_OUTPUT_SHAPES)}")
    channels, dtype = _OUTPUT_SHAPES[encoding]
    shape_ok = arr.ndim == 2 if channels == 1 else arr.ndim == 3 and arr.shape[2] == channels
    if not shape_ok or arr.dtype != dtype or arr.shape[0] == 0 or arr.shape[1] == 0:
        want = "(H, W)" if channels == 1 else f"(H, W, {channels})"
        raise ValueError(f"{encoding} needs a non-empty {dtype} {want} array, got {arr.dtype} "
                         f"{arr.shape}")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    msg = _new(Image)
    msg.header = header if header is not None else Header()
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(sys.byteorder == "big")  # native order, as cv_bridge writes
    msg.step = int(arr.shape[1] * channels * dtype.itemsize)
    msg.data = image_payload(arr)
    return msg


def rgb_to_compressed_msg(rgb: np.ndarray, header: Header | None = None, fmt: str = "jpeg",
                          quality: int = 90) -> CompressedImage:
    """A ``sensor_msgs/CompressedImage`` (JPEG or PNG) as image_transport would publish it.

    Accepts RGB (H, W, 3) or grey (H, W) uint8; ``format`` reads e.g.
    ``"rgb8; jpeg compressed bgr8"``.
    """
    data, fmt_str = encode_compressed(rgb, fmt, quality)
    msg = _new(CompressedImage)
    msg.header = header if header is not None else Header()
    msg.format = fmt_str
    msg.data = image_payload(np.frombuffer(data, np.uint8))
    return msg
