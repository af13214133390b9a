"""Compressed ``sensor_msgs/CompressedImage`` payloads (JPEG, PNG) <-> RGB uint8.

Split from the raw codec (:mod:`.raw`): the format string image_transport writes, the
size read from a JPEG or PNG header before decoding (checked against the pixel limit),
decoding with Pillow (errors are exceptions, nothing is printed) and with OpenCV only for
what Pillow cannot take, and encoding for tests and synthetic publishers.
"""

from __future__ import annotations

import io
import struct
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
from seg_perception.runtime.image_codec.raw import mono16_to_mono8


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
    return _sniff(as_bytes_view(data))[1]


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
    buf = as_bytes_view(data)
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


__all__ = [
    "ImageHeader",
    "compressed_header",
    "decode_compressed",
    "encode_compressed",
]
