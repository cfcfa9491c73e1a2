"""A partition whose records wait unfetched is logged, then fails ``/healthz``'s check.

The real client's stall (kafka-python, on the real broker) is reproduced in
``tests/io/test_kafka_broker.py``; here the source reports one, so the loop's reaction is
seen without waiting the ten minutes the health check allows."""

from __future__ import annotations

import logging

from prometheus_client import generate_latest

from streamdet import app as app_module
from streamdet.app import Application
from streamdet.config import load_config_text
from streamdet.core.records import TopicPartition
from streamdet.io.sources.simulator import SensorSimulator, SimulatorSource


class StallingSource(SimulatorSource):
    """The simulator, reporting whatever stall the test sets."""

    def __init__(self) -> None:
        super().__init__("sensors", SensorSimulator(2, 48, 0.05, 300, 3), rate=1000)
        self.stall: dict[TopicPartition, float] = {}

    def stalled(self) -> dict[TopicPartition, float]:
        return dict(self.stall)


def test_a_stalled_partition_is_logged_then_fails_the_health_check(tmp_path, caplog):
    config = load_config_text(
        f"""
topics:
  - name: sensors
    window: {{seq_len: 4}}
    detector: {{name: seq2seq, params: {{latent_dim: 4}}, warmup_events: 10_000}}
alerts: {{file: null, stdout: false}}
models: {{store: {tmp_path}}}
""",
        environ={},
    )
    source = StallingSource()
    app = Application(config, source=source, serve_metrics=False, progress=lambda m: None)
    caplog.set_level(logging.WARNING, logger="streamdet.app")

    def report(seconds: float) -> None:
        source.stall = {("sensors", 0): seconds}
        app._last_lag = 0.0  # the loop's next report reads the source now
        app.turn()

    report(30.0)
    assert app.healthy()[0] and not caplog.records
    report(app_module.STALLED_WARN_S + 1)
    assert app.healthy()[0]
    assert "sensors/0" in caplog.text and "does not fetch" in caplog.text
    report(app_module.STALLED_UNHEALTHY_S + 1)
    healthy, reason = app.healthy()
    assert not healthy and "('sensors', 0)" in reason
    exported = generate_latest(app.metrics.registry).decode()
    stalled = app_module.STALLED_UNHEALTHY_S + 1
    sample = f'streamdet_partition_stalled_seconds{{partition="0",topic="sensors"}} {stalled}'
    assert sample in exported
    report(0.0)
    assert app.healthy()[0] and "sensors/0 is read again" in caplog.text
