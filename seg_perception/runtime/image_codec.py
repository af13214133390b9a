"""Camera image codecs without cv_bridge: raw ``sensor_msgs/Image`` payloads and JPEG/PNG.

cv_bridge is a compiled ROS package that cannot be pip-installed, so the node and the tools
decode and encode image payloads here with numpy and OpenCV only. The results match what
``cv_bridge.imgmsg_to_cv2(msg, "rgb8")`` returns, using the same OpenCV conversion codes.
Nothing here imports a ROS package: functions take the message fields as plain values.

Decoding works on a zero-copy ``np.frombuffer`` view of the payload; row padding
(``step`` > width * bytes per pixel) is dropped by slicing that view, so the only copy made
is the colour conversion's output (and none at all for ``rgb8`` unless ``copy=True``).

Every decoder refuses an image larger than ``max_pixels`` (default
:data:`DEFAULT_MAX_PIXELS`) before it allocates anything: raw images by their width and
height fields, JPEG and PNG by the size in their headers (SOFn marker, IHDR chunk), read
here without decoding. JPEG and PNG are decoded with Pillow, which reports corrupt data as an
exception; OpenCV's decoders print libjpeg/libpng messages straight to the process's stderr,
past any logging, so OpenCV only decodes what Pillow cannot (16-bit colour PNG and files that
are neither JPEG nor PNG), under its own pixel cap (``OPENCV_IO_MAX_IMAGE_PIXELS``, set by
``seg_perception/__init__.py``) and with the result's size checked.

Every :class:`ImageDecodeError` carries a ``kind``: a short, stable name of the problem
(``"encoding.unsupported"``, ``"compressed.corrupt"``, ...) without the values that differ from
message to message, for rate-limiting warnings per kind of problem.
"""

from __future__ import annotations

import array
import io
import logging
import struct
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

_LOG = logging.getLogger(__name__)


#: Largest image decoded by default, in pixels: 8K UHD (7680x4320 = 33.2 M) fits, a 16000x16000
#: "decompression bomb" (256 M pixels, 768 MB as RGB) does not. Callers pass ``max_pixels``.
DEFAULT_MAX_PIXELS = 40_000_000

#: OpenCV's own pixel cap for the files only OpenCV decodes (``OPENCV_IO_MAX_IMAGE_PIXELS``;
#: OpenCV reads it once, when cv2 is first imported, so seg_perception/__init__.py sets it).
OPENCV_MAX_PIXELS = 1 << 27


class ImageDecodeError(ValueError):
    """An image payload cannot be turned into pixels (bad fields, short data, corrupt file).

    ``kind`` names the problem without the values of this message (for rate limiting).
    """

    def __init__(self, message: str, kind: str = "image.invalid") -> None:
        super().__init__(message)
        self.kind = kind


def _mpix(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} M" if pixels >= 100_000 else str(pixels)


def check_pixels(width: int, height: int, max_pixels: int | None, what: str) -> None:
    """Raise :class:`ImageDecodeError` (kind ``size.too_large``) when ``width*height``
    exceeds ``max_pixels`` (None or <= 0: no limit)."""
    if max_pixels is None or max_pixels <= 0:
        return
    pixels = int(width) * int(height)
    if pixels > max_pixels:
        raise ImageDecodeError(
            f"{what} of {width}x{height} = {_mpix(pixels)} pixels exceeds the limit of "
            f"{_mpix(int(max_pixels))} pixels (max_image_pixels); not decoded",
            kind="size.too_large")


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


def _as_bytes_view(data: Any) -> np.ndarray:
    """A flat uint8 view of any buffer (bytes, array.array('B'), memoryview, ndarray)."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or not data.flags.c_contiguous:
            data = np.ascontiguousarray(data).view(np.uint8)
        return data.reshape(-1)
    if isinstance(data, list):  # some hand-built messages carry a list of ints
        return np.asarray(data, dtype=np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError) as err:
        raise ImageDecodeError(f"image data is not a byte buffer: {type(data).__name__}",
                               kind="data.not_bytes") from err


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
    buf = _as_bytes_view(data)
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


# --- compressed (sensor_msgs/CompressedImage) ------------------------------------------------

def _parse_format(fmt: str) -> tuple[str, str]:
    """Split a CompressedImage.format into (codec, source encoding or "")."""
    text = str(fmt).strip().lower()
    source = ""
    if ";" in text:
        source, _, text = (part.strip() for part in text.partition(";"))
    if "compresseddepth" in text:
        raise ImageDecodeError(f"compressedDepth images are not supported (format {fmt!r})",
                               kind="compressed.depth_unsupported")
    if "jpeg" in text or "jpg" in text:
        return "jpeg", source
    if "png" in text:
        return "png", source
    if not text:
        return "", source
    raise ImageDecodeError(f"unsupported compressed format {fmt!r}; expected jpeg or png",
                           kind="compressed.format_unsupported")


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8"
# JPEG start-of-frame markers (baseline, extended, progressive, lossless, arithmetic ...):
# C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


@dataclass(frozen=True)
class ImageHeader:
    """What a compressed file's header says, read without decoding it."""

    codec: str  # "jpeg" or "png"
    width: int
    height: int
    bit_depth: int  # bits per sample
    channels: int  # colour components (PNG: from the colour type; 0 for a palette)


