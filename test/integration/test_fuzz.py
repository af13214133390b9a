"""Fuzz: a seeded stream of malformed Image, CompressedImage and CameraInfo messages (and, in
a test of its own, absurd parameter values) against running ``seg_node`` processes over DDS.

Asserts what the node promises for bad input: it stays alive, it keeps labelling the good
frames interleaved with the bad ones, it prints no traceback and no decoder noise past its
logger, and its memory stays bounded (no decompression bomb is decoded).
"""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import OccupancyGrid
from ros_harness import NodeProcess, Probe
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from seg_perception.runtime.image_codec import SUPPORTED_ENCODINGS, encode_compressed, encode_raw

pytestmark = pytest.mark.integration

SEED = 14
W, H = 160, 120
# Camera pose from the camera.* parameters; the camera_info of the nearest stamp (the fuzz
# sends CameraInfos stamped apart from the frames).
NODE_PARAMS = {"model": "tiny_seg", "device": "cpu", "use_tf": False,
               "camera_info_tolerance": 3600.0}
RSS_GROWTH_MB = 250  # a 16000x16000 decode alone would take 768 MB
NOISE = ("Traceback", "Corrupt JPEG data", "libpng", "libjpeg", "RuntimeWarning",
         "Premature end of JPEG")


# --- the generator ----------------------------------------------------------------------------

