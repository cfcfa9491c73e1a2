"""The embedded default source: simulated sensors with anomalies injected at known steps.

Each sensor has a daily and a weekly cycle, a sensor-specific level and amplitude, and
Gaussian noise. Every ``anomaly_every`` steps one sensor (in turn) gets an anomaly, cycling
through a spike, a level shift, a slow drift and a frequency change, each lasting a few
dozen steps. :meth:`SensorSimulator.injected` lists them, so tests and the user can check
the alerts against the truth.

>>> sim = SensorSimulator(sensors=2, period=24, anomaly_every=100, seed=1)
>>> events = [sim.next_event() for _ in range(600)]
>>> events[0]["sensor"], events[1]["sensor"], events[2]["step"]
('sensor-0', 'sensor-1', 1)
>>> [a.kind for a in sim.injected()][:2]
['spike', 'level_shift']
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import numpy as np

from streamdet.io.sources.base import Message, OnePartitionSource

KINDS = ("spike", "level_shift", "drift", "frequency")
DURATION = {"spike": 3, "level_shift": 40, "drift": 60, "frequency": 40}
FIRST_MS = 1_700_000_000_000  # the first step's timestamp (2023-11-14T22:13:20Z)
STEP_MS = 60_000


@dataclass(frozen=True)
class InjectedAnomaly:
    sensor: str
    kind: str
    start_step: int
    end_step: int  # exclusive


class SensorSimulator:
    """Deterministic (seeded) multi-sensor signal generator, one event per call."""

    def __init__(
        self,
        sensors: int = 4,
        period: int = 96,
        noise: float = 0.05,
        anomaly_every: int = 700,
        seed: int = 7,
        first_anomaly: int | None = None,
        permanent_shift_at: int | None = None,
        scales: tuple[float, ...] | None = None,
        first_ms: int = FIRST_MS,
    ) -> None:
        self.sensors = sensors
        self.first_ms = first_ms
        self.period = period
        self.noise = noise
        self.anomaly_every = anomaly_every
        self.first_anomaly = first_anomaly if first_anomaly is not None else anomaly_every
        self._rng = np.random.default_rng(seed)
        self._levels = 20 + 5 * self._rng.random(sensors)
        self._amplitudes = 1 + self._rng.random(sensors)
        # From this step on sensor-0's level is 3 amplitudes higher for good (a
        # re-calibration): the model must learn the new normal, not alert forever.
        self.permanent_shift_at = permanent_shift_at
        # Sensor k's signal (noise and anomalies included) times scales[k]: series at very
        # different magnitudes on one topic.
        self.scales = tuple(scales) if scales else (1.0,) * sensors
        if len(self.scales) != sensors:
            raise ValueError(f"scales needs one factor per sensor ({sensors})")
        self._count = 0

    def _anomaly_at(self, sensor: int, step: int) -> InjectedAnomaly | None:
        if step < self.first_anomaly:
            return None
        k = (step - self.first_anomaly) // self.anomaly_every
        start = self.first_anomaly + k * self.anomaly_every
        if k % self.sensors != sensor:
            return None
        kind = KINDS[(k // self.sensors + k) % len(KINDS)]
        end = start + DURATION[kind]
        return InjectedAnomaly(f"sensor-{sensor}", kind, start, end) if step < end else None

    def value(self, sensor: int, step: int, noise: float) -> float:
        phase = 2 * math.pi * step / self.period
        weekly = 0.3 * math.sin(phase / 7)
        base = self._levels[sensor] + self._amplitudes[sensor] * (math.sin(phase) + weekly)
        if sensor == 0 and self.permanent_shift_at is not None and step >= self.permanent_shift_at:
            base += 3 * self._amplitudes[sensor]
        anomaly = self._anomaly_at(sensor, step)
        if anomaly is not None:
            into = step - anomaly.start_step
            amp = self._amplitudes[sensor]
            if anomaly.kind == "spike":
                base += 6 * amp
            elif anomaly.kind == "level_shift":
                base += 3 * amp
            elif anomaly.kind == "drift":
                base += 5 * amp * into / DURATION["drift"]
            else:
                base = self._levels[sensor] + amp * math.sin(4 * phase)
        return float((base + noise) * self.scales[sensor])

    def next_event(self) -> dict[str, object]:
        """The next event, round-robin over sensors: {sensor, step, ts, value}."""
        sensor = self._count % self.sensors
        step = self._count // self.sensors
        self._count += 1
        noise = self.noise * float(self._rng.standard_normal())
        return {
            "sensor": f"sensor-{sensor}",
            "step": step,
            "ts": self.first_ms + step * STEP_MS,
            "value": float(f"{self.value(sensor, step, noise):.7g}"),
        }

    @property
    def clock_ms(self) -> int:
        """The simulated time: the newest step's timestamp (a step is a simulated minute)."""
        return self.first_ms + max(self._count - 1, 0) // self.sensors * STEP_MS

    def injected(self, up_to_step: int | None = None) -> list[InjectedAnomaly]:
        """Every anomaly injected so far (or before ``up_to_step``)."""
        last = (self._count // self.sensors) if up_to_step is None else up_to_step
        found = []
        k = 0
        while True:
            start = self.first_anomaly + k * self.anomaly_every
            if start >= last:
                return found
            found.append(self._anomaly_at(k % self.sensors, start))
            k += 1


class SimulatorSource(OnePartitionSource):
    """A :class:`~streamdet.io.sources.base.Source` that paces simulated events in real time.

    It owns its one partition for good (no rebalances) and keeps commits in memory.
    """

    def __init__(
        self, topic: str, simulator: SensorSimulator, rate: float, max_events: int | None = None
    ) -> None:
        super().__init__(topic)
        self.simulator = simulator
        self.rate = rate
        self.max_events = max_events
        self._offset = 0
        self._started = time.monotonic()

    @property
    def exhausted(self) -> bool:
        return self.max_events is not None and self._offset >= self.max_events

    def poll(self, timeout_ms: int) -> list[Message]:
        due = int((time.monotonic() - self._started) * self.rate)
        if self.max_events is not None:
            due = min(due, self.max_events)
        if due <= self._offset or self._paused:
            time.sleep(min(timeout_ms / 1000, 1 / self.rate))
            return []
        batch = []
        for _ in range(min(due - self._offset, 5000)):
            event = self.simulator.next_event()
            batch.append(
                Message(
                    self.topic,
                    0,
                    self._offset,
                    str(event["sensor"]).encode(),
                    json.dumps(event).encode(),
                    int(event["ts"]),
                )  # type: ignore[call-overload]
            )
            self._offset += 1
        return batch

    def clock_ms(self) -> int:
        """The simulated clock, which runs far ahead of the wall clock (a step per simulated
        minute): checked against it, the events of a long run would soon be from the
        future."""
        return self.simulator.clock_ms
