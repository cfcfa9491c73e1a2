from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamdet.config import load_config, load_config_text
from streamdet.core.errors import ConfigError
from tests.helpers import run_cli

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
    allowed = "adversarial_vae, ensemble, iforest, image_vae, pca, seq2seq, vae_lstm, vaegmm"
    assert f"allowed: {allowed}" in message
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


def test_sensitivity_sets_each_rules_own_knob_and_a_bad_one_names_its_path():
    def threshold(section: str):
        text = f"topics:\n  - name: s\n    detector: {{name: seq2seq}}\n    threshold: {section}\n"
        return load_config_text(text, environ={}).topics[0].threshold

    assert threshold("{policy: likelihood, sensitivity: fewer_false_alarms}").risk == 3e-5
    assert threshold("{policy: spot, sensitivity: catch_everything}").risk == 1e-2
    assert threshold("{sensitivity: fewer_false_alarms}").threshold_perc == 99.9  # percentile
    assert threshold("{policy: robust, sensitivity: balanced}") == threshold("{policy: robust}")
    with pytest.raises(ConfigError) as info:
        threshold("{policy: likelihood, sensitivity: loud}")
    message = str(info.value)
    assert "topics.0.threshold: " in message
    assert "fewer_false_alarms, balanced, catch_everything; got 'loud'" in message
    with pytest.raises(ConfigError, match="give sensitivity or risk, not both"):
        threshold("{policy: dspot, sensitivity: balanced, risk: 0.01}")


def test_an_image_topic_larger_than_its_pixel_limit_is_refused():
    topic = (
        "topics: [{{name: cams, kind: image, detector: {{name: image_vae}}, "
        "format: {{image_shape: [64, 64, 3]}}, limits: {{max_image_pixels: {limit}}}}}]"
    )
    with pytest.raises(ConfigError, match=r"topics\.0.*12288 values, over limits\.max_image"):
        load_config_text(topic.format(limit=10_000), environ={})
    assert load_config_text(topic.format(limit=12_288), environ={}).topics[0].kind == "image"


def test_a_stride_as_long_as_the_window_is_refused():
    topic = "topics: [{{name: s, detector: {{name: seq2seq}}, window: {{seq_len: 8, stride: {}}}}}]"
    with pytest.raises(ConfigError, match=r"topics\.0\.window: .*stride 8 must be below seq_len 8"):
        load_config_text(topic.format(8), environ={})
    assert load_config_text(topic.format(7), environ={}).topics[0].window.stride == 7


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


SECRET = "s3cr3t #not-a-comment"


def test_secrets_are_never_printed_by_check_config_or_errors(tmp_path):
    secret_file = tmp_path / "password"
    secret_file.write_text(SECRET + "\n")
    config = tmp_path / "config.yaml"
    config.write_text(
        "kafka:\n"
        "  bootstrap_servers: localhost:9093\n"
        "  security: {protocol: SASL_SSL, sasl_mechanism: SCRAM-SHA-512, sasl_username: u,\n"
        f"             sasl_password_file: {secret_file}}}\n"
        "topics: [{name: t, detector: {name: seq2seq}}]\n"
    )
    loaded = load_config(config, environ={})
    assert loaded.kafka.security.sasl_password.get_secret_value() == SECRET
    shown = run_cli("check-config", "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    assert SECRET not in shown.stdout and "**********" in shown.stdout

    # A validation error about the security block does not echo it.
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "kafka:\n  security: {protocol: SASL_SSL, sasl_password: '" + SECRET + "', bogus: 1}\n"
    )
    failed = run_cli("check-config", "--config", str(bad))
    assert failed.returncode == 2
    assert "kafka.security.bogus: unknown key" in failed.stderr
    assert SECRET not in failed.stderr + failed.stdout


def test_environment_values_are_taken_as_written():
    config = load_config_text(
        "topics: [{name: t, detector: {name: seq2seq}}]",
        environ={
            "STREAMDET_KAFKA__SECURITY__PROTOCOL": "SASL_PLAINTEXT",
            "STREAMDET_KAFKA__SECURITY__SASL_MECHANISM": "PLAIN",
            "STREAMDET_KAFKA__SECURITY__SASL_USERNAME": "u",
            "STREAMDET_KAFKA__SECURITY__SASL_PASSWORD": SECRET,
            "STREAMDET_ALERTS__STDOUT": "false",
            "STREAMDET_ALERTS__FILE": "null",
            "STREAMDET_METRICS__SERIES_ALLOWLIST": "[a, b]",
        },
    )
    assert config.kafka.security.sasl_password.get_secret_value() == SECRET  # ' #' kept
    assert config.alerts.stdout is False and config.alerts.file is None
    assert config.metrics.series_allowlist == ("a", "b")


