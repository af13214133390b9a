"""Bags for the offline tests: generated or CamVid frames written as rosbag2, read back, and
``process`` started as a subprocess."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from shared_data import CAMVID, REPO, require

from seg_perception.offline.reader import open_bag
from seg_perception.offline.topics import (
    camera_info_msg,
    camera_namespace,
    compressed_msg,
    image_msg,
    make_header,
    raw_image_msg,
    typestore,
)
from seg_perception.offline.writer import BagWriter
from seg_perception.runtime.geometry import CameraModel

W, H = 160, 120


T0 = 1_700_000_000  # header stamps (s)


LOG0 = 1_800_000_000 * 10**9  # log times (ns), deliberately unlike the stamps


IMAGE_OUTPUTS = ("labels", "labels_color", "overlay", "confidence", "drivable/mask")


ALL_OUTPUTS = (*IMAGE_OUTPUTS, "drivable/grid", "drivable/boundary")


def generated_frames(n: int, w: int = W, h: int = H) -> list[np.ndarray]:
    """Road-like frames: sky, grey road, a moving red box."""
    frames = []
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[: h * 2 // 5] = (120 + 5 * (i % 20), 160, 220)
        img[h * 2 // 5:] = (90, 90, 95)
        x = (10 + 7 * i) % max(1, w - 30)
        cv2.rectangle(img, (x, h // 3), (x + 25, h // 2), (200, 30, 30), -1)
        frames.append(img)
    return frames


def camvid_frames(n: int) -> list[np.ndarray]:
    files = sorted((require(CAMVID) / "val").glob("*.png"))[:n]
    if len(files) < n:
        pytest.skip("too few CamVid val frames")
    return [cv2.resize(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB), (W, H),
                       interpolation=cv2.INTER_AREA) for f in files]


def frames_from(source: str, n: int) -> list[np.ndarray]:
    return camvid_frames(n) if source == "camvid" else generated_frames(n)


def stamp(cam: int, i: int) -> tuple[int, int]:
    return T0 + i, 1000 * cam + 7 * i + 1


def frame_id(topic: str) -> str:
    return (camera_namespace(topic).strip("/").replace("/", "_") or "camera") + "_optical"


def make_bag(path: Path, cameras: dict[str, str], frames: list[np.ndarray],
             storage: str = "mcap", camera_info: bool = True,
             corrupt: dict[str, set[int]] | None = None) -> dict[str, list[tuple]]:
    """Write ``frames`` to each image topic of ``cameras`` (topic -> "raw"/"compressed").

    Returns per topic the list of (log_time, stamp, frame_id) of its frames. ``corrupt``
    names frame indices to write with payloads that cannot be decoded.
    """
    expected: dict[str, list[tuple]] = defaultdict(list)
    h, w = frames[0].shape[:2]
    model = CameraModel.from_fov(w, h, 90.0)
    with BagWriter(path, storage=storage) as bag:
        for i, rgb in enumerate(frames):
            for c, (topic, transport) in enumerate(cameras.items()):
                log_time = LOG0 + i * 100_000_000 + c * 1_000
                sec, nsec = stamp(c, i)
                header = make_header(sec, nsec, frame_id(topic))
                bad = i in (corrupt or {}).get(topic, set())
                if transport == "raw":
                    msg = image_msg(rgb, "rgb8", header)
                    if bad:  # claims 120 rows, carries 60
                        msg = raw_image_msg(msg.data[: msg.data.size // 2], "rgb8", w, h,
                                            w * 3, header)
                else:
                    msg = compressed_msg(rgb, header, "jpeg", 90)
                    if bad:
                        msg.data = np.frombuffer(b"not a jpeg at all", np.uint8)
                bag.write(topic, msg, log_time)
                expected[topic].append((log_time, (sec, nsec), frame_id(topic)))
                if camera_info:
                    ns = camera_namespace(topic)
                    bag.write(f"{ns}/camera_info", camera_info_msg(model, header),
                              log_time + 1)
    return dict(expected)


def make_foxy_bag(path: Path, topic: str, frames: list[np.ndarray]) -> list[tuple]:
    """A bag as ROS 2 Foxy's rosbag2 wrote it: metadata.yaml version 4, a .db3 with no
    schema/metadata tables and the Foxy QoS text. Built by hand (no writer makes it now)."""
    path.mkdir()
    db = path / f"{path.name}_0.db3"
    qos = ("- history: 3\n  depth: 0\n  reliability: 2\n  durability: 2\n  deadline:\n"
           "    sec: 2147483647\n    nsec: 4294967295\n  lifespan:\n    sec: 2147483647\n"
           "    nsec: 4294967295\n  liveliness: 1\n  liveliness_lease_duration:\n"
           "    sec: 2147483647\n    nsec: 4294967295\n  avoid_ros_namespace_conventions: false")
    con = sqlite3.connect(db)
    con.executescript(
        "CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL,"
        " serialization_format TEXT NOT NULL, offered_qos_profiles TEXT NOT NULL);"
        "CREATE TABLE messages(id INTEGER PRIMARY KEY, topic_id INTEGER NOT NULL,"
        " timestamp INTEGER NOT NULL, data BLOB NOT NULL);"
        "CREATE INDEX timestamp_idx ON messages (timestamp ASC);")
    con.execute("INSERT INTO topics VALUES (1, ?, 'sensor_msgs/msg/Image', 'cdr', ?)",
                (topic, qos))
    expected = []
    for i, rgb in enumerate(frames):
        sec, nsec = stamp(0, i)
        msg = image_msg(rgb, "rgb8", make_header(sec, nsec, "foxy_cam"))
        log_time = LOG0 + i * 50_000_000
        data = bytes(typestore().serialize_cdr(msg, "sensor_msgs/msg/Image"))
        con.execute("INSERT INTO messages(topic_id, timestamp, data) VALUES (1, ?, ?)",
                    (log_time, data))
        expected.append((log_time, (sec, nsec), "foxy_cam"))
    con.commit()
    con.close()
    qos_yaml = "\n".join("          " + line for line in qos.splitlines())
    (path / "metadata.yaml").write_text(
        "rosbag2_bagfile_information:\n"
        "  version: 4\n"
        "  storage_identifier: sqlite3\n"
        f"  relative_file_paths:\n    - {db.name}\n"
        f"  duration:\n    nanoseconds: {expected[-1][0] - expected[0][0]}\n"
        f"  starting_time:\n    nanoseconds_since_epoch: {expected[0][0]}\n"
        f"  message_count: {len(frames)}\n"
        "  topics_with_message_count:\n"
        "    - topic_metadata:\n"
        f"        name: {topic}\n"
        "        type: sensor_msgs/msg/Image\n"
        "        serialization_format: cdr\n"
        f"        offered_qos_profiles: |\n{qos_yaml}\n"
        f"      message_count: {len(frames)}\n"
        "  compression_format: \"\"\n"
        "  compression_mode: \"\"\n")
    return expected


def read_bag(path: Path) -> dict[str, list[tuple[int, Any]]]:
    """Every message of a bag, deserialised: topic -> [(log_time, msg)]."""
    out: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    store = typestore()
    with open_bag(path) as reader:
        for conn, log_time, raw in reader.messages():
            out[conn.topic].append((log_time, store.deserialize_cdr(raw, conn.msgtype)))
    return dict(out)


def start_process(tmp_path: Path, n: int, min_done: int = 3
                  ) -> tuple[subprocess.Popen, bytearray, Any]:
    """`seg-perception process` of an ``n``-frame bag as a subprocess, returned (still running)
    once its progress bar shows ``min_done`` frames: for the signal tests. The frames are
    small (the network runs at its input size anyway): ``n`` of them make a small bag that
    still lasts a few seconds (tiny_seg runs at ~500 frames/s here)."""
    make_bag(tmp_path / "in", {"/cam/image_raw": "raw"}, generated_frames(n, 64, 48),
             camera_info=False)
    cmd = [sys.executable, "-m", "seg_perception", "process", str(tmp_path / "in"),
           str(tmp_path / "out"), "--model", "tiny_seg", "--device", "cpu", "--no-grid"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    err = bytearray()

    def drain() -> None:  # tqdm ends its lines with \r: read bytes, not lines
        while chunk := os.read(proc.stderr.fileno(), 4096):
            err.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        done = [int(m) for m in re.findall(rb"\| *(\d+)/%d" % n, bytes(err))]
        if done and max(done) >= min_done:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"finished before the signal:\n{bytes(err).decode()}"
    return proc, err, reader


def play_until(count: Callable[[], int], n: int, bag: Path, what: str,
               timeout: float = 300.0, idle: float = 10.0) -> None:
    """Wait until ``count()`` (outputs received for ``bag``'s frames) reaches ``n``, playing
    ``bag`` again with `seg-perception play` whenever it has not grown for ``idle`` s: a
    loaded node keeps only the newest frame, so one run may yield fewer outputs."""
    deadline = time.monotonic() + timeout
    last, since = count(), time.monotonic()
    while (now_count := count()) < n:
        now = time.monotonic()
        assert now < deadline, f"timed out waiting for {what} ({now_count} of {n})"
        if now_count != last:
            last, since = now_count, now
        elif now - since > idle:
            done = subprocess.run([sys.executable, "-m", "seg_perception", "play", str(bag)],
                                  cwd=REPO, capture_output=True, text=True, timeout=120,
                                  env=dict(os.environ, PYTHONUNBUFFERED="1"))
            assert done.returncode == 0, done.stdout + done.stderr
            since = time.monotonic()
        time.sleep(0.2)


def striped_frame(i: int) -> np.ndarray:
    img = np.full((H, W, 3), (90, 90, 95), np.uint8)  # road
    img[: H // 3] = (120, 160, 220)  # sky
    img[H // 2:, (10 * i) % W:] = (200, 30, 30)
    return img


def make_camera_bag(path: Path, n: int) -> set[tuple[int, int]]:
    """``n`` frames on /cam/image_raw and /cam/camera_info at 5 Hz; the header stamps."""
    start = 1_650_000_000 * 10**9
    model = CameraModel.from_fov(W, H, 90.0)
    stamps = set()
    with BagWriter(path) as bag:
        for i in range(n):
            t = start + i * 200_000_000
            header = make_header(t // 10**9, t % 10**9, "camera_optical")
            bag.write("/cam/image_raw", image_msg(striped_frame(i), "rgb8", header), t)
            bag.write("/cam/camera_info", camera_info_msg(model, header), t)
            stamps.add((t // 10**9, t % 10**9))
    return stamps
