"""Issue 14 regressions on the core: decoded-size limits, warning kinds and a bounded limiter,
no decoder noise past logging, quiet camera maths on extreme intrinsics, the log bridge, and
bench's refusal of nonsense sizes."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
import tracemalloc
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from shared_data import BDD, REPO

from seg_perception.runtime.image_codec import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    compressed_header,
    decode_compressed,
    decode_raw,
    encode_compressed,
    validate_raw,
)
from seg_perception.runtime.stats import ChangeMonitor, WarningLimiter, problem_kind


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


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


def smooth(h: int = 60, w: int = 80) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.dstack([x * 3 % 256, y * 4 % 256, (x + y) % 256]).astype(np.uint8)


# --- item 2: decoded size is limited, from the header, before decoding -----------------------

def test_png_bomb_is_refused_from_its_header_without_decoding() -> None:
    # The case: a small PNG claiming 16000x16000 (256 M pixels, 768 MB as RGB).
    rows = zlib.compress(b"\x00" * (16000 * 3 + 1) * 64, 9)  # a real start of image data
    bomb = png_claiming(16000, 16000, rows)
    assert len(bomb) < 300_000
    header = compressed_header(bomb)
    assert (header.codec, header.width, header.height) == ("png", 16000, 16000)
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(ImageDecodeError, match=r"16000x16000 = 256\.0 M pixels exceeds the "
                       r"limit of 40\.0 M pixels") as info:
        decode_compressed("rgb8; png compressed bgr8", bomb)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert info.value.kind == "size.too_large"
    assert peak < 20_000_000 and elapsed < 1.0, (peak, elapsed)


def test_jpeg_size_comes_from_its_frame_header() -> None:
    data, fmt = encode_compressed(smooth(), "jpeg")
    assert compressed_header(data).width == 80 and compressed_header(data).height == 60
    huge = jpeg_with_size(data, 65000, 65000)
    with pytest.raises(ImageDecodeError, match=r"jpeg image of 65000x65000 .* exceeds"):
        decode_compressed(fmt, huge)
    # Progressive JPEG (SOF2) after a large APP segment is read too.
    _, prog = cv2.imencode(".jpg", smooth(), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    prog = prog.tobytes()
    app = b"\xff\xe5" + struct.pack(">H", 60002) + b"x" * 60000
    prog = prog[:2] + app + prog[2:]
    h = compressed_header(prog)
    assert (h.width, h.height) == (80, 60)
    assert decode_compressed("jpeg", prog).shape == (60, 80, 3)


def test_limit_is_the_callers_to_change() -> None:
    rgb = smooth()
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
    ok, bmp = cv2.imencode(".bmp", cv2.cvtColor(smooth(), cv2.COLOR_RGB2BGR))
    assert ok and compressed_header(bmp) is None
    np.testing.assert_array_equal(decode_compressed("jpeg", bmp), smooth())
    with pytest.raises(ImageDecodeError, match="exceeds the limit of 100 pixels"):
        decode_compressed("jpeg", bmp, max_pixels=100)


def test_opencv_pixel_cap_is_set_for_our_processes() -> None:
    code = ("import seg_perception, os, cv2, numpy as np; "
            "print(os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True, cwd=REPO, env={"PATH": "/usr/bin:/bin"})
    assert int(done.stdout) == 1 << 27


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
        data, _ = encode_compressed(smooth(360, 480), "jpeg", 90)
        blobs = [data]
    else:
        blobs = [f.read_bytes() for f in files]
    for blob in blobs:
        ref = cv2.cvtColor(cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR),
                           cv2.COLOR_BGR2RGB)
        out = decode_compressed("rgb8; jpeg compressed bgr8", blob)
        assert out.flags.writeable and out.dtype == np.uint8
        assert np.abs(out.astype(int) - ref).max() <= 1


# --- item 4: warnings keyed on the kind of problem, bounded ----------------------------------

def test_375_distinct_encodings_give_a_handful_of_warnings() -> None:
    clock = FakeClock()
    limiter = WarningLimiter(5.0, clock=clock)
    rng = np.random.default_rng(3)
    shown = 0
    kinds = set()
    for _ in range(375):
        enc = "".join(rng.choice(list("abcdefxyz0123456789_"), rng.integers(3, 12)))
        try:
            decode_raw(enc, 4, 4, 12, 0, bytes(48))
        except ImageDecodeError as exc:
            key = problem_kind(exc)
        kinds.add(key)
        # text-only messages (a cv_bridge error, a message without kind) reduce alike
        kinds.add(problem_kind(f"unsupported image encoding '{enc}'; supported: rgb8, bgr8"))
        if limiter.check(key) is not None:
            shown += 1
        clock.t += 0.04  # 375 frames in 15 s
    assert len(kinds) == 2, kinds
    assert shown == 3  # once per 5 s
    assert len(limiter) == 1


def test_problem_kind_drops_values() -> None:
    same = [
        "rgb8 image data has 100 bytes, fewer than step*height = 30*4 = 120",
        "bgra8 image data has 7 bytes, fewer than step*height = 3*4 = 12",
    ]
    assert len({problem_kind(t) for t in same}) == 1
    assert problem_kind("cv_bridge cannot convert [yuv9]: bad") == \
        problem_kind("cv_bridge cannot convert [x]: bad")
    assert problem_kind(ValueError("camera focal length fx=0.0, fy=12 must be > 0")) == \
        problem_kind(ValueError("camera focal length fx=-3, fy=0.5 must be > 0"))
    assert problem_kind(ImageDecodeError("whatever 123", kind="data.short")) == \
        "ImageDecodeError:data.short"
    assert len(problem_kind("x " * 10_000)) <= 80


def test_limiter_memory_is_bounded_after_200k_distinct_keys() -> None:
    clock = FakeClock()
    limiter = WarningLimiter(5.0, clock=clock, max_keys=256)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(200_000):
        limiter.check(f"decode.unsupported image encoding 'enc{i}'")
        clock.t += 0.001
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(limiter) == 256
    assert used < 1_000_000, used  # the issue measured 40 MB for the old limiter
    # Over all keys at most max_per_period warnings per period came through.
    clock2 = FakeClock()
    capped = WarningLimiter(5.0, clock=clock2, max_per_period=20)
    assert sum(capped.check(f"k{i}") is not None for i in range(1000)) == 20
    clock2.t += 5.0
    assert capped.check("k5") == 0 and capped.check("k999") == 1  # held back: told next time


def test_limiter_counts_suppressed_per_key() -> None:
    clock = FakeClock()
    limiter = WarningLimiter(5.0, clock=clock)
    assert limiter.check("a") == 0
    assert limiter.check("a") is None and limiter.check("a") is None
    assert limiter.check("b") == 0
    clock.t += 5.0
    assert limiter.check("a") == 2 and limiter.check("b") == 0


def test_change_monitor_warns_once_when_camera_models_alternate() -> None:
    clock = FakeClock()
    mon = ChangeMonitor(max_changes=4, window_s=10.0, clock=clock)
    assert mon.update("A") and not mon.update("A")
    warnings_given = 0
    for i in range(378):  # two CameraInfos alternating for 30 s
        mon.update("B" if i % 2 else "A")
        warnings_given += mon.take_warning()
        clock.t += 30.0 / 378
    assert warnings_given == 1 and mon.total_changes >= 377
    clock.t += 11.0  # quiet for a window: a later episode warns again
    mon.update("A")
    for i in range(6):
        mon.update("B" if i % 2 == 0 else "A")
    assert mon.take_warning()
    steady = ChangeMonitor(clock=clock)
    for i in range(20):  # a recalibration now and then is not flapping
        steady.update(i // 10)
        clock.t += 1.0
    assert not steady.take_warning()


# --- item 6: numpy on extreme K/D: refused or quiet, never RuntimeWarning noise ---------------

@pytest.mark.parametrize(("k", "d", "model", "size"), [
    ([1e308, 0, 320, 0, 1e308, 240, 0, 0, 1], [0.0] * 5, "plumb_bob", (640, 480)),
    ([5e-324, 0, 320, 0, 5e-324, 240, 0, 0, 1], [0.0] * 5, "plumb_bob", (640, 480)),
    ([500, 0, 320, 0, 500, 240, 0, 0, 1], [1e308, 1e308, 0, 0, 1e308], "plumb_bob", (640, 480)),
    ([500, 0, 320, 0, 500, 240, 0, 0, 1], [1e200] * 8, "rational_polynomial", (640, 480)),
    ([500, 0, 320, 0, 500, 240, 0, 0, 1], [1e308] * 4, "equidistant", (640, 480)),
    ([500, 1e308, 320, 0, 500, 240, 0, 0, 1], [0.0] * 5, "plumb_bob", (640, 480)),
    ([500, 0, 1e308, 0, 500, 240, 0, 0, 1], [0.0] * 5, "plumb_bob", (640, 480)),
    ([500, 0, 320, 0, 500, 240, 0, 0, 1], [0.0] * 5, "plumb_bob", (10**9, 10**9)),
])
def test_absurd_intrinsics_are_refused_with_a_reason(k: list, d: list, model: str,
                                                     size: tuple) -> None:
    from seg_perception.runtime.geometry import CameraModel

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any RuntimeWarning fails the test
        with pytest.raises(ValueError, match=r"camera|distortion"):
            CameraModel(size[0], size[1], k, d, model).validate()


def test_extreme_but_accepted_intrinsics_raise_no_runtime_warnings() -> None:
    from seg_perception.runtime.geometry import (
        CameraModel,
        CameraMounting,
        DrivableAreaMapper,
        GridSpec,
    )

    rng = np.random.default_rng(0)
    built = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(60):
            fx, fy = rng.choice([1e-3, 1.0, 500.0, 1e7], 2)
            cx, cy, skew = rng.choice([0.0, 1e-3, 320.0, 1e7, -1e7], 3)
            model = str(rng.choice(["plumb_bob", "rational_polynomial", "equidistant"]))
            n = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}[model]
            d = rng.choice([0.0, 1e6, -1e6, 1.0, -1.0, 1e-12], n)
            w, h = (int(v) for v in rng.choice([1, 2, 640, 131072], 2))
            mapper = DrivableAreaMapper(GridSpec(0.5, 0.0, 30.0, -8.0, 8.0),
                                        CameraMounting(z=1.5, pitch=0.1))
            mapper.set_camera(CameraModel(w, h, [fx, skew, cx, 0, fy, cy, 0, 0, 1], d, model))
            mapper.process(np.ones((48, 64), np.uint8))
            built += 1
    assert built == 60


# --- item 6: the core's log lines go through the node's logger --------------------------------

# Run in a fresh interpreter, as in a node process: under pytest, launch's logging module
# (imported by the launch tests' plugins) makes new loggers LaunchLoggers that do not propagate.
_BRIDGE_FAKE = r"""
import logging, warnings
from seg_perception.runtime.geometry import (CameraModel, CameraMounting, DrivableAreaMapper,
                                             GridSpec)
