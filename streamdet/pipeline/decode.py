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

import base64
import binascii
import io
import json
import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from streamdet.config import MessageFormat
from streamdet.errors import StreamdetError
from streamdet.sources.base import Message

REASONS = (
    "undecodable_json",
    "missing_field",
    "wrong_type",
    "non_finite",
    "feature_count",
    "undecodable_image",
    "wrong_shape",
)


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


PNG_MAGIC = b"\x89PNG"
NPY_MAGIC = b"\x93NUMPY"


def _image_array(raw: bytes, message: Message, channels: int) -> np.ndarray:
    if raw.startswith(PNG_MAGIC):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(raw)) as image:
                array = np.asarray(image.convert("L" if channels == 1 else "RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise InvalidMessage(message, "undecodable_image", f"bad PNG: {exc}") from None
        return array[..., None] if array.ndim == 2 else array
    if raw.startswith(NPY_MAGIC):
        try:
            return np.load(io.BytesIO(raw), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InvalidMessage(message, "undecodable_image", f"bad .npy: {exc}") from None
    raise InvalidMessage(message, "undecodable_image", "neither PNG nor .npy bytes")


def decode_image(message: Message, fmt: MessageFormat, shape: tuple[int, int, int]) -> Event:
    """PNG bytes, raw ``.npy`` bytes, or JSON with a base64 PNG in ``fmt.image_field``.

    8-bit images are scaled to [0, 1]; float images must already be in [0, 1]. The values
    come back flattened (height * width * channels), as the window store holds rows.
    """
    body: dict = {}
    raw = message.value
    if raw[:1] == b"{":
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidMessage(message, "undecodable_json", str(exc)) from None
        if not isinstance(body, dict) or fmt.image_field not in body:
            raise InvalidMessage(message, "missing_field", f"no field {fmt.image_field!r}")
        try:
            raw = base64.b64decode(body[fmt.image_field], validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise InvalidMessage(message, "undecodable_image", f"bad base64: {exc}") from None
    array = _image_array(raw, message, shape[2])
    if array.ndim == 2:
        array = array[..., None]
    if tuple(array.shape) != tuple(shape):
        raise InvalidMessage(
            message, "wrong_shape", f"image of shape {tuple(array.shape)}, expected {tuple(shape)}"
        )
    if array.dtype == np.uint8:
        values = array.astype(np.float32) / 255.0
    elif np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float32)
        if not np.isfinite(values).all():
            raise InvalidMessage(message, "non_finite", "the image holds NaN or inf")
        if values.min() < 0 or values.max() > 1:
            raise InvalidMessage(
                message,
                "wrong_type",
                f"float pixels must be in [0, 1]; got [{values.min():g}, {values.max():g}]",
            )
    else:
        raise InvalidMessage(message, "wrong_type", f"pixels of dtype {array.dtype}")
    if fmt.series_key and fmt.series_key in body:
        series = str(body[fmt.series_key])
    else:
        series = message.key.decode("utf-8", "replace") if message.key else message.topic
    timestamp_ms = message.timestamp_ms
    if fmt.timestamp_field and fmt.timestamp_field in body:
        try:
            timestamp_ms = parse_timestamp_ms(body[fmt.timestamp_field])
        except ValueError as exc:
            raise InvalidMessage(message, "wrong_type", f"{fmt.timestamp_field}: {exc}") from None
    return Event(series, timestamp_ms, values.reshape(-1), message)
