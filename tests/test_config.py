from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamdet.config import load_config, load_config_text
from streamdet.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_config_is_valid_and_runs_without_kafka():
    config = load_config(ROOT / "config.yaml", environ={})
    assert config.kafka.bootstrap_servers is None
    assert config.topics and config.topics[0].detector.name in {"seq2seq", "vae_lstm"}


def test_bad_value_names_the_yaml_path_and_the_allowed_values():
    text = "topics:\n  - name: s\n    detector: {name: lstm}\n"
    with pytest.raises(ConfigError) as info:
        load_config_text(text, environ={})
    message = str(info.value)
    assert "topics.0.detector.name: 'lstm' is not valid" in message
    assert "'seq2seq', 'vae_lstm', 'vaegmm', 'image_vae' or 'adversarial_vae'" in message
    assert message.count("vaegmm") == 1  # the allowed values are named once


def test_unknown_keys_and_incomplete_sasl_are_refused():
    with pytest.raises(ConfigError, match=r"kafka\.bootstrap_server: unknown key"):
        load_config_text("kafka: {bootstrap_server: x}", environ={})
    with pytest.raises(ConfigError, match="SASL_SSL needs sasl_mechanism"):
        load_config_text("kafka: {security: {protocol: SASL_SSL}}", environ={})
    with pytest.raises(ConfigError, match="repeated: a"):
        load_config_text(
            "topics: [{name: a, detector: {name: seq2seq}}, {name: a, detector: {name: seq2seq}}]",
            environ={},
        )


def test_environment_overrides_the_file_and_config_is_frozen():
    config = load_config_text(
        "metrics: {port: 1}",
        environ={"STREAMDET_METRICS__PORT": "9200", "STREAMDET_KAFKA__BOOTSTRAP_SERVERS": "h:9092"},
    )
    assert config.metrics.port == 9200
    assert config.kafka.bootstrap_servers == "h:9092"
    with pytest.raises(Exception, match="frozen"):
        config.metrics.port = 1  # type: ignore[misc]


def test_check_config_command_prints_the_effective_config_or_the_error(tmp_path):
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamdet.cli",
            "check-config",
            "--config",
            str(ROOT / "config.yaml"),
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert '"bootstrap_servers": null' in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("metrics: {port: 99999}\n")
    failed = subprocess.run(
        [sys.executable, "-m", "streamdet.cli", "check-config", "--config", str(bad)],
        capture_output=True,
        text=True,
    )
    assert failed.returncode == 2
    assert "metrics.port: 99999 is not valid" in failed.stderr
    assert "Traceback" not in failed.stderr