from seg_perception.ros.log_bridge import route_to, unroute

class Fake:
    def __init__(self):
        self.lines = []
    def __getattr__(self, level):
        if level.startswith("_") or level == "get_effective_level":
            raise AttributeError(level)
        return lambda text: self.lines.append((level, text))

fake = Fake()
handler = route_to(fake, capture_warnings=True)
for _ in range(5):  # a camera looking at the sky: "sees none" at each rebuild
    mapper = DrivableAreaMapper(GridSpec(), CameraMounting(z=1.5, pitch=-1.2))
    mapper.set_camera(CameraModel.from_fov(64, 48, 60.0))
logging.getLogger("seg_perception.runtime.engine").info("model loaded")
logging.getLogger("seg_perception.runtime.engine").debug("not shown at INFO")
warnings.warn("something odd", RuntimeWarning, stacklevel=1)
unroute(handler)
assert logging.getLogger("seg_perception").propagate
print(repr(fake.lines))
"""

_BRIDGE_RCLPY = r"""
import logging, rclpy
from seg_perception.ros.log_bridge import route_to, unroute
rclpy.init()
node = rclpy.create_node("harden_log_bridge")
handler = route_to(node.get_logger(), capture_warnings=False)
logging.getLogger("seg_perception.runtime.geometry.mapper").warning(
    "the camera sees none of the grid's cells (test)")
