"""Play a rosbag2 bag on live topics with its recorded timing, publishing ``/clock``.

What ``ros2 bag play --clock`` does, for machines with the pip-installed ROS 2 wheels but
no rosbag2: the bag is read with ``rosbags`` and each message is published as the CDR bytes
it was recorded as (rclpy's ``publish`` takes serialised bytes, so nothing is deserialised
and big images cost one copy). ``/clock`` carries bag time, so nodes started with
``use_sim_time:=true`` stamp, time out and rate-limit on the recording's clock.
"""

from __future__ import annotations

import importlib
import logging
import select
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builtin_interfaces.msg import Time
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock

from seg_perception.offline.reader import bag_topics, open_bag
from seg_perception.offline.topics import BagError

log = logging.getLogger(__name__)

CLOCK_TOPIC = "/clock"


def message_class(msgtype: str) -> type:
    """The rclpy message class of a bag type name such as ``sensor_msgs/msg/Image``.

    Raises ImportError naming the missing package when its Python messages are not installed.
    """
    parts = msgtype.split("/")
    if len(parts) == 2:  # "pkg/Type", as some old tools wrote
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ImportError(f"not a ROS 2 message type name: {msgtype!r}")
    pkg, kind, name = parts
    try:
        module = importlib.import_module(f"{pkg}.{kind}")
        return getattr(module, name)
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"message type {msgtype} is not installed ({exc}); install its "
                          f"Python package ({pkg})") from exc


def qos_for(topic: str, profiles: Sequence[Any]) -> QoSProfile:
    """The publisher QoS for a recorded topic, as rosbag2's player adapts it.

    Reliable unless every recorded publisher was best effort; transient local only if every
    one was (latched topics such as /tf_static keep working). Unknown (old bags): reliable,
    volatile, depth 10, which best-effort subscribers (the node, RViz) also connect to; and
    /tf_static transient local.
    """
    from rosbags.interfaces import QosDurability, QosHistory, QosReliability

    if not profiles:
        latched = topic == "/tf_static"
        return QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=100 if latched else 10,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=(DurabilityPolicy.TRANSIENT_LOCAL if latched
                        else DurabilityPolicy.VOLATILE))
    best_effort = all(p.reliability == QosReliability.BEST_EFFORT for p in profiles)
    latched = all(p.durability == QosDurability.TRANSIENT_LOCAL for p in profiles)
    depths = [int(p.depth) for p in profiles if p.history == QosHistory.KEEP_LAST]
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=max([10, *depths]) if not latched else max([1, *depths]),
        reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


