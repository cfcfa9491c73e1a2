"""The records that flow through the daemon, from a raw message to a scored window.

``Message`` (what a source delivers) -> ``Event`` (decoded: series, event time, values) ->
``Window`` (a full window of one series, due for scoring) -> ``ScoredWindow`` (its score and
the threshold rule's :class:`~streamdet.thresholds.Decision`). ``Position`` is what a
partition's commit holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from streamdet.thresholds.base import Decision

TopicPartition = tuple[str, int]
# Per partition: the lowest start offset and the lowest end offset of work consumed but not
# finished (a window not yet scored, an alert or dead letter not yet acknowledged).
Pending = dict[TopicPartition, tuple[int, int]]


class Message(NamedTuple):
    """One raw message, as Kafka would deliver it (the simulator mimics this shape). A
    tuple: the consumer makes one per record, and a frozen dataclass cost a microsecond."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Position:
    """What is committed for one partition.

    ``consumed`` is the next offset to read: the committed offset itself, so the group lag
    every Kafka tool (and KEDA) reads means what it means for any consumer. The commit's
    metadata carries the rest: ``replay_from``, the oldest offset a restart must re-read to
    rebuild every window (the member that takes the partition seeks there), and
    ``scored_through``, the last offset whose windows have all been scored and their alerts
    acknowledged, so windows rebuilt up to it are not alerted twice.
    """

    replay_from: int
    scored_through: int
    consumed: int


@dataclass(frozen=True, slots=True)
class Event:
    series: str
    timestamp_ms: int
    values: np.ndarray
    message: Message


# A window's object and its values' array header, beyond the values themselves.
WINDOW_OVERHEAD_BYTES = 370


@dataclass(frozen=True, slots=True)
class Window:
    """A full window of one series, due for scoring (one event for rows and images)."""

    topic: str
    series: str
    values: np.ndarray
    start_ts_ms: int
    end_ts_ms: int
    start_offset: int
    end_offset: int
    partition: int
    received_at: float

    @property
    def key(self) -> TopicPartition:
        return (self.topic, self.partition)

    @property
    def nbytes(self) -> int:
        """Memory the window holds: its values, their array and the window itself (measured
        with tracemalloc: 567 bytes for 50 float32 values)."""
        return self.values.nbytes + WINDOW_OVERHEAD_BYTES


@dataclass(frozen=True, slots=True)
class ScoredWindow:
    """A window's score and the decision the topic's threshold rule made of it."""

    window: Window
    score: float
    decision: Decision
    feature_scores: np.ndarray
    store_version: str | None  # the model store version that scored it


def note_pending(pending: Pending, key: TopicPartition, start: int, end: int) -> None:
    """Keep the lowest start and end offsets per partition.

    >>> held = {}
    >>> note_pending(held, ("t", 0), 5, 9); note_pending(held, ("t", 0), 7, 8); held
    {('t', 0): (5, 8)}
    """
    low_start, low_end = pending.get(key, (start, end))
    pending[key] = (min(low_start, start), min(low_end, end))


def merge_pending(*parts: Pending) -> Pending:
    merged: Pending = {}
    for part in parts:
        for key, (start, end) in part.items():
            note_pending(merged, key, start, end)
    return merged