def _frame(i: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[: H // 2] = (110 + i % 50, 150, 210)
    img[H // 2:] = (90, 90, 95)
    cv2.rectangle(img, (10 + 3 * (i % 30), 40), (50 + 3 * (i % 30), 70), (200, 40, 40), -1)
    return img


def _header(stamp: int) -> Header:
    return Header(stamp=Time(sec=1_700_000_000 + stamp // 1000, nanosec=stamp % 1000 * 1000),
                  frame_id="fuzz_optical")


def good_image(stamp: int) -> Image:
    data, step = encode_raw(_frame(stamp), "rgb8")
    return Image(header=_header(stamp), height=H, width=W, encoding="rgb8", step=step,
                 data=data)


def good_compressed(stamp: int) -> CompressedImage:
    data, fmt = encode_compressed(_frame(stamp), "jpeg", 85)
    return CompressedImage(header=_header(stamp), format=fmt, data=data)


def _text(rng: np.random.Generator, n: int) -> str:
    alphabet = [*"abcdefghijklmnopqrstuvwxyz0123456789_;:/ -.", "ü", "é", "字"]
    return "".join(rng.choice(alphabet, int(n)))


def bad_image(rng: np.random.Generator, stamp: int) -> tuple[str, Image]:
    """One malformed raw Image (16 kinds)."""
    enc = str(rng.choice(SUPPORTED_ENCODINGS))
    w, h = int(rng.integers(1, 300)), int(rng.integers(1, 300))
    msg = Image(header=_header(stamp), height=h, width=w, encoding=enc, step=w * 3)
    kind = str(rng.choice([
        "encoding", "long_encoding", "empty_encoding", "short", "zero_w", "zero_h", "step",
        "odd_yuv", "huge_claim", "max_uint", "step_overflow", "random_bytes", "mono16_odd",
        "bayer_1px", "big_endian_junk", "empty_data"]))
    if kind == "encoding":
        msg.encoding = _text(rng, rng.integers(1, 16))
    elif kind == "long_encoding":
        msg.encoding = _text(rng, 2000)
    elif kind == "empty_encoding":
        msg.encoding = ""
    elif kind == "short":
        msg.encoding, msg.step = "rgb8", w * 3
        msg.data = bytes(int(rng.integers(0, w * 3 * h)))
    elif kind == "zero_w":
        msg.width = 0
    elif kind == "zero_h":
        msg.height = 0
    elif kind == "step":
        msg.encoding, msg.step = "bgr8", int(rng.integers(0, w * 3))
        msg.data = bytes(w * 3 * h)
    elif kind == "odd_yuv":
        msg.encoding, msg.width = "yuv422", w | 1
        msg.step = msg.width * 2
        msg.data = bytes(msg.step * h)
    elif kind == "huge_claim":  # 16000x16000 claimed with a few bytes
        msg.encoding, msg.width, msg.height, msg.step = "rgb8", 16000, 16000, 48000
        msg.data = bytes(64)
    elif kind == "max_uint":
        msg.width = msg.height = msg.step = 2**32 - 1
    elif kind == "step_overflow":
        msg.encoding, msg.step = "mono8", 2**32 - 1
        msg.data = bytes(w * h)
    elif kind == "random_bytes":  # right length, noise: decodes to noise, must not crash
        msg.encoding = "rgb8"
        msg.data = rng.integers(0, 256, w * 3 * h, dtype=np.uint8).tobytes()
    elif kind == "mono16_odd":
        msg.encoding, msg.step = "mono16", w * 2 + 1
        msg.data = bytes(msg.step * h)
    elif kind == "bayer_1px":
        msg.encoding, msg.width, msg.height, msg.step = "bayer_rggb8", 1, 1, 1
        msg.data = bytes(1)
    elif kind == "big_endian_junk":
        msg.encoding, msg.is_bigendian, msg.step = "mono16", 255, w * 2
        msg.data = bytes(w * 2 * (h - 1))
    else:
        msg.encoding = "rgb8"
        msg.data = b""
    return kind, msg


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    idat = zlib.compress(b"\x00" * (width * 3 + 1) * 8)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                             0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def bad_compressed(rng: np.random.Generator, stamp: int) -> tuple[str, CompressedImage]:
    """One malformed CompressedImage (12 kinds)."""
    codec = str(rng.choice(["jpeg", "png"]))
    data, fmt = encode_compressed(_frame(stamp), codec, 85)
    kind = str(rng.choice([
        "truncated", "garbage_after_header", "flipped", "zeroed", "random", "empty",
        "png_bomb", "jpeg_sof_huge", "format_junk", "depth", "wrong_format", "tiny"]))
    if kind == "truncated":
        data = data[: int(rng.integers(1, len(data)))]
    elif kind == "garbage_after_header":
        data = data[:20] + rng.integers(0, 256, 300, dtype=np.uint8).tobytes()
    elif kind == "flipped":
        buf = bytearray(data)
        for i in rng.integers(0, len(buf), 40):
            buf[i] ^= 0xFF
        data = bytes(buf)
    elif kind == "zeroed":
        buf = bytearray(data)
        i = int(rng.integers(len(buf) // 4, len(buf) // 2))
        buf[i:i + 64] = bytes(64)
        data = bytes(buf)
    elif kind == "random":
        data = rng.integers(0, 256, int(rng.integers(1, 5000)), dtype=np.uint8).tobytes()
    elif kind == "empty":
        data = b""
    elif kind == "png_bomb":
        data, fmt = _png_claiming(16000, 16000), "rgb8; png compressed bgr8"
    elif kind == "jpeg_sof_huge":
        data, fmt = encode_compressed(_frame(stamp), "jpeg", 85)
        i = data.index(b"\xff\xc0")
        data = data[: i + 5] + struct.pack(">HH", 65000, 65000) + data[i + 9:]
    elif kind == "format_junk":
        fmt = _text(rng, rng.integers(0, 40))
    elif kind == "depth":
        fmt = "16UC1; compressedDepth png"
    elif kind == "wrong_format":
        fmt = "rgb8; png compressed bgr8" if codec == "jpeg" else "rgb8; jpeg compressed bgr8"
        data = data[: len(data) * 2 // 3]
    else:
        data = data[:3]
    return kind, CompressedImage(header=_header(stamp), format=fmt, data=data)


def bad_camera_info(rng: np.random.Generator, stamp: int) -> tuple[str, CameraInfo]:
    """One absurd CameraInfo (10 kinds)."""
    k = [200.0, 0.0, W / 2, 0.0, 200.0, H / 2, 0.0, 0.0, 1.0]
    info = CameraInfo(header=_header(stamp), width=W, height=H, k=k, d=[0.0] * 5,
                      distortion_model="plumb_bob")
    kind = str(rng.choice(["k_nan", "k_inf", "k_huge", "k_zero", "k_negative", "d_len",
                           "d_huge", "model", "size", "size_zero"]))
    if kind == "k_nan":
        k[int(rng.integers(0, 9))] = float("nan")
    elif kind == "k_inf":
        k[int(rng.integers(0, 9))] = float(rng.choice([np.inf, -np.inf]))
    elif kind == "k_huge":
        k[int(rng.choice([0, 1, 2, 4, 5]))] = float(rng.choice([1e308, -1e308, 1e30]))
    elif kind == "k_zero":
        k = [0.0] * 9
    elif kind == "k_negative":
        k[0] = k[4] = -200.0
    elif kind == "d_len":
        info.d = [0.1] * int(rng.choice([1, 3, 6, 7, 100]))
    elif kind == "d_huge":
        info.d = [float(rng.choice([1e308, -1e308, np.nan, np.inf])) for _ in range(5)]
    elif kind == "model":
        info.distortion_model = _text(rng, rng.integers(0, 30))
        info.d = [0.1, 0.01, 0.0, 0.0, 0.0]
    elif kind == "size":
        info.width, info.height = 2**32 - 1, 2**32 - 1
    else:
        info.width = 0
    info.k = k
    return kind, info


def fuzz_sequence(n_bad: int, good_every: int, seed: int = SEED,
                  compressed: bool = False) -> Iterator[tuple[str, Any]]:
    """``n_bad`` malformed images (and CameraInfos for raw) with a good frame every
    ``good_every`` messages; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    stamp = 0
    for i in range(n_bad):
        stamp += 1
        if i % good_every == 0:
            yield "good", good_compressed(stamp) if compressed else good_image(stamp)
            stamp += 1
        if compressed:
            yield bad_compressed(rng, stamp)
        elif i % 4 == 3:
            yield bad_camera_info(rng, stamp)
        else:
            yield bad_image(rng, stamp)


def test_generator_is_seeded_and_covers_the_kinds() -> None:
    a = [k for k, _ in fuzz_sequence(300, 6)]
    b = [k for k, _ in fuzz_sequence(300, 6)]
    assert a == b
    assert len(set(a)) >= 24  # 16 image + 10 camera_info kinds, minus chance
    c = {k for k, _ in fuzz_sequence(200, 6, compressed=True)}
    assert len(c) >= 12


# --- the nodes --------------------------------------------------------------------------------

class RssSampler:
    """Samples a process's VmRSS every 50 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.samples.append(int(line.split()[1]) / 1024.0)
            except OSError:
                return

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(timeout=2)
        return max(self.samples) if self.samples else float("nan")


@pytest.fixture(scope="module")
def probe() -> Iterator[Probe]:
    p = Probe("seg_fuzz_probe")
    yield p
    p.close()
    rclpy.try_shutdown()


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory, probe: Probe) -> Iterator[dict]:
    """A raw and a compressed seg_node, started together."""
    tmp = tmp_path_factory.mktemp("fuzz")
    started = {
        "/fz_raw": NodeProcess(tmp / "raw.log", NODE_PARAMS, namespace="/fz_raw"),
        "/fz_jpeg": NodeProcess(tmp / "jpeg.log", {**NODE_PARAMS,
                                                   "input_transport": "compressed"},
                                namespace="/fz_jpeg"),
    }
    probe.subscribe(DiagnosticArray, "/diagnostics")
    for ns in started:
        probe.subscribe(Image, f"{ns}/labels")
    probe.subscribe(OccupancyGrid, "/fz_raw/drivable/grid")
    try:
        for node in started.values():
            node.wait_for_log("ready: listening on", timeout=180)
        yield started
    finally:
        for node in started.values():
            node.stop()


def _labelled(probe: Probe, ns: str) -> set[tuple[int, int]]:
    return {(m.header.stamp.sec, m.header.stamp.nanosec) for m in probe.messages(f"{ns}/labels")}


def _key(msg: Any) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def _diag(probe: Probe, ns: str) -> dict[str, str]:
    for m in reversed(probe.messages("/diagnostics")):
        for status in m.status:
            if status.name.startswith(f"{ns}/seg_node"):
                return {kv.key: kv.value for kv in status.values}
    return {}


def _warm(probe: Probe, ns: str, pub: Any, make: Any, stamp: int = 10**6) -> None:
    """Send a good frame of a stamp not sent before until its labels come: the node labels,
    and (outputs go out in order) has handled every frame sent before it."""
    msg = make(stamp)
    probe.wait_until(lambda: _key(msg) in _labelled(probe, ns), timeout=90,
                     what=f"{ns} labelling", tick=lambda: pub.publish(msg), period=0.5)


def _wait_bad(probe: Probe, ns: str, least: int) -> dict[str, str]:
    """The node's diagnostics once they count ``least`` refused frames (published once a
    second: the last storm frames may not be in the report received first)."""
    probe.wait_until(lambda: int(_diag(probe, ns).get("frames_bad", 0)) >= least, timeout=60,
                     what=f"{ns} diagnostics counting >= {least} bad frames")
    return _diag(probe, ns)


def _run_fuzz(probe: Probe, node: NodeProcess, ns: str, seq: list[tuple[str, Any]],
              pubs: dict[type, Any], make: Any, rate_hz: float = 60.0
              ) -> tuple[list[Any], float, float]:
    base = max(_rss_now(node.proc.pid), 1.0)
    sampler = RssSampler(node.proc.pid)
    goods = []
    t0 = time.monotonic()
    for i, (kind, msg) in enumerate(seq):
        if kind == "good":
            goods.append(msg)
        pubs[type(msg)].publish(msg)
        delay = t0 + (i + 1) / rate_hz - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        assert node.alive(), f"{ns} died after {kind!r} (#{i}):\n{node.log()[-3000:]}"
    # The storm is through once a good frame sent after it is labelled.
    _warm(probe, ns, pubs[type(make(0))], make, stamp=10**6 + 1)
    return goods, base, sampler.stop()


def _rss_now(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _check_after(probe: Probe, node: NodeProcess, ns: str, goods: list[Any], base: float,
                 peak: float, pub: Any, make: Any) -> None:
    assert node.alive(), node.log()[-3000:]
    labelled = _labelled(probe, ns)
    got = [_key(g) in labelled for g in goods]
    # Good frames interleaved with the bad ones were labelled, early, midway and late
    # (the latest-frame slot may replace some: counted as dropped, not asked for here).
    thirds = np.array_split(np.array(got), 3)
    assert all(t.any() for t in thirds), got
    assert sum(got) >= len(got) // 3, f"{sum(got)} of {len(got)} good frames labelled"
    # Still labelling after the storm.
    _warm(probe, ns, pub, make, stamp=10**6 + 2)
    assert peak - base < RSS_GROWTH_MB, f"RSS {base:.0f} -> peak {peak:.0f} MB"
    log = node.log()
    for noise in NOISE:
        assert noise not in log, f"{noise!r} in the node log:\n{log[-3000:]}"


def test_fuzz_raw_images_and_camera_infos(probe: Probe, nodes: dict) -> None:
    ns = "/fz_raw"
    node = nodes[ns]
    pubs = {Image: probe.publisher(Image, f"{ns}/image"),
            CameraInfo: probe.publisher(CameraInfo, f"{ns}/camera_info")}
    good_info = CameraInfo(header=_header(0), width=W, height=H, distortion_model="plumb_bob",
                           k=[200.0, 0.0, W / 2, 0.0, 200.0, H / 2, 0.0, 0.0, 1.0],
                           d=[0.0] * 5)
    pubs[CameraInfo].publish(good_info)
    _warm(probe, ns, pubs[Image], good_image)
    seq = list(fuzz_sequence(320, 6))
    seq[len(seq) // 2: len(seq) // 2] = [("good_info", good_info)]  # the grid keeps going
    goods, base, peak = _run_fuzz(probe, node, ns, seq, pubs, good_image)
    _check_after(probe, node, ns, goods, base, peak, pubs[Image], good_image)
    diag = _wait_bad(probe, ns, 100)
    assert int(diag.get("frames_bad", 0)) >= 100, diag  # the bad ones reached it, were refused
    assert probe.messages(f"{ns}/drivable/grid")  # the grid survived the CameraInfo storm


def test_fuzz_compressed_images(probe: Probe, nodes: dict) -> None:
    ns = "/fz_jpeg"
    node = nodes[ns]
    pubs = {CompressedImage: probe.publisher(CompressedImage, f"{ns}/image/compressed")}
    _warm(probe, ns, pubs[CompressedImage], good_compressed)
    seq = list(fuzz_sequence(240, 5, compressed=True))
    goods, base, peak = _run_fuzz(probe, node, ns, seq, pubs, good_compressed, rate_hz=40.0)
    _check_after(probe, node, ns, goods, base, peak, pubs[CompressedImage], good_compressed)
    assert int(_wait_bad(probe, ns, 20).get("frames_bad", 0)) >= 20


# --- parameter values -----------------------------------------------------------------------

ABSURD = [float("inf"), float("-inf"), float("nan"), -1e308, 1e308, 0.0, -0.0, 5e-324,
          2**62, -2**62, 0, -1, "x" * 300, "", True, [1.0, 2.0], ["a"]]


def test_fuzz_parameter_values(probe: Probe, nodes: dict) -> None:
    """Every parameter the node has, set to absurd values (inf, nan, +-1e308, huge ints,
    wrong types) while frames flow: each set is refused with a reason or applied, and the
    node lives on and keeps labelling."""
    from rcl_interfaces.msg import ParameterType
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    ns = "/fz_raw"
    node = nodes[ns]
    pub = probe.publisher(Image, f"{ns}/image")
    _warm(probe, ns, pub, good_image)
    client = AsyncParameterClient(probe.node, f"{ns}/seg_node")
    assert client.wait_for_services(timeout_sec=30)

    def call(future: Any, what: str) -> Any:
        probe.wait_until(lambda: future.done() or not node.alive(), timeout=30, what=what)
        assert node.alive(), f"seg_node died on {what}:\n{node.log()[-3000:]}"
        return future.result()

    names = [n for n in call(client.list_parameters(), "list").result.names
             if n not in ("use_sim_time",) and not n.startswith("qos_overrides")]
    values = call(client.get_parameters(names), "get").values
    numeric = [n for n, v in zip(names, values, strict=True)
               if v.type in (ParameterType.PARAMETER_DOUBLE, ParameterType.PARAMETER_INTEGER)]
    assert len(numeric) >= 10, names
    rng = np.random.default_rng(SEED)
    refused = 0
    stamp = 2 * 10**6
    for name in numeric:
        for j in rng.permutation(len(ABSURD))[:8]:
            value = ABSURD[int(j)]
            try:
                param = Parameter(name, value=value)
            except (TypeError, ValueError):
                continue  # not a value rclpy can send
            result = call(client.set_parameters([param]), f"{name} = {value!r}").results[0]
            refused += not result.successful
            if not result.successful:
                assert result.reason, f"{name} = {value!r} refused without a reason"
            stamp += 1
            pub.publish(good_image(stamp))
    assert refused > len(numeric)  # most absurd values are refused
    _warm(probe, ns, pub, good_image, stamp=stamp + 1)  # a frame sent after them all
    assert "Traceback" not in node.log()
