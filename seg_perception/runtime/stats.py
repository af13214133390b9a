"""Running statistics for diagnostics, a bounded per-kind rate limiter for warnings, and a
monitor for values that keep changing."""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import numpy as np


class RateMeter:
    """Events per second over a sliding time window (thread-safe)."""

    def __init__(self, window_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self._window = window_s
        self._clock = clock
        self._times: deque[float] = deque()
        self._lock = threading.Lock()
        self.total = 0

    def tick(self) -> None:
        with self._lock:
            now = self._clock()
            self._times.append(now)
            self.total += 1
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self._window:
            self._times.popleft()

    def rate(self) -> float:
        with self._lock:
            now = self._clock()
            self._trim(now)
            n = len(self._times)
            if n < 2:
                return 0.0
            span = max(now - self._times[0], self._times[-1] - self._times[0])
            return (n - 1) / span if span > 0 else 0.0


class Percentiles:
    """Keeps the last ``size`` samples of a quantity and reports percentiles."""

    def __init__(self, size: int = 200) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            self._values.append(value)

    def __len__(self) -> int:
        return len(self._values)

    def percentile(self, q: float) -> float:
        """The q-th percentile (0-100), NaN when empty."""
        with self._lock:
            if not self._values:
                return float("nan")
            return float(np.percentile(np.fromiter(self._values, float), q))


class WarningLimiter:
    """Lets a warning through at most once per ``period_s`` for each kind of problem.

    ``check(key)`` returns None when the warning must be suppressed, else the number of
    occurrences suppressed since the last one let through (so the message can say so).
    Keys should name the kind of problem, not its details (see :func:`problem_kind`): a key
    per distinct message would let every new value through and grow without end.

    Memory is bounded whatever the keys: at most ``max_keys`` are remembered, the least
    recently used forgotten first (``forgotten`` counts the occurrences they had suppressed).
    ``max_per_period`` caps the warnings let through over all keys in one period, so even
    many different problems at once give a handful of lines; the ones held back are counted
    under their key and reported with its next warning.
    """

    def __init__(self, period_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 256, max_per_period: int | None = 20) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys = {max_keys} must be >= 1")
        self._period = period_s
        self._clock = clock
        self._max_keys = int(max_keys)
        self._max_per_period = max_per_period
        # key -> [time let through last (None: never), occurrences suppressed since]
        self._entries: OrderedDict[str, list[Any]] = OrderedDict()
        self._recent: deque[float] = deque()  # times warnings were let through
        self._lock = threading.Lock()
        self.forgotten = 0

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, key: str) -> int | None:
        with self._lock:
            now = self._clock()
            entry = self._entries.get(key)
            if entry is None:
                entry = [None, 0]
                self._entries[key] = entry
                if len(self._entries) > self._max_keys:
                    _, old = self._entries.popitem(last=False)
                    self.forgotten += old[1]
            else:
                self._entries.move_to_end(key)
            last = entry[0]
            if last is not None and now - last < self._period:
                entry[1] += 1
                return None
            while self._recent and now - self._recent[0] >= self._period:
                self._recent.popleft()
            if self._max_per_period is not None and len(self._recent) >= self._max_per_period:
                entry[1] += 1  # over the budget of all keys: held back, told next time
                return None
            self._recent.append(now)
            entry[0] = now
            suppressed, entry[1] = entry[1], 0
            return suppressed


# Values that differ between occurrences of one problem: quoted or bracketed text (encoding
# names, formats, paths), numbers (sizes, counts, addresses) and words that carry digits.
_QUOTED = re.compile(r"""'[^']*'|"[^"]*"|\[[^\]]*\]|\{[^}]*\}|<[^>]*>""")
_NUMERIC = re.compile(r"\S*\d\S*")
_SPACES = re.compile(r"\s+")


def problem_kind(problem: BaseException | str, max_words: int = 6) -> str:
    """A short key naming the kind of a problem, the same for every occurrence of it.

    An exception with a ``kind`` attribute (:class:`~seg_perception.runtime.image_codec.
    ImageDecodeError` has one) gives ``"<Type>:<kind>"``. Otherwise the message is reduced to
    its fixed words: quoted, bracketed and numeric parts are dropped and the first
    ``max_words`` words are kept, so ``unsupported image encoding 'x42'; supported: ...`` and
    the same with ``'yuv9'`` give one key. Never longer than about 80 characters.
    """
    if isinstance(problem, BaseException):
        name = type(problem).__name__
        kind = getattr(problem, "kind", None)
        if isinstance(kind, str) and kind:
            return f"{name}:{kind[:60]}"
        text = str(problem)
    else:
        name, text = "", str(problem)
    text = _QUOTED.sub(" ", text[:2000])
    text = _NUMERIC.sub(" ", text)
    text = text.split(";")[0].split(":")[0] if text.strip() else text
    words = [w.strip(".,()=").lower() for w in _SPACES.split(text) if w.strip(".,()=")]
    return f"{name}:{' '.join(words[:max_words])}"[:80]


class ChangeMonitor:
    """Notices a value that keeps changing, e.g. the camera model of a camera_info topic on
    which two cameras publish, where every change costs a rebuild.

    ``update(value)`` returns whether the value differs from the previous one; once more than
    ``max_changes`` changes fall within ``window_s``, :meth:`take_warning` returns True one
    time, and again only after the value has stayed put for a whole window.
    """

    def __init__(self, max_changes: int = 4, window_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._max = int(max_changes)
        self._window = float(window_s)
        self._clock = clock
        self._last: Any = _UNSET
        self._changes: deque[float] = deque(maxlen=max(1, self._max + 1))
        self._warned = False
        self._pending = False
        self._lock = threading.Lock()
        self.total_changes = 0

    def update(self, value: Any) -> bool:
        with self._lock:
            now = self._clock()
            while self._changes and now - self._changes[0] > self._window:
                self._changes.popleft()
            if self._warned and not self._changes:
                self._warned = False  # quiet for a window: re-armed
            if self._last is _UNSET:
                self._last = value
                return True
            if value == self._last:
                return False
            self._last = value
            self.total_changes += 1
            self._changes.append(now)
            if len(self._changes) > self._max and not self._warned:
                self._warned = self._pending = True
            return True

    @property
    def recent_changes(self) -> int:
        """Changes within the last window."""
        with self._lock:
            now = self._clock()
            return sum(1 for t in self._changes if now - t <= self._window)

    def take_warning(self) -> bool:
        """True once per episode of frequent changes (the caller warns)."""
        with self._lock:
            pending, self._pending = self._pending, False
            return pending


_UNSET = object()