def clock_qos() -> QoSProfile:
    """Reliable /clock: reaches rclpy/rclcpp time sources (best effort) and reliable readers."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


@dataclass
class PlayOptions:
    """How to play: ``rate`` scales time (2.0 = twice as fast), ``topics`` limits the topics
    (default: all), ``remap`` renames topics, ``delay`` seconds pass (with /clock at the bag's
    start) before the first message so subscribers can discover the publishers."""

    rate: float = 1.0
    loop: bool = False
    topics: Sequence[str] | None = None
    clock: bool = True
    clock_hz: float = 40.0
    remap: dict[str, str] = field(default_factory=dict)
    delay: float = 0.5
    start_paused: bool = False


@dataclass
class PlayStats:
    """Messages published per (output) topic, loops completed, wall seconds."""

    published: Counter[str] = field(default_factory=Counter)
    clock_messages: int = 0
    loops: int = 0
    seconds: float = 0.0


class BagPlayer:
    """Publishes one bag through ``node``. Call :meth:`play`; :meth:`stop` ends it early."""

    def __init__(self, node: Node, bag: str | Path, options: PlayOptions | None = None) -> None:
        self.node = node
        self.bag = Path(bag)
        self.options = options or PlayOptions()
        if not self.options.rate > 0.0:
            raise ValueError(f"rate must be > 0, got {self.options.rate}")
        if self.options.clock and not self.options.clock_hz > 0.0:
            raise ValueError(f"clock rate must be > 0 Hz, got {self.options.clock_hz}")
        self.stats = PlayStats()
        self._stop = threading.Event()
        self._clock_pub = (node.create_publisher(Clock, CLOCK_TOPIC, clock_qos())
                           if self.options.clock else None)
        self._pubs: dict[int, Any] = {}  # connection id -> publisher
        self._names: dict[int, str] = {}
        self._conns: list[Any] = []
        self._setup()

    def _setup(self) -> None:
        """Check the bag, pick its connections and create one publisher per topic."""
        opts = self.options
        with open_bag(self.bag) as reader:
            topics = bag_topics(reader)
            if opts.topics:
                missing = [t for t in opts.topics if t not in topics]
                if missing:
                    raise BagError(f"topics {', '.join(missing)} are not in {self.bag}; it has "
                                   f"{', '.join(sorted(topics))}")
            by_topic: dict[str, Any] = {}
            for conn in reader.connections:
                if opts.topics and conn.topic not in opts.topics:
                    continue
                if opts.clock and conn.topic == CLOCK_TOPIC:
                    log.warning("recorded %s not played: the player publishes its own",
                                CLOCK_TOPIC)
                    continue
                name = opts.remap.get(conn.topic, conn.topic)
                if name not in by_topic:
                    try:
                        msg_class = message_class(conn.msgtype)
                    except ImportError as exc:
                        log.warning("%s skipped: %s", conn.topic, exc)
                        continue
                    qos = qos_for(conn.topic, topics[conn.topic].qos)
                    pub = self.node.create_publisher(msg_class, name, qos)
                    by_topic[name] = (pub, conn.msgtype)
                elif by_topic[name][1] != conn.msgtype:
                    raise BagError(f"{conn.topic} ({conn.msgtype}) would be published on {name}, "
                                   f"which already carries {by_topic[name][1]}")
                self._pubs[conn.id] = by_topic[name][0]
                self._names[conn.id] = name
                self._conns.append(conn)
        if not self._conns:
            raise BagError(f"nothing to play in {self.bag}")

    @property
    def topics(self) -> list[str]:
        """The topics this player publishes (after remapping), /clock not included."""
        return sorted(set(self._names.values()))

    def publishers(self) -> list[Any]:
        """The message publishers (one per played topic), e.g. to wait until they match."""
        return list({id(p): p for p in self._pubs.values()}.values())

    # ----------------------------------------------------------------- clock
    def _publish_clock(self, ns: int) -> None:
        if self._clock_pub is None:
            return
        self._clock_pub.publish(Clock(clock=Time(sec=ns // 1_000_000_000,
                                                 nanosec=ns % 1_000_000_000)))
        self.stats.clock_messages += 1

    def _hold(self, seconds: float, bag_ns: int) -> None:
        """Wait ``seconds`` of wall time with /clock standing at ``bag_ns``."""
        period = 1.0 / self.options.clock_hz
        end = time.monotonic() + seconds
        while not self._stop.is_set():
            self._publish_clock(bag_ns)
            left = end - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(period, left))

    def _wait_paused(self, bag_ns: int) -> None:
        """``start_paused``: /clock at the bag's start until Enter (or end of input)."""
        print("paused at the start of the bag: press Enter to play", file=sys.stderr)
        period = 1.0 / self.options.clock_hz
        while not self._stop.is_set():
            self._publish_clock(bag_ns)
            try:
                ready, _, _ = select.select([sys.stdin], [], [], period)
            except (OSError, ValueError):  # no usable stdin: do not wait forever
                return
            if ready:
                sys.stdin.readline()
                return

    # ----------------------------------------------------------------- playback
    def stop(self) -> None:
        self._stop.set()

    def play(self) -> PlayStats:
        """Play the bag (repeatedly with ``loop``) until its end, :meth:`stop` or Ctrl-C."""
        t0 = time.monotonic()
        with open_bag(self.bag) as reader:
            start = reader.start_time
        try:
            if self.options.start_paused:
                self._wait_paused(start)
            if self.options.delay > 0:
                self._hold(self.options.delay, start)
            while not self._stop.is_set():
                self._play_once()
                if self._stop.is_set():
                    break
                self.stats.loops += 1
                if not self.options.loop:
                    break
        finally:
            self.stats.seconds = time.monotonic() - t0
        return self.stats

    def _play_once(self) -> None:
        rate = self.options.rate
        period_ns = int(1e9 / self.options.clock_hz)
        with open_bag(self.bag) as reader:
            start = reader.start_time
            wall0 = time.monotonic_ns()
            next_clock = wall0
            for conn, log_time, raw in reader.messages(self._conns):
                target = wall0 + int((log_time - start) / rate)
                while True:  # sleep until the message is due, ticking /clock meanwhile
                    if self._stop.is_set():
                        return
                    now = time.monotonic_ns()
                    if now >= target:
                        break
                    if self._clock_pub is not None and now >= next_clock:
                        self._publish_clock(start + int((now - wall0) * rate))
                        next_clock = now + period_ns
                    wake = min(target, next_clock) if self._clock_pub is not None else target
                    self._stop.wait(max(0.0, (wake - now) / 1e9))
                if self._clock_pub is not None:
                    self._publish_clock(log_time)
                    next_clock = time.monotonic_ns() + period_ns
                self._pubs[conn.id].publish(raw if isinstance(raw, bytes) else bytes(raw))
                self.stats.published[self._names[conn.id]] += 1


def run_player(bag: str | Path, options: PlayOptions) -> int:
    """Initialise rclpy, play ``bag`` with ``options`` and shut down; the exit status."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.signals import SignalHandlerOptions

    # Without rclpy's handler Ctrl-C raises KeyboardInterrupt here instead of invalidating
    # the context under a publish in progress.
    rclpy.init(args=["seg_bag_player"], signal_handler_options=SignalHandlerOptions.NO)
    node = Node("seg_bag_player")
    code = 0
    try:
        player = BagPlayer(node, bag, options)
        topics = player.topics
        log.info("playing %s at rate %g%s: %s%s", bag, options.rate,
                 " (loop)" if options.loop else "", ", ".join(topics),
                 f"; {CLOCK_TOPIC} at {options.clock_hz:g} Hz" if options.clock else "")
        try:
            stats = player.play()
        except (KeyboardInterrupt, ExternalShutdownException):
            stats = player.stats
            log.info("stopped")
        total = sum(stats.published.values())
        log.info("%d messages published in %.1f s (%d complete loop(s))", total, stats.seconds,
                 stats.loops)
    except BagError as exc:
        log.error("%s", exc)
        code = 2
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return code