def test_tls_files_need_a_tls_protocol_and_secrets_one_source():
    with pytest.raises(ConfigError, match="ssl_cafile given with protocol PLAINTEXT"):
        load_config_text("kafka: {security: {ssl_cafile: ca.pem}}", environ={})
    with pytest.raises(ConfigError, match="cannot read /nonexistent"):
        load_config_text(
            "kafka: {security: {protocol: SASL_SSL, sasl_mechanism: PLAIN, sasl_username: u,"
            " sasl_password_file: /nonexistent}}",
            environ={},
        )
    with pytest.raises(ConfigError, match="basic auth needs both"):
        load_config_text("metrics: {basic_auth_username: prom}", environ={})


def test_avro_and_protobuf_topics_need_a_registry_and_its_secret_stays_hidden(tmp_path):
    topic = "topics: [{name: t, format: {encoding: %s}, detector: {name: seq2seq}}]"
    with pytest.raises(
        ConfigError, match=r"topics\.0\.format\.encoding: avro needs schema_registry"
    ):
        load_config_text(topic % "avro", environ={})
    registry = "schema_registry: {url: 'http://r:8081', username: u, password: hunter22}\n"
    with pytest.raises(ConfigError, match="reader_schema: latest applies to avro only"):
        load_config_text(
            registry + "topics: [{name: t, format: {encoding: protobuf, reader_schema: latest},"
            " detector: {name: seq2seq}}]",
            environ={},
        )
    with pytest.raises(ConfigError, match=r"schema_registry\.encoding: unknown key") as wrong:
        load_config_text(registry.replace("url:", "encoding: x, url:"), environ={})
    assert "hunter22" not in str(wrong.value)
    with pytest.raises(ConfigError, match="basic auth needs both username and password"):
        load_config_text("schema_registry: {url: 'http://r', username: u}", environ={})
    with pytest.raises(ConfigError, match="ssl_cafile given for a plain http:// url"):
        load_config_text("schema_registry: {url: 'http://r', ssl_cafile: ca.pem}", environ={})
    config_file = tmp_path / "config.yaml"
    config_file.write_text(registry + topic % "protobuf")
    shown = run_cli("check-config", "--config", str(config_file))
    assert shown.returncode == 0, shown.stderr
    assert "hunter22" not in shown.stdout + shown.stderr and "protobuf" in shown.stdout


LIGHT_COMMANDS = [
    ["check-config", "--config", str(ROOT / "config.yaml")],
    ["schema"],
    ["models", "list", "--config", str(ROOT / "config.yaml")],
    ["--help"],
]


@pytest.mark.parametrize("args", LIGHT_COMMANDS, ids=lambda a: a[0])
def test_light_commands_never_load_tensorflow(args, tmp_path):
    """Config validation, the schema, the store listing and the help answer from the light
    detector catalog and the rule registry: TensorFlow is never imported (its speed is a
    benchmark, ``python -m benchmarks.cli_startup``; this checks the cause)."""
    probe = (
        "import sys\n"
        "from streamdet.cli import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
        "sys.stdout.flush()\n"
        "print('TENSORFLOW' if 'tensorflow' in sys.modules else 'NO TENSORFLOW', file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.stderr.strip().endswith("NO TENSORFLOW"), done.stderr[-2000:]


def test_a_yaml_error_or_a_bad_override_never_prints_the_secret(tmp_path, monkeypatch):
    """A syntax error on the password's line, or an environment override that is not valid
    YAML: the error says what and where, never the text (it may be the password)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        'kafka:\n  security:\n    sasl_password: "hunter2-secret\n    protocol: SASL_SSL\n'
    )
    done = run_cli("check-config", "--config", str(bad))
    assert done.returncode == 2 and "not valid YAML" in done.stderr and "line" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout
    monkeypatch.setenv("STREAMDET_KAFKA__SECURITY", "{sasl_password: hunter2-secret, protocol")
    done = run_cli("check-config", "--config", str(ROOT / "config.yaml"))
    assert done.returncode == 2 and "STREAMDET_KAFKA__SECURITY is not valid YAML" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout and "Traceback" not in done.stderr


def test_exactly_once_alerts_need_kafka_and_name_the_allowed_values():
    with pytest.raises(ConfigError, match=r"alerts\.delivery: exactly_once needs kafka"):
        load_config_text("alerts: {delivery: exactly_once}", environ={})
    with pytest.raises(ConfigError, match=r"alerts\.delivery.*'at_least_once'.*'exactly_once'"):
        load_config_text("alerts: {delivery: twice}", environ={})
    config = load_config_text(
        "kafka: {bootstrap_servers: 'k:9092', group_id: g}\nalerts: {delivery: exactly_once}",
        environ={},
    )
    from streamdet.io.build import transactional_id

    assert transactional_id(config).startswith("streamdet-g-")
