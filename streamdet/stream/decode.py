"""Turn a raw message into a (series, timestamp, values) event, or say exactly why not.

Whatever bytes a message holds, decoding returns an :class:`Event` or raises
:class:`InvalidMessage` with one of :data:`REASONS`. Limits (size, JSON depth, number range,
event time around the wall clock, series names, image size) are checked before the work
they guard, so a hostile message costs no more than a valid one.

>>> from streamdet.config import MessageFormat
>>> from streamdet.core.records import Event, Message
>>> msg = Message("s", 0, 7, None, b'{"sensor": "a", "ts": 1700000000, "value": 1.5}', 0)
>>> event = decode_timeseries(msg, MessageFormat())
>>> event.series, event.timestamp_ms, event.values.tolist()
('a', 1700000000000, [1.5])
>>> decode_timeseries(Message("s", 0, 8, None, b'{"sensor": "a"}', 0), MessageFormat())
Traceback (most recent call last):
...
streamdet.stream.decode.InvalidMessage: topic s partition 0 offset 8: missing_field: no field 'ts'
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from streamdet.config import LimitsConfig, MessageFormat
from streamdet.core.errors import StreamdetError
from streamdet.core.records import Event, Message

REASONS = (
    "too_large",
    "too_deep",
    "undecodable_json",
    "missing_field",
    "wrong_type",
    "non_finite",
    "number_out_of_range",
    "timestamp_out_of_range",
    "invalid_series",
    "feature_count",
    "undecodable_image",
    "image_too_large",
    "wrong_shape",
    "scoring_failed",
    "decode_error",
    # Avro and Protobuf (Confluent wire format):
    "unknown_schema",
    "undecodable_record",
    "schema_mismatch",
)
FLOAT32_MAX = float(np.finfo(np.float32).max)
# Timestamps must be dates: from 1970-01-01 to the end of the year 9999.
LATEST_MS = 253_402_300_799_999
DEFAULT_LIMITS = LimitsConfig()

# A schema-driven encoding's reader: one message's record as a dict of its fields, or
# InvalidMessage (streamdet.stream.record_readers picks one per topic; None: JSON).
RecordReader = Callable[[Message], dict[str, Any]]


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


def parse_timestamp_ms(raw: object) -> int:
    """Epoch seconds or milliseconds (told apart by size), or an ISO 8601 string.

    >>> parse_timestamp_ms(1700000000), parse_timestamp_ms(1700000000123)
    (1700000000000, 1700000000123)
    >>> parse_timestamp_ms("2023-11-14T22:13:20Z"), parse_timestamp_ms("2023-11-14 22:13:20")
    (1700000000000, 1700000000000)
    """
    if isinstance(raw, bool):
        raise ValueError("a boolean is not a timestamp")
    if isinstance(raw, datetime):  # Avro's timestamp-millis and -micros logical types
        zoned = raw if raw.tzinfo is not None else raw.replace(tzinfo=UTC)
        return int(zoned.timestamp() * 1000)
    if isinstance(raw, int):
        return raw if abs(raw) >= 1e11 else raw * 1000
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise ValueError("timestamp is not finite")
        # Epoch seconds stay below 1e11 until the year 5138; milliseconds are above it.
        return int(raw) if abs(raw) >= 1e11 else round(raw * 1000)
    if isinstance(raw, str):
        if len(raw) > 64:
            raise ValueError("an ISO 8601 timestamp has at most 64 characters")
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if parsed.tzinfo is None:  # a time without a zone is UTC, whatever the host's zone
            parsed = parsed.replace(tzinfo=UTC)
        return int(parsed.timestamp() * 1000)
    raise ValueError(f"expected epoch seconds/milliseconds or ISO 8601, got {type(raw).__name__}")


# ---- the parts every message kind shares ------------------------------------------------
def _check_size(message: Message, limits: LimitsConfig) -> None:
    if len(message.value) > limits.max_message_bytes:
        raise InvalidMessage(
            message,
            "too_large",
            f"{len(message.value)} bytes; the topic's limit is {limits.max_message_bytes}",
        )


def nesting_depth(raw: bytes) -> int:
    """The deepest nesting of ``[`` and ``{`` in JSON text, strings left out, measured
    before parsing (the parser's own limit depends on the caller's stack).

    Linear in the message's size, whatever it holds: a quote is escaped when an odd run of
    backslashes ends just before it, bytes after an odd number of unescaped quotes are
    inside a string, and the depth is the running count of the brackets outside strings
    (a regular expression over the strings took quadratic time on many escaped quotes).

    >>> nesting_depth(b'{"a": [1, {"b": "[[[\\\\\\"["}]}')
    3
    """
    if b"[" not in raw and b"{" not in raw:
        return 0
    codes = np.frombuffer(raw, dtype=np.uint8)
    position = np.arange(len(codes))
    # The last position at or before each byte that is not a backslash.
    last_plain = np.maximum.accumulate(np.where(codes == 92, -1, position))
    backslashes_before = np.zeros(len(codes), np.int64)
    backslashes_before[1:] = position[:-1] - last_plain[:-1]
    quotes = (codes == 34) & (backslashes_before % 2 == 0)
    outside = np.cumsum(quotes) % 2 == 0
    steps = (outside & ((codes == 91) | (codes == 123))).astype(np.int64)
    steps -= outside & ((codes == 93) | (codes == 125))
    return int(np.cumsum(steps).max(initial=0))


def _json_object(message: Message, raw: bytes, limits: LimitsConfig) -> dict:
    too_deep = f"JSON nested deeper than {limits.max_json_depth} levels"
    openers = raw.count(b"[") + raw.count(b"{")  # cheap bound: most messages stop here
    if openers > limits.max_json_depth and nesting_depth(raw) > limits.max_json_depth:
        raise InvalidMessage(message, "too_deep", too_deep)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # What orjson refuses and the standard library reads (NaN and Infinity literals,
        # numbers beyond a double, lone surrogates, a byte-order mark) is judged as it always
        # was: read here, then refused by the same checks with the same reasons.
        try:
            body = json.loads(raw)
        except RecursionError:
            raise InvalidMessage(message, "too_deep", too_deep) from None
        except (UnicodeDecodeError, ValueError) as exc:  # bad JSON, integers over 4,300 digits
            raise InvalidMessage(message, "undecodable_json", str(exc)[:200]) from None
    if not isinstance(body, dict):
        raise InvalidMessage(message, "wrong_type", "the JSON value must be an object")
    return body


def _series(
    message: Message, body: dict, fmt: MessageFormat, fallback: bool, limits: LimitsConfig
) -> str:
    """The ``series_key`` field; else the message key; else (if ``fallback``) the topic."""
    if fmt.series_key is not None and fmt.series_key in body:
        raw = body[fmt.series_key]
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise InvalidMessage(
                message, "invalid_series", f"{fmt.series_key!r} is {type(raw).__name__}"
            )
        if isinstance(raw, int) and not -(2**63) <= raw < 2**63:
            raise InvalidMessage(message, "invalid_series", "the series number is too large")
        series = str(raw)
    elif fmt.series_key is not None and not fallback:
        raise InvalidMessage(message, "missing_field", f"no field {fmt.series_key!r}")
    elif message.key is not None:
        series = message.key.decode("utf-8", "replace")
    elif fallback:
        series = message.topic
    else:
        raise InvalidMessage(message, "missing_field", "no message key to name the series")
    if not series or len(series) > limits.max_series_chars:
        raise InvalidMessage(
            message,
            "invalid_series",
            f"a series name has 1 to {limits.max_series_chars} characters; got {len(series)}",
        )
    try:
        series.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidMessage(
            message, "invalid_series", "the series name is not valid UTF-8 (lone surrogate)"
        ) from None
    return series


def _timestamp(
    message: Message,
    body: dict,
    fmt: MessageFormat,
    optional: bool,
    limits: LimitsConfig,
    now_ms: int | None,
) -> int:
    field = fmt.timestamp_field
    if field is None or (optional and field not in body):
        timestamp_ms = message.timestamp_ms
    else:
        if field not in body:
            raise InvalidMessage(message, "missing_field", f"no field {field!r}")
        try:
            timestamp_ms = parse_timestamp_ms(body[field])
        except OverflowError:
            raise InvalidMessage(
                message, "timestamp_out_of_range", f"{field} is too large"
            ) from None
        except ValueError as exc:
            raise InvalidMessage(message, "wrong_type", f"{field}: {exc}") from None
    if not 0 <= timestamp_ms <= LATEST_MS:
        digits = len(str(abs(timestamp_ms)))
        shown = str(timestamp_ms) if digits < 20 else f"a {digits}-digit number of"
        raise InvalidMessage(
            message, "timestamp_out_of_range", f"{shown} ms is not a date in 1970..9999"
        )
    if now_ms is not None:
        ahead = timestamp_ms - now_ms
        if limits.max_future_ms is not None and ahead > limits.max_future_ms:
            raise InvalidMessage(
                message,
                "timestamp_out_of_range",
                f"{ahead / 1000:.0f} s ahead of the wall clock "
                f"(limits.max_future_ms: {limits.max_future_ms})",
            )
        if limits.max_age_ms is not None and -ahead > limits.max_age_ms:
            raise InvalidMessage(
                message,
                "timestamp_out_of_range",
                f"{-ahead / 1000:.0f} s old (limits.max_age_ms: {limits.max_age_ms})",
            )
    return timestamp_ms


def _number(message: Message, name: str, raw: object) -> float:
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
    try:
        value = float(raw)
    except OverflowError:
        raise InvalidMessage(message, "number_out_of_range", f"{name!r} is too large") from None
    if not math.isfinite(value):
        raise InvalidMessage(message, "non_finite", f"{name!r} is {raw}")
    if abs(value) > FLOAT32_MAX:
        raise InvalidMessage(
            message, "number_out_of_range", f"{name!r} = {value:g} is beyond float32 (±3.4e38)"
        )
    return value


# ---- time series and rows ---------------------------------------------------------------
def decode_timeseries(
    message: Message,
    fmt: MessageFormat,
    tabular: bool = False,
    limits: LimitsConfig = DEFAULT_LIMITS,
    now_ms: int | None = None,
    read_record: RecordReader | None = None,
) -> Event:
    """Decode one message according to its topic's format.

    ``tabular`` rows need no series or timestamp: a missing series field falls back to the
    message key, then the topic; a missing timestamp field to the Kafka timestamp.
    ``now_ms`` (the wall clock) turns on the event-time bounds of ``limits``. ``read_record``
    reads an Avro or Protobuf record (None: the message is JSON).
    """
    _check_size(message, limits)
    body = (
        _json_object(message, message.value, limits)
        if read_record is None
        else read_record(message)
    )
    series = _series(message, body, fmt, tabular, limits)
    timestamp_ms = _timestamp(message, body, fmt, tabular, limits, now_ms)
    values = []
    for name in fmt.value_fields:
        if name not in body:
            raise InvalidMessage(message, "missing_field", f"no field {name!r}")
        values.append(_number(message, name, body[name]))
    return Event(series, timestamp_ms, np.asarray(values, dtype=np.float32), message)


# ---- images -----------------------------------------------------------------------------
PNG_MAGIC = b"\x89PNG"
NPY_MAGIC = b"\x93NUMPY"


def _check_declared(message: Message, declared: tuple[int, ...], expected: tuple[int, ...]) -> None:
    """Refuse an image by the size its header declares, before any of it is decoded."""
    pixels = math.prod(int(d) for d in declared)
    if pixels > math.prod(expected):
        raise InvalidMessage(
            message,
            "image_too_large",
            f"the header declares shape {tuple(declared)}, expected {tuple(expected)}",
        )
    if pixels != math.prod(expected):
        raise InvalidMessage(
            message, "wrong_shape", f"image of shape {tuple(declared)}, expected {tuple(expected)}"
        )


def _image_array(raw: bytes, message: Message, shape: tuple[int, int, int]) -> np.ndarray:
    channels = shape[2]
    if raw.startswith(PNG_MAGIC):
        from PIL import Image

        try:
            with Image.open(io.BytesIO(raw)) as image:  # reads the header only
                width, height = image.size
                _check_declared(message, (height, width, channels), shape)
                array = np.asarray(image.convert("L" if channels == 1 else "RGB"))
        except InvalidMessage:
            raise
        except Image.DecompressionBombError as exc:
            raise InvalidMessage(message, "image_too_large", str(exc)[:300]) from None
        except Exception as exc:  # PIL raises many types on hostile files
            detail = f"bad PNG: {type(exc).__name__}: {exc}"[:300]
            raise InvalidMessage(message, "undecodable_image", detail) from None
        return array[..., None] if array.ndim == 2 else array
    if raw.startswith(NPY_MAGIC):
        stream = io.BytesIO(raw)
        try:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                declared, _, dtype = np.lib.format.read_array_header_1_0(stream)
            else:
                declared, _, dtype = np.lib.format.read_array_header_2_0(stream)
        except Exception as exc:
            detail = f"bad .npy header: {type(exc).__name__}: {exc}"[:300]
            raise InvalidMessage(message, "undecodable_image", detail) from None
        if dtype.hasobject:
            raise InvalidMessage(message, "wrong_type", "an array of objects is not an image")
        _check_declared(message, tuple(declared), shape)
        try:
            return np.load(io.BytesIO(raw), allow_pickle=False)
        except Exception as exc:
            detail = f"bad .npy: {type(exc).__name__}: {exc}"[:300]
            raise InvalidMessage(message, "undecodable_image", detail) from None
    raise InvalidMessage(message, "undecodable_image", "neither PNG nor .npy bytes")


def decode_image(
    message: Message,
    fmt: MessageFormat,
    shape: tuple[int, int, int],
    limits: LimitsConfig = DEFAULT_LIMITS,
    now_ms: int | None = None,
    read_record: RecordReader | None = None,
) -> Event:
    """PNG bytes, raw ``.npy`` bytes, JSON with a base64 PNG in ``fmt.image_field``, or an
    Avro or Protobuf record (``read_record``) with PNG or ``.npy`` bytes in that field.

    8-bit images are scaled to [0, 1]; float images must already be in [0, 1]. The values
    come back flattened (height * width * channels), as the window store holds rows.
    """
    _check_size(message, limits)
    body: dict = {}
    raw = message.value
    if read_record is not None:
        body = read_record(message)
        raw = body.get(fmt.image_field)  # type: ignore[assignment]
        if not isinstance(raw, bytes):
            detail = f"no bytes field {fmt.image_field!r}"
            raise InvalidMessage(message, "missing_field", detail)
    elif raw[:1] == b"{":
        body = _json_object(message, raw, limits)
        if fmt.image_field not in body:
            raise InvalidMessage(message, "missing_field", f"no field {fmt.image_field!r}")
        try:
            raw = base64.b64decode(body[fmt.image_field], validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise InvalidMessage(message, "undecodable_image", f"bad base64: {exc}") from None
    array = _image_array(raw, message, shape)
    if array.ndim == 2:
        array = array[..., None]
    if tuple(array.shape) != tuple(shape):
        raise InvalidMessage(
            message, "wrong_shape", f"image of shape {tuple(array.shape)}, expected {tuple(shape)}"
        )
    if array.dtype == np.uint8:
        values = array.astype(np.float32) / 255.0
    elif np.issubdtype(array.dtype, np.floating):
        with np.errstate(over="ignore", invalid="ignore"):
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
    series = _series(message, body, fmt, True, limits)
    timestamp_ms = _timestamp(message, body, fmt, True, limits, now_ms)
    return Event(series, timestamp_ms, values.reshape(-1), message)