def _png_header(buf: memoryview) -> ImageHeader | None:
    # Signature, then the IHDR chunk: length (4), "IHDR", width, height (big-endian uint32),
    # bit depth, colour type, ... (PNG spec, section 11.2.2). IHDR must come first.
    if len(buf) < 26 or bytes(buf[12:16]) != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack_from(">IIBB", buf, 16)
    if width == 0 or height == 0:
        return None
    channels = {0: 1, 2: 3, 3: 0, 4: 2, 6: 4}.get(colour, -1)
    return ImageHeader("png", width, height, depth, channels)


def _jpeg_header(buf: memoryview) -> ImageHeader | None:
    """Walk the marker segments from SOI to the first SOFn (ITU T.81 B.1.1); None when the
    data ends, a segment is malformed or the scan starts before a frame header. The height
    is 0 when a DNL marker defines it later."""
    i, n = 2, len(buf)
    while i < n:
        if buf[i] != 0xFF:
            return None  # segments follow one another; anything else is corrupt
        while i < n and buf[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            return None
        marker = buf[i]
        i += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # TEM, RSTn, SOI: no length field
            continue
        if marker in (0xD9, 0xDA) or i + 2 > n:  # EOI or SOS before any frame header
            return None
        length = (buf[i] << 8) | buf[i + 1]
        if length < 2:
            return None
        if marker in _SOF_MARKERS:
            if length < 8 or i + 8 > n:
                return None
            depth, height, width, comps = struct.unpack_from(">BHHB", buf, i + 2)
            return None if width == 0 else ImageHeader("jpeg", width, height, depth, comps)
        i += length
    return None


def _sniff(buf: np.ndarray) -> tuple[str, ImageHeader | None]:
    """("jpeg" | "png" | "", header or None) from a file's first bytes."""
    view = memoryview(buf)
    if bytes(view[:8]) == _PNG_MAGIC:
        return "png", _png_header(view)
    if bytes(view[:2]) == _JPEG_MAGIC:
        return "jpeg", _jpeg_header(view)
    return "", None


def compressed_header(data: Any) -> ImageHeader | None:
    """Size and depth of a JPEG or PNG file read from its header, without decoding; None
    when the data is neither or its header is unreadable (a corrupt file)."""
    return _sniff(_as_bytes_view(data))[1]


def _corrupt(codec: str, fmt: str, size: int, why: str) -> ImageDecodeError:
    return ImageDecodeError(
        f"cannot decode {codec or 'compressed'} image ({fmt!r}, {size} bytes): corrupt or not "
        f"a JPEG/PNG file ({why})", kind="compressed.corrupt")


def _decode_pillow(buf: np.ndarray, header: ImageHeader, fmt: str) -> np.ndarray:
    """JPEG/PNG with Pillow: errors are exceptions (nothing is printed), RGB comes out."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(memoryview(buf)), formats=[header.codec.upper()]) as im:
            if im.size != (header.width, header.height):  # not the frame header we checked
                raise _corrupt(header.codec, fmt, buf.size,
                               f"header says {header.width}x{header.height}, decoder "
                               f"{im.size[0]}x{im.size[1]}")
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                gray16 = np.asarray(im)
                if gray16.dtype != np.uint16:
                    gray16 = np.clip(gray16, 0, 65535).astype(np.uint16)
                return cv2.cvtColor(mono16_to_mono8(gray16), cv2.COLOR_GRAY2RGB)
            if mode == "L":
                return cv2.cvtColor(np.asarray(im), cv2.COLOR_GRAY2RGB)
            if mode == "RGB":
                return np.asarray(im).copy()  # asarray is a read-only view of bytes
            if mode == "RGBA":
                return cv2.cvtColor(np.asarray(im), cv2.COLOR_RGBA2RGB)
            if mode == "LA":
                return cv2.cvtColor(np.asarray(im)[..., 0], cv2.COLOR_GRAY2RGB)
            return np.asarray(im.convert("RGB"))  # palette, 1-bit, CMYK, YCbCr
    except ImageDecodeError:
        raise
    except MemoryError:
        raise ImageDecodeError(
            f"{header.codec} image {header.width}x{header.height}: out of memory decoding it",
            kind="compressed.memory") from None
    except Exception as exc:  # OSError (truncated, broken stream), SyntaxError, ValueError
        raise _corrupt(header.codec, fmt, buf.size, f"{type(exc).__name__}: {exc}") from None


def _decode_opencv(buf: np.ndarray, codec: str, fmt: str, max_pixels: int | None) -> np.ndarray:
    """Files Pillow cannot take (16-bit colour PNG, formats other than JPEG/PNG)."""
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # OpenCV's own size cap (validateInputImageSize) and friends
        text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise _corrupt(codec, fmt, buf.size, f"OpenCV: {text}") from None
    if img is None:
        raise _corrupt(codec, fmt, buf.size, "OpenCV cannot decode it")
    check_pixels(img.shape[1], img.shape[0], max_pixels, f"{codec or 'compressed'} image")
    if img.dtype == np.uint16:
        img = cv2.convertScaleAbs(img, alpha=255.0 / 65535.0)
    elif img.dtype != np.uint8:
        raise ImageDecodeError(f"unsupported compressed pixel type {img.dtype} ({fmt!r})",
                               kind="compressed.pixel_type")
    if img.ndim == 2 or img.shape[2] == 1:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def decode_compressed(fmt: str, data: Any,
                      max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a JPEG/PNG ``CompressedImage`` payload to RGB uint8 (H, W, 3).

    image_transport writes colour as BGR inside the file; 16-bit PNG is scaled to 8 bits
    like mono16; an alpha channel is dropped. The size in a JPEG/PNG header is checked
    against ``max_pixels`` (None: no limit) before anything is decoded; a JPEG/PNG whose
    header cannot be read is corrupt. Data that is neither JPEG nor PNG goes to OpenCV, under
    its own pixel cap, and its decoded size is checked.
    """
    codec, _ = _parse_format(fmt)
    buf = _as_bytes_view(data)
    if buf.size == 0:
        raise ImageDecodeError(f"compressed image ({fmt!r}) has no data",
                               kind="compressed.empty")
    kind, header = _sniff(buf)
    if not kind:
        return _decode_opencv(buf, codec, fmt, max_pixels)
    if header is None:
        raise _corrupt(kind, fmt, buf.size, f"no readable {kind.upper()} frame header")
    if header.height == 0:  # JPEG whose height comes in a DNL marker: OpenCV, checked after
        check_pixels(header.width, 1, max_pixels, f"{kind} image")
        return _decode_opencv(buf, kind, fmt, max_pixels)
    check_pixels(header.width, header.height, max_pixels, f"{kind} image")
    pillow_cap = _pillow_max_pixels()
    if (kind == "png" and header.bit_depth == 16 and header.channels in (3, 4)) or (
            pillow_cap is not None and header.width * header.height > pillow_cap):
        return _decode_opencv(buf, kind, fmt, max_pixels)  # Pillow keeps 8 bits of these
    return _decode_pillow(buf, header, fmt)


def _pillow_max_pixels() -> int | None:
    """Pillow's decompression-bomb threshold (it warns above it); None when disabled."""
    from PIL import Image

    return Image.MAX_IMAGE_PIXELS


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> tuple[bytes, str]:
    """Compress an RGB (H, W, 3) or grey (H, W) uint8 frame to JPEG or PNG.

    Returns ``(data, format)`` with the format string image_transport's compressed plugin
    writes, e.g. ``"rgb8; jpeg compressed bgr8"``. ``quality`` is the JPEG quality (0-100);
    for PNG it is ignored (lossless, default compression).
    """
    arr = np.asarray(rgb)
    codec = fmt.strip().lower()
    codec = "jpeg" if codec in ("jpeg", "jpg") else codec
    if codec not in ("jpeg", "png"):
        raise ValueError(f"compressed format must be 'jpeg' or 'png', got {fmt!r}")
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"expected uint8 (H, W, 3) RGB or (H, W) grey, got {arr.dtype} "
                         f"{arr.shape}")
    if arr.ndim == 2:
        src, stored, pixels = "mono8", "mono8", arr
    else:
        src, stored, pixels = "rgb8", "bgr8", cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if codec == "jpeg" else []
    ok, out = cv2.imencode(".jpg" if codec == "jpeg" else ".png", pixels, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {arr.shape} frame as {codec}")
    return out.tobytes(), f"{src}; {codec} compressed {stored}"
