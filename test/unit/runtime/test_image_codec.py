"""The ROS-free image codec: raw encodings, cv_bridge parity, JPEG/PNG, and every error
(corrupt data says so, and the decoders' own complaints never reach stderr)."""

from __future__ import annotations

import array
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from images import (
    BAYER,
    YUV,
    cv_bridge_reference,
    gradient_frame,
    gray3,
    interior_err,
    smooth_frame,
    textured_frame,
)
from shared_data import BDD, REPO

from seg_perception.runtime.image_codec import (
    SUPPORTED_ENCODINGS,
    ImageDecodeError,
    decode_compressed,
    decode_raw,
    encode_compressed,
    encode_raw,
    image_payload,
    mono16_to_mono8,
    validate_raw,
)

EXACT = ("rgb8", "bgr8", "rgba8", "bgra8")
MONO = ("mono8", "mono16")
BPP = {**dict.fromkeys(EXACT[:2], 3), **dict.fromkeys(EXACT[2:], 4), "mono8": 1, "mono16": 2,
       **dict.fromkeys(BAYER, 1), **dict.fromkeys(YUV, 2)}


# --------------------------------------------------------------------------- raw round trips
@pytest.mark.parametrize("pad", [0, 3, 12])
@pytest.mark.parametrize("encoding", EXACT)
def test_colour_encodings_round_trip_exactly(encoding: str, pad: int,
                                             rng: np.random.Generator) -> None:
    rgb = textured_frame(rng)
    data, step = encode_raw(rgb, encoding, row_padding=pad)
    h, w = rgb.shape[:2]
    assert step == w * BPP[encoding] + pad and len(data) == step * h
    out = decode_raw(encoding, w, h, step, False, data)
    assert out.dtype == np.uint8 and out.shape == (h, w, 3)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("pad", [0, 3, 12])
@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("encoding", MONO)
def test_mono_round_trips_to_grey(encoding: str, bigendian: bool, pad: int,
                                  rng: np.random.Generator) -> None:
    rgb = textured_frame(rng)
    h, w = rgb.shape[:2]
    data, step = encode_raw(rgb, encoding, row_padding=pad, bigendian=bigendian)
    assert step == w * BPP[encoding] + pad
    np.testing.assert_array_equal(decode_raw(encoding, w, h, step, bigendian, data), gray3(rgb))


def test_mono16_is_scaled_like_cv_bridge_and_honours_byte_order() -> None:
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    expected = np.rint(values / 257.0).astype(np.uint8)  # 255/65535 == 1/257
    np.testing.assert_array_equal(mono16_to_mono8(values), expected)
    for big in (False, True):
        raw = values.astype(">u2" if big else "<u2").tobytes()
        out = decode_raw("mono16", 256, 256, 512, int(big), raw)
        np.testing.assert_array_equal(out[..., 1], expected)
    # The wrong byte order gives other pixels: the flag is honoured, not ignored.
    wrong = decode_raw("mono16", 256, 256, 512, True, values.astype("<u2").tobytes())
    assert not np.array_equal(wrong[..., 0], expected)


def test_mono16_odd_step_is_handled() -> None:
    gray = np.full((5, 6), 1234 * 3, np.uint16)
    rows = np.zeros((5, 13), np.uint8)
    rows[:, :12] = gray.astype("<u2").view(np.uint8)
    out = decode_raw("mono16", 6, 5, 13, False, rows.tobytes())
    assert (out == round(1234 * 3 / 257)).all()


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize("encoding", BAYER)
def test_bayer_round_trip_is_close_on_a_smooth_frame(encoding: str, pad: int) -> None:
    rgb = smooth_frame()
    h, w = rgb.shape[:2]
    data, step = encode_raw(rgb, encoding, row_padding=pad)
    assert step == w + pad
    out = decode_raw(encoding, w, h, step, False, data)
    err = interior_err(out, rgb)
    assert err.max() <= 8 and err.mean() < 2.0, (err.max(), err.mean())


@pytest.mark.parametrize("encoding", BAYER)
def test_bayer_pattern_mapping_keeps_red_and_blue_apart(encoding: str) -> None:
    """A flat colour demosaics exactly; a swapped R/B pattern code would show at once."""
    rgb = np.empty((16, 20, 3), np.uint8)
    rgb[:] = (210, 90, 20)
    data, step = encode_raw(rgb, encoding)
    out = decode_raw(encoding, 20, 16, step, False, data)
    np.testing.assert_array_equal(out[2:-2, 2:-2], rgb[2:-2, 2:-2])


