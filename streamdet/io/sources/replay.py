"""A finite source that replays recorded events in order: backtests and benchmarks.

Each record becomes the JSON message the topic would carry, so it goes through the same
decoder, windows, model lifecycle and threshold policy as live traffic. A CSV's header names
the fields (the topic's ``series_key``, ``timestamp_field`` and ``value_fields``); a file
without a series column is one series, named by ``key``.

>>> source = ReplaySource("s", [("a", {"ts": 1, "value": 1.5}), ("a", {"ts": 2, "value": 2})])
>>> [m.offset for m in source.poll(0)], source.exhausted
([0, 1], True)
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from streamdet.core.errors import InvalidInputError
from streamdet.io.sources.base import Message, OnePartitionSource


def _number_or_text(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def csv_records(path: str | Path, key: str | None = None) -> Iterator[tuple[str | None, dict]]:
    """(message key, JSON body) for every row of a CSV with a header."""
    with Path(path).open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames:
            raise InvalidInputError(f"{path}: no header row (the field names)")
        for row in reader:
            yield key, {name: _number_or_text(value) for name, value in row.items()}


class ReplaySource(OnePartitionSource):
    """Delivers ``records`` (message key, JSON body) on partition 0 of ``topic``, up to
    ``max_poll`` per poll, and is exhausted after the last one."""

    def __init__(
        self,
        topic: str,
        records: Iterable[tuple[str | None, dict[str, Any]]],
        max_poll: int = 500,
    ) -> None:
        super().__init__(topic)
        self.max_poll = max_poll
        self._records = iter(records)
        self._offset = 0
        self._done = False

    @classmethod
    def from_csv(
        cls, topic: str, path: str | Path, key: str | None = None, max_poll: int = 500
    ) -> ReplaySource:
        if not Path(path).is_file():
            raise InvalidInputError(f"{path}: no such file to replay")
        return cls(topic, csv_records(path, key or Path(path).stem), max_poll)

    @property
    def exhausted(self) -> bool:
        return self._done

    def poll(self, timeout_ms: int) -> list[Message]:
        if self._paused or self._done:
            return []
        batch = []
        for key, body in self._records:
            batch.append(
                Message(
                    self.topic,
                    0,
                    self._offset,
                    None if key is None else key.encode(),
                    json.dumps(body).encode(),
                    0,
                )
            )
            self._offset += 1
            if len(batch) >= self.max_poll:
                return batch
        self._done = True
        return batch
