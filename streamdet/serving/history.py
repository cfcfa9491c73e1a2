"""The recent events of each series that a retraining learns from, alerted spans left out.

Pure numpy. Bounded: ``per_series`` events for each of at most ``max_series`` series (the
least recently seen series are forgotten first), kept in ring buffers of float32 values and
int64 timestamps (``per_series`` x (8 + 4 x features) bytes a series), and at most
``MAX_EXCLUSIONS`` alerted spans per series. When alerted spans leave less than
``MAX_EXCLUDED_SHARE`` of a series' windows, the change has lasted: all of it is learnt.

>>> history = RecentHistory(per_series=6, max_series=10)
>>> for t in range(8):
...     history.add("a", t * 1000, np.array([float(t)]))
>>> history.exclude("a", 4000, 5000)  # an alert's window
>>> [run.ravel().tolist() for run in history.normal_runs()["a"]]
[[2.0, 3.0], [6.0, 7.0]]
"""

from __future__ import annotations

from collections import deque

import numpy as np

from streamdet.core.bounded import ENTRY_BYTES, BoundedMap

MAX_EXCLUSIONS = 100
# A ring's two array headers and its object.
_RING_OVERHEAD_BYTES = 300
MAX_EXCLUDED_SHARE = 0.5


class _Ring:
    """The last ``size`` (timestamp, values) of one series."""

    def __init__(self, size: int, n_features: int) -> None:
        self.timestamps = np.zeros(size, np.int64)
        self.values = np.zeros((size, n_features), np.float32)
        self.count = 0

    def add(self, timestamp_ms: int, values: np.ndarray) -> None:
        slot = self.count % len(self.timestamps)
        self.timestamps[slot] = timestamp_ms
        self.values[slot] = values
        self.count += 1

    def ordered(self) -> tuple[np.ndarray, np.ndarray]:
        size = len(self.timestamps)
        if self.count <= size:
            return self.timestamps[: self.count], self.values[: self.count]
        start = self.count % size
        order = np.r_[start:size, 0:start]
        return self.timestamps[order], self.values[order]


class RecentHistory:
    def __init__(self, per_series: int, max_series: int) -> None:
        self.per_series = per_series
        self._events: BoundedMap[_Ring] = BoundedMap(max_series)
        self._excluded: dict[str, deque[tuple[int, int]]] = {}

    def add(self, series: str, timestamp_ms: int, values: np.ndarray) -> None:
        ring = self._events.get(series)
        if ring is None:
            ring = _Ring(self.per_series, int(np.size(values)))
        ring.add(timestamp_ms, np.ravel(values))
        self._events.touch(series, ring)

    def forget(self, series: str) -> None:
        self._events.pop(series, None)
        self._excluded.pop(series, None)

    def state_bytes(self, n_features: int) -> int:
        """Memory the rings hold: each series' arrays with their headers, object and slot."""
        ring = self.per_series * (8 + 4 * n_features) + _RING_OVERHEAD_BYTES + ENTRY_BYTES
        return len(self._events) * ring

    def exclude(self, series: str, start_ms: int, end_ms: int) -> None:
        """Leave the events of an alerted window out of any retraining."""
        spans = self._excluded.setdefault(series, deque(maxlen=MAX_EXCLUSIONS))
        spans.append((start_ms, end_ms))

    def __len__(self) -> int:
        return sum(min(ring.count, self.per_series) for ring in self._events.values())

    def normal_runs(self, window: int = 1) -> dict[str, list[np.ndarray]]:
        """Each series' history cut at the alerted spans: runs of (T, features) arrays.

        When the cuts would leave less than ``MAX_EXCLUDED_SHARE`` of the windows of
        ``window`` events the whole history holds, the alerts have lasted: the change is
        the new normal and the whole history is kept (left out, it would alert for ever).
        """
        runs: dict[str, list[np.ndarray]] = {}
        kept: dict[str, deque[tuple[int, int]]] = {}
        for series, ring in self._events.items():
            timestamps, values = ring.ordered()
            spans = [s for s in self._excluded.get(series, ()) if s[1] >= timestamps[0]]
            kept[series] = deque(spans, maxlen=MAX_EXCLUSIONS)
            excluded = np.zeros(len(timestamps), bool)
            for start, end in spans:
                excluded |= (timestamps >= start) & (timestamps <= end)
            edges = np.flatnonzero(np.diff(np.r_[1, excluded.astype(np.int8), 1]))
            # ``edges`` pairs up as (start, end) of each run of kept events.
            pieces = [values[a:b] for a, b in zip(edges[::2], edges[1::2], strict=True)]
            kept_windows = sum(max(len(p) - window + 1, 0) for p in pieces)
            all_windows = max(len(values) - window + 1, 0)
            if all_windows and kept_windows < MAX_EXCLUDED_SHARE * all_windows:
                pieces = [values]
            runs[series] = pieces
        self._excluded = kept
        return runs