@pytest.mark.parametrize("pad", [0, 6])
@pytest.mark.parametrize("encoding", YUV)
def test_yuv422_round_trip_has_small_error(encoding: str, pad: int) -> None:
    rgb = smooth_frame()
    h, w = rgb.shape[:2]
    data, step = encode_raw(rgb, encoding, row_padding=pad)
    assert step == 2 * w + pad
    err = interior_err(decode_raw(encoding, w, h, step, False, data), rgb, border=1)
    assert err.max() <= 6 and err.mean() < 1.5, (err.max(), err.mean())


@pytest.mark.parametrize(("encoding", "code"), [
    ("yuv422", "COLOR_RGB2YUV_UYVY"), ("yuv422_yuy2", "COLOR_RGB2YUV_YUY2"),
])
def test_yuv422_encoder_matches_opencv(encoding: str, code: str,
                                       rng: np.random.Generator) -> None:
    if not hasattr(cv2, code):
        pytest.skip(f"this OpenCV has no {code}")
    rgb = textured_frame(rng, 24, 40)
    ours = np.frombuffer(encode_raw(rgb, encoding)[0], np.uint8).astype(np.int16)
    ref = cv2.cvtColor(rgb, getattr(cv2, code)).reshape(-1).astype(np.int16)
    assert np.abs(ours - ref).max() <= 1


def test_yuv_byte_orders_differ() -> None:
    rgb = smooth_frame(8, 8)
    uyvy = np.frombuffer(encode_raw(rgb, "uyvy")[0], np.uint8).reshape(-1, 4)
    yuyv = np.frombuffer(encode_raw(rgb, "yuyv")[0], np.uint8).reshape(-1, 4)
    np.testing.assert_array_equal(uyvy[:, [1, 0, 3, 2]], yuyv)  # U Y0 V Y1 vs Y0 U Y1 V
    assert encode_raw(rgb, "yuv422") == encode_raw(rgb, "uyvy")
    assert encode_raw(rgb, "yuv422_yuy2") == encode_raw(rgb, "yuyv")


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_same_result_as_cv_bridge(encoding: str, bigendian: bool,
                                  rng: np.random.Generator) -> None:
    rgb = textured_frame(rng, 30, 44)
    data, step = encode_raw(rgb, encoding, row_padding=12, bigendian=bigendian)
    ours = decode_raw(encoding, 44, 30, step, bigendian, data)
    ref = cv_bridge_reference(encoding, 44, 30, step, int(bigendian), data)
    np.testing.assert_array_equal(ours, ref)


def test_supported_encodings_are_all_listed() -> None:
    assert set(SUPPORTED_ENCODINGS) == set(BPP)
    assert isinstance(SUPPORTED_ENCODINGS, tuple)


# --------------------------------------------------------------------------- buffers, copies
@pytest.mark.parametrize("kind", ["bytes", "bytearray", "array", "memoryview", "ndarray",
                                  "list"])
def test_any_buffer_type_decodes_the_same(kind: str, rng: np.random.Generator) -> None:
    rgb = textured_frame(rng, 9, 10)
    raw, step = encode_raw(rgb, "bgr8", row_padding=2)
    data = {"bytes": raw, "bytearray": bytearray(raw), "array": array.array("B", raw),
            "memoryview": memoryview(raw), "ndarray": np.frombuffer(raw, np.uint8).copy(),
            "list": list(raw)}[kind]
    np.testing.assert_array_equal(decode_raw("bgr8", 10, 9, step, 0, data), rgb)


def test_rgb8_is_a_zero_copy_view_unless_asked(rng: np.random.Generator) -> None:
    rgb = textured_frame(rng)
    h, w = rgb.shape[:2]
    raw, step = encode_raw(rgb, "rgb8", row_padding=4)
    buf = array.array("B", raw)
    view = decode_raw("rgb8", w, h, step, 0, buf)
    assert np.shares_memory(view, np.frombuffer(buf, np.uint8))
    own = decode_raw("rgb8", w, h, step, 0, buf, copy=True)
    assert not np.shares_memory(own, np.frombuffer(buf, np.uint8)) and own.flags.c_contiguous
    np.testing.assert_array_equal(view, own)


def test_extra_trailing_bytes_are_ignored(rng: np.random.Generator) -> None:
    rgb = textured_frame(rng, 4, 6)
    raw, step = encode_raw(rgb, "rgb8")
    np.testing.assert_array_equal(decode_raw("rgb8", 6, 4, step, 0, raw + b"\x07" * 9), rgb)


def test_image_payload_is_an_array_of_the_pixels(rng: np.random.Generator) -> None:
    rgb = textured_frame(rng, 5, 7)
    for arr in (rgb, rgb[:, 1:6], rgb[..., 0]):  # contiguous, strided, one channel
        payload = image_payload(arr)
        assert isinstance(payload, array.array) and payload.typecode == "B"
        assert payload.tobytes() == np.ascontiguousarray(arr).tobytes()


