"""sensor_msgs Image / CompressedImage <-> numpy through real rclpy messages (no DDS)."""

from __future__ import annotations

import array
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rclpy")
from builtin_interfaces.msg import Time
from images import (
    cv_bridge_reference,
    gray3,
    interior_err,
    smooth_frame,
    textured_frame,
)
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from seg_perception.ros import conversions
from seg_perception.ros.conversions import (
    compressed_to_rgb,
    imgmsg_to_rgb,
    numpy_to_imgmsg,
    rgb_to_compressed_msg,
)
from seg_perception.runtime.image_codec import (
    SUPPORTED_ENCODINGS,
    ImageDecodeError,
    decode_raw,
    encode_compressed,
    encode_raw,
)


def make_header(sec: int = 12, frame: str = "camera_optical") -> Header:
    return Header(stamp=Time(sec=sec, nanosec=345), frame_id=frame)


def over_the_wire(msg: Any) -> Any:
    """Serialise and deserialise, so the message is exactly what a subscriber receives."""
    return deserialize_message(serialize_message(msg), type(msg))


def raw_msg(rgb: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    data, step = encode_raw(rgb, encoding, row_padding=pad, bigendian=bigendian)
    return over_the_wire(Image(header=make_header(), height=rgb.shape[0], width=rgb.shape[1],
                               encoding=encoding, is_bigendian=int(bigendian), step=step,
                               data=data))


# --------------------------------------------------------------------------- raw input
@pytest.mark.parametrize("pad", [0, 4])
@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_every_encoding_decodes_from_a_received_message(encoding: str, pad: int) -> None:
    rgb = smooth_frame(24, 32)
    msg = raw_msg(rgb, encoding, pad)
    assert isinstance(msg.data, array.array)  # what rclpy hands a callback
    out = imgmsg_to_rgb(msg)
    assert out.shape == (24, 32, 3) and out.dtype == np.uint8
    if encoding in ("rgb8", "bgr8", "rgba8", "bgra8"):
        np.testing.assert_array_equal(out, rgb)
    elif encoding in ("mono8", "mono16"):
        np.testing.assert_array_equal(out, gray3(rgb))
    else:
        assert interior_err(out, rgb).max() <= 8
    np.testing.assert_array_equal(
        out, decode_raw(encoding, 32, 24, msg.step, msg.is_bigendian, msg.data))


def test_big_endian_mono16_message() -> None:
    rgb = smooth_frame(10, 12)
    np.testing.assert_array_equal(imgmsg_to_rgb(raw_msg(rgb, "mono16", 2, True)), gray3(rgb))


def test_malformed_messages_raise_image_decode_error() -> None:
    good = raw_msg(smooth_frame(8, 8), "rgb8")
    short = over_the_wire(Image(height=8, width=8, encoding="rgb8", step=24,
                                data=bytes(good.data)[:100]))
    with pytest.raises(ImageDecodeError, match="fewer than step"):
        imgmsg_to_rgb(short)
    with pytest.raises(ImageDecodeError, match="unsupported image encoding '8UC3'"):
        imgmsg_to_rgb(Image(height=8, width=8, encoding="8UC3", step=24, data=good.data))
    with pytest.raises(ImageDecodeError, match="zero size"):
        imgmsg_to_rgb(Image(encoding="rgb8"))


# --------------------------------------------------------------------------- outputs
@pytest.mark.parametrize(("shape", "encoding", "step"), [
    ((20, 30), "mono8", 30), ((20, 30, 3), "rgb8", 90),
])
def test_numpy_to_imgmsg_round_trip(shape: tuple[int, ...], encoding: str, step: int,
                                    rng: np.random.Generator) -> None:
    arr = rng.integers(0, 256, shape, dtype=np.uint8)
    header = make_header(77, "cam")
    for enc_arg in (encoding, None):  # explicit, and inferred from the shape
        msg = numpy_to_imgmsg(arr, enc_arg, header)
        assert isinstance(msg.data, array.array)
        got = over_the_wire(msg)
        assert (got.height, got.width, got.encoding, got.step) == (20, 30, encoding, step)
        assert got.is_bigendian == 0
        assert got.header.stamp.sec == 77 and got.header.stamp.nanosec == 345
        assert got.header.frame_id == "cam"
        assert bytes(got.data) == arr.tobytes()
    back = imgmsg_to_rgb(over_the_wire(numpy_to_imgmsg(arr, encoding, header)))
    np.testing.assert_array_equal(back, arr if arr.ndim == 3 else np.dstack([arr] * 3))


def test_numpy_to_imgmsg_takes_strided_arrays(rng: np.random.Generator) -> None:
    big = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    view = big[5:25, 3:33]  # not contiguous
    msg = over_the_wire(numpy_to_imgmsg(view, "rgb8", make_header()))
    np.testing.assert_array_equal(imgmsg_to_rgb(msg), view)
    labels = numpy_to_imgmsg(big[..., 1], "mono8")
    assert bytes(labels.data) == np.ascontiguousarray(big[..., 1]).tobytes()
    assert labels.header.frame_id == ""


def test_numpy_to_imgmsg_other_encodings(rng: np.random.Generator) -> None:
    grey16 = rng.integers(0, 65536, (6, 5), dtype=np.uint16)
    msg = over_the_wire(numpy_to_imgmsg(grey16, "mono16"))
    assert msg.step == 10 and bytes(msg.data) == grey16.tobytes()
    np.testing.assert_array_equal(imgmsg_to_rgb(msg)[..., 0],
                                  np.rint(grey16 / 257.0).astype(np.uint8))
    rgb = textured_frame(rng, 6, 5)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    np.testing.assert_array_equal(imgmsg_to_rgb(over_the_wire(numpy_to_imgmsg(bgr, "bgr8"))),
                                  rgb)


@pytest.mark.parametrize(("arr", "encoding", "match"), [
    (np.zeros((4, 4, 3), np.uint8), "mono8", r"mono8 needs a non-empty uint8 \(H, W\)"),
    (np.zeros((4, 4), np.uint8), "rgb8", r"rgb8 needs a non-empty uint8 \(H, W, 3\)"),
    (np.zeros((4, 4, 3), np.float32), "rgb8", "float32"),
    (np.zeros((0, 4), np.uint8), "mono8", "non-empty"),
    (np.zeros((4, 4), np.uint8), "yuv422", "cannot publish encoding 'yuv422'"),
])
def test_numpy_to_imgmsg_rejects_mismatches(arr: np.ndarray, encoding: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        numpy_to_imgmsg(arr, encoding)


# --------------------------------------------------------------------------- compressed
def test_compressed_png_round_trip_is_exact(rng: np.random.Generator) -> None:
    rgb = textured_frame(rng)
    msg = rgb_to_compressed_msg(rgb, make_header(5), fmt="png")
    assert msg.format == "rgb8; png compressed bgr8" and isinstance(msg.data, array.array)
    got = over_the_wire(msg)
    assert got.header.stamp.sec == 5
    np.testing.assert_array_equal(compressed_to_rgb(got), rgb)


def test_compressed_jpeg_round_trip_is_close() -> None:
    rgb = smooth_frame()
    got = over_the_wire(rgb_to_compressed_msg(rgb, make_header(), quality=95))
    assert got.format == "rgb8; jpeg compressed bgr8"
    assert np.abs(compressed_to_rgb(got).astype(int) - rgb).mean() < 2.0


def test_compressed_message_from_another_publisher(rng: np.random.Generator) -> None:
    """A message built by hand, as image_transport or a bag would carry it."""
    rgb = textured_frame(rng, 10, 12)
    data, fmt = encode_compressed(rgb, "png")
    msg = over_the_wire(CompressedImage(header=make_header(), format=fmt, data=data))
    np.testing.assert_array_equal(compressed_to_rgb(msg), rgb)
    bare = over_the_wire(CompressedImage(format="png", data=data))
    np.testing.assert_array_equal(compressed_to_rgb(bare), rgb)


def test_corrupt_compressed_message_raises() -> None:
    data, fmt = encode_compressed(smooth_frame(), "jpeg")
    msg = over_the_wire(CompressedImage(format=fmt, data=data[:20] + b"\x00" * 200))
    with pytest.raises(ImageDecodeError, match="corrupt"):
        compressed_to_rgb(msg)


# --------------------------------------------------------------------------- cv_bridge path
class _ReferenceBridge:
    """Stands in for cv_bridge.CvBridge where it is not installed (pip installs)."""

    def __init__(self) -> None:
        self.calls = 0

    def imgmsg_to_cv2(self, msg: Image, desired_encoding: str = "passthrough") -> np.ndarray:
        assert desired_encoding == "rgb8"
        self.calls += 1
        return cv_bridge_reference(msg.encoding, msg.width, msg.height, msg.step,
                                   msg.is_bigendian, msg.data)


class _FailingBridge:
    def imgmsg_to_cv2(self, msg: Image, desired_encoding: str = "passthrough") -> np.ndarray:
        raise RuntimeError("boom from the bridge")


def test_cv_bridge_path_gives_the_same_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    bridge = _ReferenceBridge()
    monkeypatch.setattr(conversions, "HAVE_CV_BRIDGE", True)
    monkeypatch.setattr(conversions, "_BRIDGE", bridge)
    rgb = smooth_frame(12, 16)
    for encoding in SUPPORTED_ENCODINGS:
        msg = raw_msg(rgb, encoding, 12)
        expected = decode_raw(encoding, 16, 12, msg.step, 0, msg.data)
        np.testing.assert_array_equal(imgmsg_to_rgb(msg), expected)
    assert bridge.calls == len(SUPPORTED_ENCODINGS) - 2  # uyvy/yuyv stay on the core codec
    # Malformed messages fail with the core's message before cv_bridge sees them.
    with pytest.raises(ImageDecodeError, match="zero size"):
        imgmsg_to_rgb(Image(encoding="rgb8"))
    assert bridge.calls == len(SUPPORTED_ENCODINGS) - 2


def test_cv_bridge_failures_become_image_decode_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conversions, "HAVE_CV_BRIDGE", True)
    monkeypatch.setattr(conversions, "_BRIDGE", _FailingBridge())
    with pytest.raises(ImageDecodeError, match="cv_bridge cannot convert rgb8: boom"):
        imgmsg_to_rgb(raw_msg(smooth_frame(4, 4), "rgb8"))


@pytest.mark.skipif(not conversions.HAVE_CV_BRIDGE, reason="cv_bridge is not installed")
def test_real_cv_bridge_matches_the_core_codec() -> None:
    rgb = smooth_frame(12, 16)
    for encoding in sorted(conversions._BRIDGE_ENCODINGS):
        msg = raw_msg(rgb, encoding, 12)
        np.testing.assert_array_equal(imgmsg_to_rgb(msg),
                                      decode_raw(encoding, 16, 12, msg.step, 0, msg.data))
