"""``streamdet replay``: a recorded CSV through the daemon's own path, deterministically."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import yaml

from streamdet.core.records import ScoredWindow, Window
from streamdet.io.sinks.scores import CsvScoreSink
from streamdet.io.sources.replay import ReplaySource
from streamdet.thresholds import Decision
from tests.helpers import run_cli

ROWS, SPIKE, SEQ_LEN = 1500, 1300, 16
START = datetime(2014, 4, 1, tzinfo=UTC)


def write_history(path: Path) -> Path:
    """Hourly readings of a daily cycle (naive ISO times, as NAB files have), one spike."""
    rng = np.random.default_rng(3)
    t = np.arange(ROWS)
    values = 20 + 2 * np.sin(2 * np.pi * t / 24) + 0.05 * rng.standard_normal(ROWS)
    values[SPIKE] += 6.0
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "value"])
        for i, value in enumerate(values):
            stamp = (START + timedelta(hours=int(i))).strftime("%Y-%m-%d %H:%M:%S")
            writer.writerow([stamp, f"{value:.5f}"])
    return path


def write_config(folder: Path, retrain: dict | None = None) -> Path:
    topic = {
        "name": "plant",
        "format": {"series_key": None, "timestamp_field": "timestamp", "value_fields": ["value"]},
        "window": {"seq_len": SEQ_LEN},
        "detector": {
            "name": "seq2seq",
            "params": {"latent_dim": 8, "epochs": 4, "batch_size": 64, "seed": 0},
            "warmup_events": 400,
        },
        "threshold": {"policy": "spot", "risk": 1e-3},
        "retrain": retrain or {},
    }
    config = {
        "topics": [topic],
        "alerts": {"file": str(folder / "alerts.jsonl"), "stdout": False, "cooldown_s": 86400},
        "models": {"store": str(folder / "models")},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def read_scores(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_replay_source_reads_a_csv_into_the_topics_messages(tmp_path):
    data = write_history(tmp_path / "boiler.csv")
    source = ReplaySource.from_csv("plant", data, max_poll=1000)
    first = source.poll(0)
    assert len(first) == 1000 and not source.exhausted
    assert first[0].key == b"boiler" and [m.offset for m in first[:3]] == [0, 1, 2]
    body = json.loads(first[0].value)
    assert body["timestamp"] == "2014-04-01 00:00:00" and isinstance(body["value"], float)
    assert len(source.poll(0)) == ROWS - 1000 and source.exhausted and source.poll(0) == []


def test_replay_scores_every_window_once_alerts_at_the_spike_and_repeats_exactly(tmp_path):
    data = write_history(tmp_path / "boiler.csv")
    config = write_config(tmp_path, retrain={"every_events": 300, "epochs": 2, "holdout": 0.2})
    runs = []
    for n in (1, 2):
        scores = tmp_path / f"scores{n}.csv"
        done = run_cli(
            "replay",
            str(data),
            "--config",
            str(config),
            "--scores",
            str(scores),
            "--store",
            str(tmp_path / f"store{n}"),
        )
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(read_scores(scores))
    first, second = runs
    # Every window, warm-up backlog included, is scored exactly once and in order.
    assert [int(r["end_offset"]) for r in first] == list(range(SEQ_LEN - 1, ROWS))
    # Retrainings ran and some promoted model scored later windows.
    assert len({r["model_version"] for r in first}) >= 2
    alerted = [int(r["end_offset"]) for r in first if r["alert"] == "1"]
    assert any(SPIKE <= a < SPIKE + SEQ_LEN for a in alerted), alerted
    assert len(alerted) <= 3, alerted  # few false alarms on a clean cycle
    # Synchronous: the same file gives the same verdicts, whatever the machine's speed.
    assert first == second
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    spike_alert = next(a for a in alerts if SPIKE <= a["window_end_offset"] < SPIKE + SEQ_LEN)
    # A time without a zone is read as UTC, so the alert names the CSV's own clock time.
    end = START + timedelta(hours=spike_alert["window_end_offset"])
    assert spike_alert["window_end"] == end.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert spike_alert["series"] == "boiler"


def test_replay_names_the_topics_when_the_config_has_several(tmp_path):
    data = write_history(tmp_path / "boiler.csv")
    config = yaml.safe_load(write_config(tmp_path).read_text())
    config["topics"].append({**config["topics"][0], "name": "other"})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    done = run_cli("replay", str(data), "--config", str(tmp_path / "config.yaml"))
    assert done.returncode == 2
    assert "--topic" in done.stderr and "other, plant" in done.stderr


def test_csv_score_sink_writes_one_row_per_window(tmp_path):
    sink = CsvScoreSink(tmp_path / "s.csv")
    window = Window("t", "a", np.zeros((4, 1), np.float32), 0, 1000, 6, 9, 0, 0.0)
    decision = Decision(True, 1.5, 0.125, "spot").alerted(False)
    sink.record(ScoredWindow(window, 0.25, decision, np.zeros(1), "v000002"))
    sink.close()
    rows = read_scores(tmp_path / "s.csv")
    assert rows == [
        {
            "topic": "t",
            "series": "a",
            "partition": "0",
            "end_offset": "9",
            "end_ts_ms": "1000",
            "score": "0.25",
            "rule": "spot",
            "severity": "1.5",
            "threshold": "0.125",
            "flagged": "1",
            "alert": "0",
            "model_version": "v000002",
        }
    ]


def test_replaying_a_missing_file_names_it_and_exits_2(tmp_path):
    config = write_config(tmp_path)
    done = run_cli("replay", str(tmp_path / "nope.csv"), "--config", str(config))
    assert done.returncode == 2
    assert "nope.csv: no such file to replay" in done.stderr and "Traceback" not in done.stderr
