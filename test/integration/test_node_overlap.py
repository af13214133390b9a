"""seg_node's worker: the next frame's forward pass runs while the outputs of the previous
one are made and published, each output stays with its own frame, and none waits in a
queue (at most one finished forward pass waits for the outputs thread)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.parameter import Parameter
from ros_harness import Probe, spinning
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from seg_perception.runtime.image_codec import encode_raw

NS = "/it_overlap"
H, W = 48, 64
T0 = 1_700_000_000


class _Timed:
    """The engine, each forward pass and each postprocessing made ``delay`` s longer and
    noted: which thread ran it, from when to when."""

    def __init__(self, engine: Any, delay: float) -> None:
        self._engine = engine
        self._delay = delay
        self._lock = threading.Lock()
        self.threads: dict[str, set[str]] = defaultdict(set)
        self.spans: dict[str, list[tuple[float, float]]] = defaultdict(list)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def _timed(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.monotonic()
        out = call(*args, **kwargs)
        time.sleep(self._delay)
        with self._lock:
            self.threads[what].add(threading.current_thread().name)
            self.spans[what].append((t0, time.monotonic()))
        return out

    def start_batch(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed("start", self._engine.start_batch, *args, **kwargs)

    def finish_batch(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed("finish", self._engine.finish_batch, *args, **kwargs)


def frame(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture
def node_and_probe() -> Iterator[tuple[Any, Probe]]:
    from seg_perception.ros.node import SegNode

    probe = Probe("seg_overlap_probe")
    node = SegNode(namespace=NS, parameter_overrides=[
        Parameter("model", value="tiny_seg"), Parameter("device", value="cpu"),
        Parameter("cpu_threads", value=1), Parameter("use_tf", value=False)])
    try:
        with spinning(node):
            yield node, probe
    finally:
        probe.close()


def test_forward_passes_overlap_the_previous_frames_outputs(node_and_probe: Any) -> None:
    node, probe = node_and_probe
    engine = node.pipeline.engine
    expected = {T0 + i: engine(frame(i), want_confidence=False).labels for i in range(40)}
    spy = _Timed(engine, delay=0.05)
    node.pipeline.engine = spy
    probe.subscribe(Image, f"{NS}/labels")
    pub = probe.publisher(Image, f"{NS}/image")
    probe.wait_until(lambda: pub.get_subscription_count() > 0, timeout=30,
                     what="the node's image subscription")
    probe.wait_until(lambda: node.get_subscriptions_info_by_topic(f"{NS}/labels") != [],
                     timeout=30, what="the probe's labels subscription")
    # 40 frames, 20 ms apart: each takes 100 ms start to end, so frames queue up at the node
    for i in range(40):
        data, step = encode_raw(frame(i), "rgb8")
        pub.publish(Image(header=Header(stamp=Time(sec=T0 + i, nanosec=0), frame_id="cam"),
                          height=H, width=W, encoding="rgb8", step=step, data=bytes(data)))
        time.sleep(0.02)
    probe.wait_until(lambda: any(m.header.stamp.sec == T0 + 39
                                 for m in probe.messages(f"{NS}/labels")),
                     timeout=60, what="the last frame's labels")
    got = probe.messages(f"{NS}/labels")
    stamps = [m.header.stamp.sec for m in got]
    assert stamps == sorted(set(stamps)), stamps  # in order, none twice
    for m in got:  # every output is its own frame's
        np.testing.assert_array_equal(
            np.frombuffer(bytes(m.data), np.uint8).reshape(H, W), expected[m.header.stamp.sec])
    assert dict(spy.threads) == {"start": {"seg_worker"}, "finish": {"seg_outputs"}}
    overlapping = sum(any(s0 < f1 and f0 < s1 for f0, f1 in spy.spans["finish"])
                      for s0, s1 in spy.spans["start"])
    print(f"\n{len(got)} of 40 frames, {overlapping} of {len(spy.spans['start'])} forward "
          "passes beside the outputs of the one before")
    assert overlapping >= len(spy.spans["start"]) // 3, spy.spans
    # the latest frame wins: frames were dropped rather than queued behind a slow worker
    # (a 100 ms frame every 20 ms), and at most one forward pass ran ahead of the outputs
    assert len(got) < 40
    starts, finishes = sorted(spy.spans["start"]), sorted(spy.spans["finish"])
    for k, (_, s1) in enumerate(starts):
        done_before = sum(f1 <= s1 for _, f1 in finishes)
        assert k - done_before <= 1, (k, done_before)
