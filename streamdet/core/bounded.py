"""Bounded per-series state: a map that forgets its least recently used keys.

>>> recent = BoundedMap(limit=2)
>>> for key in ("a", "b", "a", "c"):
...     recent.touch(key, key.upper())
>>> list(recent)
['a', 'c']
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

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