def test_real_frame_round_trips(camvid_frame: np.ndarray) -> None:
    h, w = camvid_frame.shape[:2]
    for encoding in ("rgb8", "bgr8"):
        data, step = encode_raw(camvid_frame, encoding, row_padding=16)
        np.testing.assert_array_equal(decode_raw(encoding, w, h, step, 0, data), camvid_frame)
    for encoding, mean_err in (("bayer_rggb8", 6.0), ("yuv422", 3.0)):
        data, step = encode_raw(camvid_frame, encoding)
        assert interior_err(decode_raw(encoding, w, h, step, 0, data), camvid_frame).mean() < \
            mean_err
    data, fmt = encode_compressed(camvid_frame, "jpeg", 95)
    assert np.abs(decode_compressed(fmt, data).astype(int) - camvid_frame).mean() < 3.0


# --------------------------------------------------------------------------- errors
def test_error_is_a_value_error() -> None:
    assert issubclass(ImageDecodeError, ValueError)


def test_unknown_encoding_lists_the_supported_ones() -> None:
    with pytest.raises(ImageDecodeError, match="32FC1") as info:
        decode_raw("32FC1", 4, 4, 16, 0, bytes(64))
    assert all(enc in str(info.value) for enc in SUPPORTED_ENCODINGS)
    with pytest.raises(ImageDecodeError, match="nv12"):
        validate_raw("nv12", 4, 4, 4, bytes(24))


def test_short_data_names_both_sizes() -> None:
    with pytest.raises(ImageDecodeError, match=r"100 bytes.*30\*4 = 120"):
        decode_raw("rgb8", 10, 4, 30, 0, bytes(100))


@pytest.mark.parametrize(("width", "height"), [(0, 4), (4, 0), (0, 0)])
def test_zero_size_is_refused(width: int, height: int) -> None:
    with pytest.raises(ImageDecodeError, match=f"width={width}, height={height}"):
        decode_raw("mono8", width, height, 4, 0, bytes(16))


def test_step_smaller_than_row_is_refused() -> None:
    with pytest.raises(ImageDecodeError, match=r"step 20 is smaller than .*10\*3 = 30"):
        decode_raw("bgr8", 10, 2, 20, 0, bytes(60))


@pytest.mark.parametrize("encoding", YUV)
def test_odd_width_yuv422_is_refused(encoding: str) -> None:
    with pytest.raises(ImageDecodeError, match="even width, got 5"):
        decode_raw(encoding, 5, 2, 10, 0, bytes(20))
    with pytest.raises(ValueError, match="even width"):
        encode_raw(np.zeros((2, 5, 3), np.uint8), encoding)


def test_non_buffer_data_is_refused() -> None:
    with pytest.raises(ImageDecodeError, match="not a byte buffer"):
        decode_raw("mono8", 2, 2, 2, 0, object())


def test_encode_raw_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"RGB uint8 \(H, W, 3\)"):
        encode_raw(np.zeros((4, 4), np.uint8), "rgb8")
    with pytest.raises(ValueError, match="RGB uint8"):
        encode_raw(np.zeros((4, 4, 3), np.float32), "rgb8")
    with pytest.raises(ImageDecodeError, match="unsupported image encoding"):
        encode_raw(np.zeros((4, 4, 3), np.uint8), "hsv8")
    with pytest.raises(ValueError, match="row_padding"):
        encode_raw(np.zeros((4, 4, 3), np.uint8), "rgb8", row_padding=-1)


# --------------------------------------------------------------------------- compressed
def test_jpeg_round_trip_is_close(rng: np.random.Generator) -> None:
    rgb = smooth_frame()
    data, fmt = encode_compressed(rgb, "jpeg", quality=95)
    assert fmt == "rgb8; jpeg compressed bgr8" and data[:2] == b"\xff\xd8"
    out = decode_compressed(fmt, data)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    err = np.abs(out.astype(int) - rgb)
    assert err.mean() < 2.0 and err.max() <= 20
    # Channel order is right: a red frame stays red.
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 220
    red_out = decode_compressed(*reversed(encode_compressed(red, "jpg")))
    assert red_out[..., 0].mean() > 200 and red_out[..., 2].mean() < 20


def test_png_round_trip_is_exact(rng: np.random.Generator) -> None:
    rgb = textured_frame(rng)
    data, fmt = encode_compressed(rgb, "png")
    assert fmt == "rgb8; png compressed bgr8" and data[:4] == b"\x89PNG"
    np.testing.assert_array_equal(decode_compressed(fmt, data), rgb)
    np.testing.assert_array_equal(decode_compressed("png", array.array("B", data)), rgb)


