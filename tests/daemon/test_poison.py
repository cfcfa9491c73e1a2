"""Hostile messages: every one becomes an event or an InvalidMessage with a reason, never
another exception (pure decoding; the daemon on a real broker is in test_daemon_poison)."""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamdet.config import LimitsConfig, MessageFormat
from streamdet.io.sources.base import Message
from streamdet.stream.decode import REASONS, InvalidMessage, decode_image, decode_timeseries

NOW_MS = 1_800_000_000_000
FMT = MessageFormat()
SHAPE = (12, 12, 1)


def message(raw: bytes, key: bytes | None = b"k") -> Message:
    return Message("plant", 0, 41, key, raw, NOW_MS)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` 8-bit grey pixels (with one tiny,
    truncated data chunk: a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)


def npy_declaring(shape: tuple[int, ...]) -> bytes:
    header = repr({"descr": "<f4", "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\x00" * 16


def object_npy() -> bytes:
    """An .npy of Python objects: loading it would unpickle, so it is refused unread."""
    buffer = io.BytesIO()
    np.save(buffer, np.full(SHAPE, None, dtype=object), allow_pickle=True)
    return buffer.getvalue()


def body(**fields: object) -> bytes:
    return json.dumps({"sensor": "a", "ts": NOW_MS, "value": 1.0, **fields}).encode()


TIMESERIES_POISON = {
    "deep JSON": (b'{"sensor": ' + b"[" * 5000 + b"]" * 5000 + b"}", "too_deep"),
    "moderately deep JSON": (b'{"x": ' + b"[" * 100 + b"]" * 100 + b"}", "too_deep"),
    "400-digit value": (body().replace(b"1.0", b"9" * 400), "number_out_of_range"),
    "5000-digit value": (body().replace(b"1.0", b"9" * 5000), "undecodable_json"),
    "timestamp 1e300": (body(ts=1e300), "timestamp_out_of_range"),
    "5000-digit timestamp": (
        body().replace(str(NOW_MS).encode(), b"7" * 5000),
        "undecodable_json",
    ),
    "4000-digit timestamp": (
        body().replace(str(NOW_MS).encode(), b"7" * 4000),
        "timestamp_out_of_range",
    ),
    "negative timestamp": (body(ts=-5), "timestamp_out_of_range"),
    "a year ahead": (body(ts=NOW_MS + 365 * 86_400_000), "timestamp_out_of_range"),
    "value 1e39 (inf as float32)": (body(value=1e39), "number_out_of_range"),
    "lone surrogate series": (
        b'{"sensor": "\\ud800", "ts": 1800000000000, "value": 1}',
        "invalid_series",
    ),
    "series of 10,000 characters": (body(sensor="s" * 10_000), "invalid_series"),
    "series as an object": (body(sensor={"a": 1}), "invalid_series"),
    "over the size limit": (body(pad="x" * 2_000_000), "too_large"),
    "ISO timestamp of 5,000 characters": (body(ts="2" * 5000), "wrong_type"),
    # A pre-check quadratic in the escaped quotes took hours on this (now linear).
    "brackets, then a megabyte of escaped quotes": (
        b'{"x": [[[[ "' + b'\\"' * 500_000,
        "undecodable_json",
    ),
}


@pytest.mark.parametrize("case", sorted(TIMESERIES_POISON))
def test_timeseries_poison_gets_its_reason(case):
    raw, reason = TIMESERIES_POISON[case]
    with pytest.raises(InvalidMessage) as info:
        decode_timeseries(message(raw), FMT, now_ms=NOW_MS)
    assert info.value.reason == reason, info.value
    assert str(info.value).startswith("topic plant partition 0 offset 41: ")


def test_event_time_bounds_are_configurable():
    old = body(ts=NOW_MS - 10 * 86_400_000)
    assert decode_timeseries(message(old), FMT, now_ms=NOW_MS).timestamp_ms > 0  # any age
    strict = LimitsConfig(max_age_ms=86_400_000, max_future_ms=0)
    for raw in (old, body(ts=NOW_MS + 1000)):
        with pytest.raises(InvalidMessage, match=r"timestamp_out_of_range.*limits\.max_"):
            decode_timeseries(message(raw), FMT, limits=strict, now_ms=NOW_MS)


IMAGE_POISON = {
    "PNG declaring 100000x100000": (png_declaring(100_000, 100_000), "image_too_large"),
    "PNG declaring 8x8": (png_declaring(8, 8), "wrong_shape"),
    "truncated PNG of the right size": (png_declaring(12, 12)[:-20], "undecodable_image"),
    ".npy declaring a huge shape": (npy_declaring((100_000, 100_000, 3)), "image_too_large"),
    ".npy with a broken header": (b"\x93NUMPY\x01\x00\xff\xff{'descr'", "undecodable_image"),
    ".npy of pickled objects": (object_npy(), "wrong_type"),
}


@pytest.mark.parametrize("case", sorted(IMAGE_POISON))
def test_image_poison_is_refused_before_decoding(case):
    raw, reason = IMAGE_POISON[case]
    with pytest.raises(InvalidMessage) as info:
        decode_image(message(raw), MessageFormat(series_key="camera"), SHAPE, now_ms=NOW_MS)
    assert info.value.reason == reason, info.value


def test_a_valid_npy_image_still_decodes():
    buffer = io.BytesIO()
    np.save(buffer, np.full(SHAPE, 0.5, np.float32))
    event = decode_image(message(buffer.getvalue()), MessageFormat(), SHAPE)
    assert event.values.shape == (144,) and event.series == "k"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**500), max_value=10**500)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
fields = st.fixed_dictionaries(
    {},
    optional={"sensor": json_values, "ts": json_values, "value": json_values, "image": json_values},
)


def _assert_decodes_or_refuses(raw: bytes, key: bytes | None) -> None:
    for decode in (
        lambda m: decode_timeseries(m, FMT, now_ms=NOW_MS),
        lambda m: decode_timeseries(m, FMT, tabular=True, now_ms=NOW_MS),
        lambda m: decode_image(m, MessageFormat(), SHAPE, now_ms=NOW_MS),
    ):
        try:
            event = decode(message(raw, key))
        except InvalidMessage as exc:
            assert exc.reason in REASONS
            continue
        assert np.isfinite(event.values).all()
        assert abs(event.values).max(initial=0) <= np.finfo(np.float32).max
        event.series.encode("utf-8")  # a valid series name: alerts and /metrics can carry it
        assert 0 <= event.timestamp_ms <= NOW_MS + 86_400_000


# 2,000 generated bodies a run (32 s at 5,000 on the loaded 2-core CI machine); runs draw
# different ones, so the coverage adds up across runs.
@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(fields, st.one_of(st.none(), st.binary(max_size=12)))
def test_fuzzed_json_messages_never_raise_anything_else(body_fields, key):
    raw = json.dumps(body_fields, allow_nan=True).encode("utf-8", "surrogatepass")
    _assert_decodes_or_refuses(raw, key)


@settings(max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=300), st.sampled_from([b"", b"{", b"\x89PNG\r\n\x1a\n", b"\x93NUMPY"]))
def test_fuzzed_bytes_never_raise_anything_else(raw, prefix):
    _assert_decodes_or_refuses(prefix + raw, None)
