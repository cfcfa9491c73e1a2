"""Event-time bounds are checked against the source's clock: the wall clock for Kafka, the
simulated clock for the embedded simulator (whose steps are simulated minutes, so a long
`make run` gets far ahead of the wall clock)."""

from __future__ import annotations

import time

import pytest

from streamdet.config import LimitsConfig, MessageFormat
from streamdet.io.sources.base import wall_clock_ms
from streamdet.io.sources.simulator import STEP_MS, SensorSimulator, SimulatorSource
from streamdet.stream.decode import InvalidMessage, decode_timeseries


def test_the_simulators_events_are_never_ahead_of_its_own_clock() -> None:
    days_ahead = wall_clock_ms() + 10 * 86_400_000
    source = SimulatorSource("sensors", SensorSimulator(3, first_ms=days_ahead), rate=10_000)
    time.sleep(0.05)
    messages = source.poll(100)
    assert len(messages) >= 30
    limits = LimitsConfig()
    now = source.clock_ms()
    assert now == days_ahead + (len(messages) - 1) // 3 * STEP_MS
    events = [decode_timeseries(m, MessageFormat(), False, limits, now) for m in messages]
    assert max(e.timestamp_ms for e in events) == now
    with pytest.raises(InvalidMessage, match="ahead of the wall clock"):
        decode_timeseries(messages[0], MessageFormat(), False, limits, wall_clock_ms())


def test_an_event_minutes_ahead_of_the_wall_clock_is_refused_by_default() -> None:
    """One event stamped hours ahead would hold back its series' real events as late."""
    now = wall_clock_ms()
    source = SimulatorSource("sensors", SensorSimulator(1, first_ms=now + 301_000), rate=1000)
    time.sleep(0.01)
    with pytest.raises(InvalidMessage, match=r"timestamp_out_of_range.*max_future_ms: 300000"):
        decode_timeseries(source.poll(100)[0], MessageFormat(), False, LimitsConfig(), now)
