"""A topic's per-series state stays within its byte budget (``max_state_bytes``), measured
with tracemalloc on the real daemon loop, and a producer inventing series names cannot push
out the series that have filled a window."""

from __future__ import annotations

import gc
import json
import math
import tracemalloc

from streamdet.app import Application
from streamdet.config import load_config_text
from streamdet.core.records import Message
from tests.fakes import MemorySource

T0 = 1_700_000_000_000
BUDGET = 1_048_576  # the smallest budget the config takes


def readings(names: list[str], steps: int, first_offset: int) -> list[Message]:
    out = []
    for step in range(steps):
        for k, name in enumerate(names):
            body = {"sensor": name, "ts": T0 + step * 1000, "value": math.sin(step / 7) + k % 5}
            out.append(
                Message("t", 0, first_offset + len(out), None, json.dumps(body).encode(), T0)
            )
    return out


def test_state_stays_within_its_budget_and_invented_names_evict_only_themselves(tmp_path):
    config = load_config_text(
        json.dumps(
            {
                "topics": [
                    {
                        "name": "t",
                        "window": {"seq_len": 16},
                        "detector": {
                            "name": "seq2seq",
                            "warmup_events": 40,
                            "params": {"latent_dim": 4, "epochs": 1},
                        },
                        # Per series ~17 kB: the budget holds about 55 such series.
                        "threshold": {"policy": "likelihood"},
                        "max_state_bytes": BUDGET,
                    }
                ],
                "alerts": {"file": str(tmp_path / "alerts.jsonl")},
                "dead_letter": {"file": str(tmp_path / "dlq.jsonl")},
                "models": {"store": str(tmp_path / "models")},
            }
        ),
        environ={},
    )
    real = [f"pump-{k}" for k in range(30)]
    source = MemorySource(readings(real[:3], 60, 0), batch=400)
    app = Application(
        config,
        source=source,
        alert_sinks=[],
        dead_letter_sinks=[],
        serve_metrics=False,
        synchronous=True,
        progress=lambda message: None,
    )
    pipeline = app.pipelines["t"]

    def run(messages: list[Message]) -> None:
        source.messages.extend(messages)
        while not source.exhausted or app._busy():
            app.turn()
        app._score_what_is_left()

    run([])
    assert pipeline.lifecycle.ready
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    run(readings(real, 20, 1_000))  # every real series scored: a rule each
    assert all(pipeline.windows.established(name) for name in real)
    assert pipeline.state_bytes() < BUDGET

    invented = [f"spoof-{k}" for k in range(6000)]  # one message each: never a window
    run(readings(invented, 1, 10_000))
    # The test's own copies of the names and messages are not the daemon's state.
    del invented
    source.drop_delivered()
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    measured = sum(d.size_diff for d in after.compare_to(before, "filename"))
    assert pipeline.state_bytes() <= BUDGET
    assert measured < 1.2 * BUDGET, f"{measured} bytes held for a budget of {BUDGET}"
    assert all(pipeline.windows.established(name) for name in real), "a real series was evicted"
    # The budget left by the real series' rules holds a thousand-odd window rows at most.
    assert pipeline.windows.evicted > 4000 and pipeline.shed_for_bytes > 0

    # New series that keep sending while the first ones went silent: they get in (their
    # events are counted while they are forgotten with the inventions), and the silent ones
    # go, state, rules and all, the budget holding throughout.
    more = [f"valve-{k}" for k in range(40)]
    run(readings(more, 40, 20_000))
    assert pipeline.state_bytes() <= BUDGET
    assert all(pipeline.windows.established(name) for name in more)
    assert not pipeline.windows.established("pump-0")
    assert len(pipeline.policy._rules) <= len(pipeline.windows)