unroute(handler)
node.destroy_node()
rclpy.shutdown()
"""


def test_log_bridge_sends_core_records_with_severity_and_rate_limit() -> None:
    pytest.importorskip("rclpy")
    done = subprocess.run([sys.executable, "-c", _BRIDGE_FAKE], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # nothing printed past the bridge (no lastResort lines)
    lines = eval(done.stdout)  # our own subprocess's output
    sees = [(lvl, t) for lvl, t in lines if "sees none" in t]
    assert len(sees) == 1 and sees[0][0] == "warning"  # five occurrences, one line
    assert sees[0][1].startswith("[runtime.geometry.mapper] the camera sees none")
    assert ("info", "[runtime.engine] model loaded") in lines
    assert not any("not shown" in t for _, t in lines)
    assert any(lvl == "warning" and "something odd" in t for lvl, t in lines)


def test_log_bridge_with_a_real_rclpy_logger() -> None:
    """Through a node's logger the line gets severity and node name (rcutils, on stderr)."""
    pytest.importorskip("rclpy")
    done = subprocess.run([sys.executable, "-c", _BRIDGE_RCLPY], capture_output=True,
                          text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "RCUTILS_COLORIZED_OUTPUT": "0"})
    assert done.returncode == 0, done.stderr
    line = next(ln for ln in done.stderr.splitlines() if "sees none" in ln)
    assert "[WARN]" in line and "[harden_log_bridge]" in line, line


# --- item 7: bench refuses nonsense in one line -----------------------------------------------

@pytest.mark.parametrize("args", [["--width", "-5"], ["--height", "0"], ["--width", "abc"],
                                  ["--width", "100000", "--height", "100000"],
                                  ["--frames", "0"], ["--warmup", "-1"], ["--threads", "-3"],
                                  ["--peak-size", "0"], ["--camera", "0x5"],
                                  ["--camera", "99999x10"]])
def test_bench_nonsense_sizes_print_one_line_and_exit_2(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "seg_perception", "bench", *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and "error: argument" in lines[0], lines
    assert "Traceback" not in done.stderr


def test_module_imports_stay_ros_free() -> None:
    code = ("import sys, seg_perception.runtime.stats, seg_perception.offline.mcap_prefix, "
            "seg_perception.runtime.image_codec; "
            "bad = [m for m in ('rclpy', 'sensor_msgs') if m in sys.modules]; "
            "sys.exit(bool(bad))")
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(REPO), timeout=60).returncode \
        == 0
