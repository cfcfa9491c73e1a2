"""The benchmarks keep measuring: a smoke run of the end-to-end benchmark against the real
broker (tiny sizes; the figures in docs/BENCHMARKS.md come from full runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.kafka


def test_the_end_to_end_benchmark_measures_the_daemon_from_outside(kafka_bootstrap, tmp_path):
    """The smoke run scores with an ensemble (Seq2Seq beside PCA), the heavier path: its
    report names it and every figure is there."""
    report_file = tmp_path / "e2e.json"
    members = '[{"name": "pca"}]'
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.e2e_kafka",
            "--smoke",
            "--members",
            members,
            "--out",
            str(report_file),
        ],
        cwd=ROOT,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(report_file.read_text())
    assert report["detector"] == {"ensemble": ["seq2seq", {"name": "pca"}]}
    assert report["inference_ceiling_windows_per_s"] > 0
    throughput = report["series_10"]
    assert throughput["windows_scored"] >= 400 and throughput["events_per_s"] > 0
    assert 0 < throughput["ratio_to_ceiling"] < 10
    latency = report["latency_at_half_rate"]
    assert latency["alerts"] > 0 and 0 < latency["produce_to_alert_p99_ms"] < 60_000
