"""Back-pressure: windows waiting for a model are bounded in bytes by pausing the source."""

from __future__ import annotations

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
