"""The recent events of each series that a retraining learns from, alerted spans left out.

Pure numpy. Bounded: ``per_series`` events for each of at most ``max_series`` series (the
least recently seen series are forgotten first), and at most ``MAX_EXCLUSIONS`` alerted
spans per series.

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

from streamdet.pipeline.policy import BoundedMap

MAX_EXCLUSIONS = 100


class RecentHistory:
    def __init__(self, per_series: int, max_series: int) -> None:
        self.per_series = per_series
        self._events: BoundedMap[deque[tuple[int, np.ndarray]]] = BoundedMap(max_series)
        self._excluded: dict[str, deque[tuple[int, int]]] = {}

    def add(self, series: str, timestamp_ms: int, values: np.ndarray) -> None:
        events = self._events.get(series)
        if events is None:
            events = deque(maxlen=self.per_series)
        events.append((timestamp_ms, values))
        self._events.touch(series, events)

    def exclude(self, series: str, start_ms: int, end_ms: int) -> None:
        """Leave the events of an alerted window out of any retraining."""
        spans = self._excluded.setdefault(series, deque(maxlen=MAX_EXCLUSIONS))
        spans.append((start_ms, end_ms))

    def __len__(self) -> int:
        return sum(len(events) for events in self._events.values())

    def normal_runs(self) -> dict[str, list[np.ndarray]]:
        """Each series' history cut at the alerted spans: runs of (T, features) arrays."""
        runs: dict[str, list[np.ndarray]] = {}
        for series, events in self._events.items():
            spans = [s for s in self._excluded.get(series, ()) if s[1] >= events[0][0]]
            self._excluded[series] = deque(spans, maxlen=MAX_EXCLUSIONS)
            current: list[np.ndarray] = []
            pieces = []
            for timestamp, values in events:
                if any(start <= timestamp <= end for start, end in spans):
                    if current:
                        pieces.append(np.stack(current))
                    current = []
                else:
                    current.append(values)
            if current:
                pieces.append(np.stack(current))
            runs[series] = pieces
        self._excluded = {k: v for k, v in self._excluded.items() if k in self._events}
        return runs
