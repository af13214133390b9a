"""Decoded-size limits: a compressed or raw image's size comes from its header and is
refused before anything is decoded or allocated; the limit is the caller's to change, and
our processes set OpenCV's own pixel cap for the formats it decodes itself."""

from __future__ import annotations

import struct
import subprocess
import sys
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest
from images import gradient_frame
from shared_data import REPO

from seg_perception.runtime.image_codec import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    compressed_header,
    decode_compressed,
    decode_raw,
    encode_compressed,
    validate_raw,
)


def png_claiming(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG whose IHDR claims ``width``x``height`` RGB, with ``idat`` as its only data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` (a JPEG) with the size in its frame header (SOF0) replaced."""
    i = data.index(b"\xff\xc0")
    return data[: i + 5] + struct.pack(">HH", height, width) + data[i + 9:]


def test_png_bomb_is_refused_from_its_header_without_decoding() -> None:
    # A small PNG (under 300 kB) claiming 16000x16000 (256 M pixels, 768 MB as RGB).
    rows = zlib.compress(b"\x00" * (16000 * 3 + 1) * 64, 9)  # a real start of image data
    bomb = png_claiming(16000, 16000, rows)
    assert len(bomb) < 300_000
    header = compressed_header(bomb)
    assert (header.codec, header.width, header.height) == ("png", 16000, 16000)
    tracemalloc.start()
    with pytest.raises(ImageDecodeError, match=r"16000x16000 = 256\.0 M pixels exceeds the "
                       r"limit of 40\.0 M pixels") as info:
        decode_compressed("rgb8; png compressed bgr8", bomb)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert info.value.kind == "size.too_large"
    assert peak < 20_000_000, peak  # 768 MB had it been decoded


def test_jpeg_size_comes_from_its_frame_header() -> None:
    data, fmt = encode_compressed(gradient_frame(), "jpeg")
    assert compressed_header(data).width == 80 and compressed_header(data).height == 60
    huge = jpeg_with_size(data, 65000, 65000)
    with pytest.raises(ImageDecodeError, match=r"jpeg image of 65000x65000 .* exceeds"):
        decode_compressed(fmt, huge)
    # Progressive JPEG (SOF2) after a large APP segment is read too.
    _, prog = cv2.imencode(".jpg", gradient_frame(), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    prog = prog.tobytes()
    app = b"\xff\xe5" + struct.pack(">H", 60002) + b"x" * 60000
    prog = prog[:2] + app + prog[2:]
    h = compressed_header(prog)
    assert (h.width, h.height) == (80, 60)
    assert decode_compressed("jpeg", prog).shape == (60, 80, 3)


def test_limit_is_the_callers_to_change() -> None:
    rgb = gradient_frame()
    for fmt in ("jpeg", "png"):
        data, fmt_str = encode_compressed(rgb, fmt)
        with pytest.raises(ImageDecodeError, match=r"80x60 = 4800 pixels exceeds the limit of "
                           r"4799 pixels"):
            decode_compressed(fmt_str, data, max_pixels=4799)
        assert decode_compressed(fmt_str, data, max_pixels=4800).shape == (60, 80, 3)
        assert decode_compressed(fmt_str, data, max_pixels=None).shape == (60, 80, 3)
    raw = rgb.tobytes()
    with pytest.raises(ImageDecodeError, match="exceeds the limit") as info:
        decode_raw("rgb8", 80, 60, 240, 0, raw, max_pixels=1000)
    assert info.value.kind == "size.too_large"
    with pytest.raises(ImageDecodeError, match="exceeds the limit"):
        validate_raw("rgb8", 80, 60, 240, raw, max_pixels=1000)
    assert DEFAULT_MAX_PIXELS >= 7680 * 4320  # 8K UHD passes by default


def test_raw_size_is_checked_before_the_data() -> None:
    # 16000x16000 claimed with 12 bytes of data: refused for its size, nothing allocated.
    with pytest.raises(ImageDecodeError, match=r"16000x16000 = 256\.0 M pixels exceeds"):
        validate_raw("rgb8", 16000, 16000, 48000, bytes(12))


def test_other_formats_go_to_opencv_and_their_size_is_checked() -> None:
    ok, bmp = cv2.imencode(".bmp", cv2.cvtColor(gradient_frame(), cv2.COLOR_RGB2BGR))
    assert ok and compressed_header(bmp) is None
    np.testing.assert_array_equal(decode_compressed("jpeg", bmp), gradient_frame())
    with pytest.raises(ImageDecodeError, match="exceeds the limit of 100 pixels"):
        decode_compressed("jpeg", bmp, max_pixels=100)


def test_opencv_pixel_cap_is_set_for_our_processes() -> None:
    code = ("import seg_perception, os, cv2, numpy as np; "
            "print(os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True, cwd=REPO, env={"PATH": "/usr/bin:/bin"})
    assert int(done.stdout) == 1 << 27
