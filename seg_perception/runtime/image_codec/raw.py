"""Raw ``sensor_msgs/Image`` payloads <-> RGB uint8, as cv_bridge converts them.

Split from the compressed codec (:mod:`.compressed`): every encoding's layout and OpenCV
conversion code (rgb8, bgr8, rgba8, bgra8, mono8, mono16, the four Bayer patterns, 4:2:2
YUV), decoding on a zero-copy view of the payload with row padding sliced away, and the
inverse (:func:`encode_raw`) for tests, synthetic publishers and the demo.
"""

from __future__ import annotations

import array
import logging
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from seg_perception.runtime.image_codec.payload import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    as_bytes_view,
    check_pixels,
)

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Layout:
    """How one raw encoding is laid out and which OpenCV code turns it into RGB."""

    bytes_per_pixel: int
    channels: int  # channels of the view handed to OpenCV (1 for bayer, 2 for yuv422)
    to_rgb: int | None  # cv2 code; None when the view already is RGB (rgb8) or needs scaling


# OpenCV codes as cv_bridge uses them (ros-perception/vision_opencv, cv_bridge/src/
# cv_bridge.cpp, getConversionCodes()). Verified there: OpenCV names a Bayer pattern after
# the 2x2 block that starts at the second row and second column, so cv_bridge maps
#   bayer_rggb8 -> cv::COLOR_BayerBG2RGB, bayer_bggr8 -> cv::COLOR_BayerRG2RGB,
#   bayer_gbrg8 -> cv::COLOR_BayerGR2RGB, bayer_grbg8 -> cv::COLOR_BayerGB2RGB,
# and yuv422 -> cv::COLOR_YUV2RGB_UYVY, yuv422_yuy2 -> cv::COLOR_YUV2RGB_YUY2 (ROS 2 branch).
# "uyvy" and "yuyv" are the newer sensor_msgs names of the same two byte orders.
_LAYOUTS: dict[str, _Layout] = {
    "rgb8": _Layout(3, 3, None),
    "bgr8": _Layout(3, 3, cv2.COLOR_BGR2RGB),
    "rgba8": _Layout(4, 4, cv2.COLOR_RGBA2RGB),
    "bgra8": _Layout(4, 4, cv2.COLOR_BGRA2RGB),
    "mono8": _Layout(1, 1, cv2.COLOR_GRAY2RGB),
    "mono16": _Layout(2, 1, cv2.COLOR_GRAY2RGB),
    "bayer_rggb8": _Layout(1, 1, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": _Layout(1, 1, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": _Layout(1, 1, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": _Layout(1, 1, cv2.COLOR_BayerGB2RGB),
    "yuv422": _Layout(2, 2, cv2.COLOR_YUV2RGB_UYVY),
    "uyvy": _Layout(2, 2, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": _Layout(2, 2, cv2.COLOR_YUV2RGB_YUY2),
    "yuyv": _Layout(2, 2, cv2.COLOR_YUV2RGB_YUY2),
}

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_LAYOUTS)

# Which colour sits at (row % 2, col % 2) of each Bayer mosaic, in reading order.
_BAYER_ORDER = {"bayer_rggb8": "rggb", "bayer_bggr8": "bggr", "bayer_gbrg8": "gbrg",
                "bayer_grbg8": "grbg"}
_YUV_UYVY = frozenset({"yuv422", "uyvy"})


def _layout(encoding: str) -> _Layout:
    try:
        return _LAYOUTS[encoding]
    except (KeyError, TypeError):
        raise ImageDecodeError(
            f"unsupported image encoding {encoding!r}; supported: "
            f"{', '.join(SUPPORTED_ENCODINGS)}", kind="encoding.unsupported",
        ) from None


def _checked(encoding: str, width: int, height: int, step: int, data: Any,
             max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Validate the fields; return the first step*height bytes of ``data`` as a flat view."""
    lay = _layout(encoding)
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"{encoding} image has zero size: width={width}, height={height}",
                               kind="size.zero")
    check_pixels(width, height, max_pixels, f"{encoding} image")
    row_bytes = width * lay.bytes_per_pixel
    if step < row_bytes:
        raise ImageDecodeError(
            f"{encoding} image step {step} is smaller than width*bytes_per_pixel = "
            f"{width}*{lay.bytes_per_pixel} = {row_bytes}", kind="step.too_small"
        )
    if lay.channels == 2 and width % 2:
        raise ImageDecodeError(f"{encoding} (4:2:2) needs an even width, got {width}",
                               kind="width.odd")
    buf = as_bytes_view(data)
    need = step * height
    if buf.size < need:
        raise ImageDecodeError(
            f"{encoding} image data has {buf.size} bytes, fewer than step*height = "
            f"{step}*{height} = {need}", kind="data.short"
        )
    if buf.size > need:
        _LOG.debug("%s image data has %d bytes beyond step*height", encoding, buf.size - need)
    return buf[:need]


def validate_raw(encoding: str, width: int, height: int, step: int, data: Any,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """Raise :class:`ImageDecodeError` unless the fields describe a decodable payload.

    Cheap (no pixel is touched); lets other decoders (cv_bridge) fail with the same errors.
    An image of more than ``max_pixels`` pixels is refused (None: no limit).
    """
    _checked(encoding, width, height, step, data, max_pixels)


def mono16_to_mono8(gray16: np.ndarray) -> np.ndarray:
    """Scale 16-bit grey to 8 bits like cv_bridge (convertTo with alpha 255/65535, rounded)."""
    if not gray16.dtype.isnative:
        gray16 = gray16.astype(np.uint16)  # byte swap (one copy), as cv_bridge does
    return cv2.convertScaleAbs(gray16, alpha=255.0 / 65535.0)


def decode_raw(encoding: str, width: int, height: int, step: int, is_bigendian: bool | int,
               data: Any, *, copy: bool = False,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a raw ``sensor_msgs/Image`` payload to an RGB uint8 (H, W, 3) array.

    Equal to ``cv_bridge.imgmsg_to_cv2(msg, "rgb8")``. For ``rgb8`` without ``copy`` the
    result is a view of ``data`` (read-only when ``data`` is ``bytes``): copy it before
    keeping it past the message's lifetime or writing to it. Images of more than
    ``max_pixels`` pixels are refused before anything is converted (None: no limit).
    """
    flat = _checked(encoding, width, height, step, data, max_pixels)
    lay = _layout(encoding)
    # (height, width*bpp) view: each row starts `step` bytes after the previous one.
    rows = flat.reshape(height, step)[:, : width * lay.bytes_per_pixel]
    try:
        if encoding == "mono16":
            dtype = np.dtype(">u2" if is_bigendian else "<u2")
            if step % 2:  # rows not 2-byte aligned: OpenCV cannot take them, so compact
                gray = np.ascontiguousarray(rows).view(dtype)
            else:
                gray = np.ndarray((height, width), dtype, buffer=flat, strides=(step, 2))
            return cv2.cvtColor(mono16_to_mono8(gray), cv2.COLOR_GRAY2RGB)
        view = rows if lay.channels == 1 else rows.reshape(height, width, lay.channels)
        if lay.to_rgb is None:
            return view.copy() if copy else view
        return cv2.cvtColor(view, lay.to_rgb)
    except cv2.error as err:
        raise ImageDecodeError(
            f"OpenCV cannot convert {encoding} {width}x{height}: {err}", kind="convert.failed"
        ) from err


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) array, got {rgb.dtype} {rgb.shape}")
    return rgb


def _bt601_yuv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Limited-range BT.601 Y, and U, V averaged over each horizontal pixel pair.

    These are the equations OpenCV's RGB2YUV_UYVY applies and its YUV2RGB_UYVY inverts;
    computed here so that old OpenCV builds without the RGB->4:2:2 codes work too.
    """
    f = rgb.astype(np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    u = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0
    v = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0
    u = 0.5 * (u[:, 0::2] + u[:, 1::2])
    v = 0.5 * (v[:, 0::2] + v[:, 1::2])

    def q(x: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)

    return q(y), q(u), q(v)


def _pixels_for(rgb: np.ndarray, encoding: str, bigendian: bool) -> np.ndarray:
    """The (H, W*bpp) byte image of ``rgb`` in ``encoding``, without row padding."""
    h, w = rgb.shape[:2]
    if encoding == "rgb8":
        px = rgb
    elif encoding == "bgr8":
        px = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    elif encoding == "rgba8":
        px = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)
    elif encoding == "bgra8":
        px = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
    elif encoding == "mono8":
        px = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    elif encoding == "mono16":
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * np.uint16(257)
        px = gray.astype(">u2" if bigendian else "<u2").view(np.uint8)
    elif encoding in _BAYER_ORDER:
        px = np.empty((h, w), np.uint8)
        for i, colour in enumerate(_BAYER_ORDER[encoding]):
            dy, dx = divmod(i, 2)
            px[dy::2, dx::2] = rgb[dy::2, dx::2, "rgb".index(colour)]
    else:  # 4:2:2
        if w % 2:
            raise ValueError(f"{encoding} (4:2:2) needs an even width, got {w}")
        y, u, v = _bt601_yuv(rgb)
        px = np.empty((h, w // 2, 4), np.uint8)
        if encoding in _YUV_UYVY:
            px[..., 0], px[..., 1], px[..., 2], px[..., 3] = u, y[:, 0::2], v, y[:, 1::2]
        else:
            px[..., 0], px[..., 1], px[..., 2], px[..., 3] = y[:, 0::2], u, y[:, 1::2], v
    return px.reshape(h, -1)


def encode_raw(rgb: np.ndarray, encoding: str, row_padding: int = 0,
               bigendian: bool = False) -> tuple[bytes, int]:
    """Turn an RGB frame into the raw payload of ``encoding``; returns ``(data, step)``.

    The inverse of :func:`decode_raw` for tests, synthetic publishers and the demo: bayer
    samples one colour per pixel from ``rgb``, 4:2:2 uses BT.601 as OpenCV does, mono16 is
    grey * 257. ``row_padding`` bytes of zeros end each row, as some drivers send them.
    """
    rgb = _check_rgb(rgb)
    _layout(encoding)
    if row_padding < 0:
        raise ValueError(f"row_padding must be >= 0, got {row_padding}")
    px = _pixels_for(rgb, encoding, bigendian)
    if row_padding == 0:
        return np.ascontiguousarray(px).tobytes(), px.shape[1]
    padded = np.zeros((px.shape[0], px.shape[1] + row_padding), np.uint8)
    padded[:, : px.shape[1]] = px
    return padded.tobytes(), padded.shape[1]


def image_payload(arr: np.ndarray, typecode: str = "B") -> array.array:
    """The fastest object to assign to ``sensor_msgs.msg.Image.data`` for ``arr``'s bytes
    (with ``typecode``, to any rclpy primitive array field of that type: ``b`` for int8[],
    ``d`` for float64[], given an array of that type).

    rclpy's setter stores an ``array.array('B')`` as is (with field checks on) or copies it
    with one memcpy; bytes, memoryviews and ndarrays are either walked element by element or
    rejected. Building the array with ``frombytes`` from the contiguous buffer is one memcpy.
    """
    out = array.array(typecode)
    out.frombytes(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))
    return out


__all__ = [
    "SUPPORTED_ENCODINGS",
    "decode_raw",
    "encode_raw",
    "image_payload",
    "mono16_to_mono8",
    "validate_raw",
]
