"""A small least-recently-used cache: per-size lookup tables, per-camera mappers.

Caches keyed by what arrives at run time (frame sizes, camera models, poses) must be bounded:
a stream of ever-new sizes would otherwise keep every table it ever built.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

V = TypeVar("V")


class LruCache(Generic[V]):
    """Mapping of at most ``maxsize`` entries; the least recently used one goes first."""

    def __init__(self, maxsize: int = 4) -> None:
        if maxsize < 1:
            raise ValueError(f"LruCache maxsize must be >= 1, got {maxsize}")
        self.maxsize = int(maxsize)
        self._data: OrderedDict[Hashable, V] = OrderedDict()
        self.evictions = 0

    def get(self, key: Hashable) -> V | None:
        """The entry for ``key`` (now the most recently used), or None."""
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: Hashable, value: V) -> V:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)
            self.evictions += 1
        return value

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    def keys(self) -> Iterator[Hashable]:
        return iter(list(self._data))

    def clear(self) -> None:
        self._data.clear()


__all__ = ["LruCache"]
