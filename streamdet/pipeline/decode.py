"""Turn a raw message into a (series, timestamp, values) event, or say exactly why not.

>>> from streamdet.config import MessageFormat
>>> from streamdet.sources.base import Message
>>> msg = Message("s", 0, 7, None, b'{"sensor": "a", "ts": 1700000000, "value": 1.5}', 0)
>>> event = decode_timeseries(msg, MessageFormat())
>>> event.series, event.timestamp_ms, event.values.tolist()
('a', 1700000000000, [1.5])
>>> decode_timeseries(Message("s", 0, 8, None, b'{"sensor": "a"}', 0), MessageFormat())
Traceback (most recent call last):
...
streamdet.pipeline.decode.InvalidMessage: topic s partition 0 offset 8: missing_field: no field 'ts'
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from streamdet.config import MessageFormat
from streamdet.errors import StreamdetError
from streamdet.sources.base import Message

REASONS = ("undecodable_json", "missing_field", "wrong_type", "non_finite", "feature_count")


class InvalidMessage(StreamdetError):
    """A message that cannot be scored; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, message: Message, reason: str, detail: str) -> None:
        self.message = message
        self.reason = reason
        self.detail = detail
        super().__init__(
            f"topic {message.topic} partition {message.partition} offset {message.offset}: "
            f"{reason}: {detail}"
        )


@dataclass(frozen=True, slots=True)
class Event:
    series: str
    timestamp_ms: int
    values: np.ndarray
    message: Message


def parse_timestamp_ms(raw: object) -> int:
    """Epoch seconds or milliseconds (told apart by size), or an ISO 8601 string.

    >>> parse_timestamp_ms(1700000000), parse_timestamp_ms(1700000000123)
    (1700000000000, 1700000000123)
    >>> parse_timestamp_ms("2023-11-14T22:13:20Z")
    1700000000000
    """
    if isinstance(raw, bool):
        raise ValueError("a boolean is not a timestamp")
    if isinstance(raw, int | float):
        if not math.isfinite(raw):
            raise ValueError("timestamp is not finite")
        # Epoch seconds stay below 1e11 until the year 5138; milliseconds are above it.
        return int(raw) if abs(raw) >= 1e11 else round(raw * 1000)
    if isinstance(raw, str):
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        return int(parsed.timestamp() * 1000)
    raise ValueError(f"expected epoch seconds/milliseconds or ISO 8601, got {type(raw).__name__}")


def decode_timeseries(message: Message, fmt: MessageFormat, tabular: bool = False) -> Event:
    """Decode one JSON message according to its topic's format.

    ``tabular`` rows need no series or timestamp: a missing series field falls back to the
    message key, then the topic; a missing timestamp field to the Kafka timestamp.
    """
    try:
        body = json.loads(message.value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidMessage(message, "undecodable_json", str(exc)) from None
    if not isinstance(body, dict):
        raise InvalidMessage(message, "wrong_type", "the JSON value must be an object")

    if tabular and (fmt.series_key is None or fmt.series_key not in body):
        series = message.key.decode("utf-8", "replace") if message.key else message.topic
    elif fmt.series_key is None:
        if message.key is None:
            raise InvalidMessage(message, "missing_field", "no message key to name the series")
        series = message.key.decode("utf-8", "replace")
    else:
        if fmt.series_key not in body:
            raise InvalidMessage(message, "missing_field", f"no field {fmt.series_key!r}")
        series = str(body[fmt.series_key])

    if fmt.timestamp_field is None or (tabular and fmt.timestamp_field not in body):
        timestamp_ms = message.timestamp_ms
    else:
        if fmt.timestamp_field not in body:
            raise InvalidMessage(message, "missing_field", f"no field {fmt.timestamp_field!r}")
        try:
            timestamp_ms = parse_timestamp_ms(body[fmt.timestamp_field])
        except ValueError as exc:
            raise InvalidMessage(message, "wrong_type", f"{fmt.timestamp_field}: {exc}") from None

    values = []
    for name in fmt.value_fields:
        if name not in body:
            raise InvalidMessage(message, "missing_field", f"no field {name!r}")
        raw = body[name]
        if isinstance(raw, list):
            raise InvalidMessage(
                message,
                "feature_count",
                f"{name!r} holds a list of {len(raw)}; each value field holds one number",
            )
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise InvalidMessage(
                message, "wrong_type", f"{name!r} is {type(raw).__name__}, not a number"
            )
        if not math.isfinite(raw):
            raise InvalidMessage(message, "non_finite", f"{name!r} is {raw}")
        values.append(raw)
    return Event(series, timestamp_ms, np.asarray(values, dtype=np.float32), message)
