"""Back-pressure: windows waiting for a model are bounded in bytes by pausing the source."""

from __future__ import annotations

import json
import threading
import time

from streamdet.app import Application
from streamdet.config import load_config_text


def test_a_full_backlog_pauses_its_topic_instead_of_dropping_windows(tmp_path):
    """A model that cannot train: windows wait, and past max_backlog_bytes the source is
    paused (the embedded simulator stands in for Kafka's pause)."""
    config = load_config_text(
        f"""
topics:
  - name: sensors
    window: {{seq_len: 4}}
    detector: {{name: seq2seq, params: {{latent_dims: 8}}, warmup_events: 10, retry_after_s: 600}}
simulator: {{rate: 4000, sensors: 2}}
batching: {{max_backlog_bytes: 2048}}
alerts: {{file: null, stdout: false}}
models: {{store: {tmp_path}}}
""",
        environ={},
    )
    app = Application(config, serve_metrics=False, progress=lambda m: None)
    runner = threading.Thread(target=app.run, kwargs={"install_signal_handlers": False})
    runner.start()
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not app.pipelines["sensors"].paused:
            time.sleep(0.2)
        pipeline = app.pipelines["sensors"]
        assert pipeline.lifecycle.state == "failed" and pipeline.paused
        held = len(pipeline.backlog)
        events = pipeline.events
        time.sleep(1.0)
        assert len(pipeline.backlog) == held > 0  # nothing dropped
        assert pipeline.events == events  # nothing more consumed
        assert pipeline.backlog_bytes > 2048
    finally:
        app.stop()
        runner.join(30)


def test_a_lasting_alert_sink_failure_pauses_consumption_and_loses_no_alert(tmp_path):
    """The alerts file cannot be written (its folder is a file): alerts pile up to
    batching.max_undelivered, then consumption pauses instead of growing memory; once the
    file system is fixed, every alert is written and consumption resumes. (The small backlog
    bound pauses the topic while the model trains, so the outbox fills while most of the
    8,000 events are still to come, however slow the training.)"""
    blocked = tmp_path / "alerts"
    blocked.write_text("not a folder")
    config = load_config_text(
        f"""
topics:
  - name: sensors
    window: {{seq_len: 8}}
    detector: {{name: seq2seq, params: {{latent_dim: 8, epochs: 2}}, warmup_events: 400}}
    threshold: {{policy: percentile, threshold_perc: 90}}
simulator: {{rate: 5000, sensors: 2, anomaly_every: 50, max_events: 8000}}
batching: {{max_undelivered: 20, max_backlog_bytes: 65536}}
alerts: {{file: {blocked / "alerts.jsonl"}, stdout: false, cooldown_s: 0}}
models: {{store: {tmp_path / "models"}}}
""",
        environ={},
    )
    app = Application(config, serve_metrics=False, progress=lambda m: None)
    runner = threading.Thread(target=app.run, kwargs={"install_signal_handlers": False})
    runner.start()
    pipeline = app.pipelines["sensors"]
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not app.outbox_full:
            assert runner.is_alive()
            time.sleep(0.1)
        assert app.outbox_full, f"{len(app.outbox)} undelivered, never paused"
        events = pipeline.events
        time.sleep(1.0)
        assert pipeline.events == events  # paused: nothing more consumed
        assert 20 < len(app.outbox) < 20 + config.batching.max_batch  # bounded
        assert app.outbox.failures["alert"] > 0

        blocked.unlink()
        blocked.mkdir()  # the operator fixes the disk
        runner.join(180)  # the source ends after its 8,000 events: the daemon stops itself
        assert not runner.is_alive()
        assert pipeline.events == 8_000 > events  # consumption resumed, to the end
    finally:
        app.stop()
        runner.join(60)
    written = (blocked / "alerts.jsonl").read_text().splitlines()
    assert len(written) == pipeline.alerts_raised > 20  # every alert, once
    assert len({json.loads(line)["alert_id"] for line in written}) == len(written)