def test_mono_compressed_round_trips(rng: np.random.Generator) -> None:
    grey = rng.integers(0, 256, (12, 9), dtype=np.uint8)
    data, fmt = encode_compressed(grey, "png")
    assert fmt == "mono8; png compressed mono8"
    np.testing.assert_array_equal(decode_compressed(fmt, data), np.dstack([grey] * 3))
    data, fmt = encode_compressed(grey, "jpeg")
    assert fmt == "mono8; jpeg compressed mono8"
    assert decode_compressed(fmt, data).shape == (12, 9, 3)


def test_16_bit_png_is_scaled_like_mono16() -> None:
    grey16 = (np.arange(48, dtype=np.uint16) * 1365).reshape(6, 8)
    ok, png = cv2.imencode(".png", grey16)
    assert ok
    out = decode_compressed("mono16; png compressed mono16", png.tobytes())
    np.testing.assert_array_equal(out[..., 2], np.rint(grey16 / 257.0).astype(np.uint8))


def test_png_with_alpha_drops_it(rng: np.random.Generator) -> None:
    bgra = rng.integers(0, 256, (6, 7, 4), dtype=np.uint8)
    ok, png = cv2.imencode(".png", bgra)
    assert ok
    np.testing.assert_array_equal(decode_compressed("bgra8; png compressed bgra8", png),
                                  cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGB))


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_corrupt_compressed_data_raises(fmt: str) -> None:
    data, fmt_str = encode_compressed(smooth_frame(), fmt)
    corrupt = data[:20] + b"\x00" * 200
    with pytest.raises(ImageDecodeError, match="corrupt"):
        decode_compressed(fmt_str, corrupt)
    with pytest.raises(ImageDecodeError, match="corrupt"):
        decode_compressed(fmt_str, data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="no data"):
        decode_compressed(fmt_str, b"")


def test_corrupt_jpeg_and_png_say_so_and_print_nothing() -> None:
    """Every corrupt file raises ImageDecodeError and nothing reaches the process's stderr
    (OpenCV's libjpeg/libpng print "Corrupt JPEG data ..." there, past logging)."""
    code = r'''
import numpy as np, sys
from seg_perception.runtime.image_codec import (decode_compressed, encode_compressed,
                                                ImageDecodeError)
y, x = np.mgrid[0:120, 0:160]
rgb = np.dstack([x % 256, y * 2 % 256, (x + y) % 256]).astype(np.uint8)
results = []
for fmt in ("jpeg", "png"):
    data, f = encode_compressed(rgb, fmt, 90)
    cases = [data[: len(data) // 2], data[:20] + b"\x00" * 200]
    mid = bytearray(data); mid[len(data) // 3: len(data) // 3 + 50] = b"\xff" * 50
    cases.append(bytes(mid))
    mid2 = bytearray(data); mid2[len(data) // 2: len(data) // 2 + 10] = b"\x00" * 10
    cases.append(bytes(mid2))
    for case in cases:
        try:
            decode_compressed(f, case)
            results.append("decoded")
        except ImageDecodeError as e:
            results.append(e.kind)
print(results)
'''
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True, cwd=REPO)
    assert done.stderr == "", done.stderr
    results = eval(done.stdout)  # our own subprocess's output
    assert results.count("compressed.corrupt") >= 5 and set(results) <= {
        "compressed.corrupt", "decoded"}, results


def test_pillow_and_opencv_decode_jpeg_alike() -> None:
    files = sorted(BDD.glob("*.jpg"))[:3] if BDD.is_dir() else []
    if not files:
        data, _ = encode_compressed(gradient_frame(360, 480), "jpeg", 90)
        blobs = [data]
    else:
        blobs = [f.read_bytes() for f in files]
    for blob in blobs:
        ref = cv2.cvtColor(cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR),
                           cv2.COLOR_BGR2RGB)
        out = decode_compressed("rgb8; jpeg compressed bgr8", blob)
        assert out.flags.writeable and out.dtype == np.uint8
        assert np.abs(out.astype(int) - ref).max() <= 1


def test_unsupported_compressed_formats_raise() -> None:
    with pytest.raises(ImageDecodeError, match="compressedDepth"):
        decode_compressed("16UC1; compressedDepth png", b"\x00" * 64)
    with pytest.raises(ImageDecodeError, match="expected jpeg or png"):
        decode_compressed("rgb8; theora", b"\x00" * 64)
    with pytest.raises(ValueError, match="'jpeg' or 'png'"):
        encode_compressed(smooth_frame(), "webp")
    with pytest.raises(ValueError, match="uint8"):
        encode_compressed(np.zeros((4, 4, 3), np.float32))


def test_module_stays_ros_free() -> None:
    """Importing the codec loads no ROS package (it must work without a ROS install)."""
    code = ("import sys, seg_perception.runtime.image_codec; "
            "bad = [m for m in ('rclpy', 'sensor_msgs', 'cv_bridge', 'std_msgs') "
            "if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False, cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 0, done.stdout + done.stderr
