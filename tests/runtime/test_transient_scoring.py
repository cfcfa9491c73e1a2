"""A scorer that fails for a while (every window of its batches) loses no window: the
windows wait in the backlog and are scored once it works again; only a window that fails
while others score is dead-lettered."""

from __future__ import annotations

from streamdet.app import Application
from streamdet.config import load_config_text

CONFIG = """
topics:
  - name: sensors
    window: {{seq_len: 8}}
    detector: {{name: seq2seq, params: {{latent_dim: 8, epochs: 1}}, warmup_events: 200}}
simulator: {{rate: 3000, sensors: 2, max_events: {events}}}
alerts: {{file: null, stdout: false}}
dead_letter: {{file: {dlq}}}
models: {{store: {store}}}
"""


def test_windows_of_a_transiently_failing_scorer_are_scored_later_not_dead_lettered(tmp_path):
    def app(events: int) -> Application:
        text = CONFIG.format(events=events, dlq=tmp_path / "dlq.jsonl", store=tmp_path / "m")
        return Application(load_config_text(text, environ={}), serve_metrics=False,
                           progress=lambda m: None)  # fmt: skip

    app(600).run(install_signal_handlers=False)  # trains the model into the store
    daemon = app(3000)
    pipeline = daemon.pipelines["sensors"]
    assert pipeline.lifecycle.ready  # served from the store from the start
    detector = pipeline.lifecycle.detector
    score = detector.score
    failed_batches = []

    def flaky_score(X, *args, **kwargs):
        """Fails (every call, whatever its windows) until two retries have failed."""
        if pipeline.scoring_backoff.failures < 2:
            failed_batches.append(len(X))
            raise RuntimeError("the accelerator is busy")
        return score(X, *args, **kwargs)

    detector.score = flaky_score
    daemon.run(install_signal_handlers=False)
    assert pipeline.scoring_backoff.failures == 0 and len(failed_batches) > 2
    assert pipeline.invalid["scoring_failed"] == 0
    assert not (tmp_path / "dlq.jsonl").exists()
    # Every complete window was scored: 1,500 events a sensor, the first 7 of each open none.
    assert pipeline.windows_scored + pipeline.rebuilt == 3000 - 2 * 7
