"""Bounded per-series state: a map that forgets its least recently used keys.

>>> recent = BoundedMap(limit=2)
>>> for key in ("a", "b", "a", "c"):
...     recent.touch(key, key.upper())
>>> list(recent)
['a', 'c']
"""

from __future__ import annotations

import sys
from collections import OrderedDict, deque
from typing import Generic, TypeVar

import numpy as np

Value = TypeVar("Value")


class BoundedMap(OrderedDict[str, Value], Generic[Value]):
    """A dict that forgets its least recently used keys beyond ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def touch(self, key: str, value: Value) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


# What one entry of a BoundedMap costs beyond its value: the key's slot in the ordered dict.
ENTRY_BYTES = 100


def approx_bytes(value: object, depth: int = 3) -> int:
    """Memory ``value`` holds, roughly: numpy arrays by their buffers, containers and objects
    by their parts (``depth`` levels down). For sizing per-series state, not accounting.

    >>> approx_bytes(np.zeros(1000)) >= 8000
    True
    """
    if isinstance(value, np.ndarray):
        return value.nbytes + sys.getsizeof(np.zeros(0))
    size = sys.getsizeof(value)
    if depth == 0 or isinstance(value, str | bytes | int | float | bool):
        return size
    parts: list[object] = []
    if isinstance(value, dict):
        parts = [*value.keys(), *value.values()]
    elif isinstance(value, list | tuple | set | frozenset | deque):
        parts = list(value)
    else:
        fields = getattr(value, "__dict__", None)
        if fields is not None:
            size += sys.getsizeof(fields)
            parts = list(fields.values())
        for slot in getattr(type(value), "__slots__", ()):
            parts.append(getattr(value, slot, None))
    return size + sum(approx_bytes(part, depth - 1) for part in parts)


class FrequencySketch:
    """How often each key was seen, approximately, in fixed memory (a count-min sketch of
    4 rows of saturating 8-bit counters, at least twice as wide as ``expected_keys``).
    Counts are halved every ``width`` additions, so old activity fades and a flood of
    distinct keys raises an unseen key's count by about one at most. Never under-counts a
    key seen since the last halving.

    >>> sketch = FrequencySketch(1000)
    >>> for _ in range(5):
    ...     sketch.add("pump-1")
    >>> sketch.count("pump-1"), sketch.count("never-seen")
    (5, 0)
    """

    _SEEDS = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93)

    def __init__(self, expected_keys: int) -> None:
        width = 1024
        while width < 2 * expected_keys and width < 1 << 22:
            width *= 2
        self._mask = width - 1
        # bytearrays: element access from Python is several times cheaper than numpy's
        self._rows = [bytearray(width) for _ in self._SEEDS]
        self._added = 0
        self._halve_every = width

    def _slots(self, key: str) -> list[int]:
        h = hash(key) & 0xFFFFFFFFFFFFFFFF
        return [((h * seed) & 0xFFFFFFFFFFFFFFFF) >> 40 & self._mask for seed in self._SEEDS]

    def add(self, key: str) -> None:
        for row, slot in zip(self._rows, self._slots(key), strict=True):
            if row[slot] < 255:
                row[slot] += 1
        self._added += 1
        if self._added >= self._halve_every:
            for row in self._rows:
                np.frombuffer(row, np.uint8).__irshift__(1)
            self._added = 0

    def count(self, key: str) -> int:
        return min(row[slot] for row, slot in zip(self._rows, self._slots(key), strict=True))
