"""Dashboards and rules against a real Prometheus scraping a real daemon on a real broker."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import fastavro
import pytest
import yaml
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.common.serde import SchemaId
from kafka import KafkaProducer

from streamdet.config import SchemaRegistryConfig
from streamdet.io.schema_registry import SchemaRegistry
from streamdet.io.sources.simulator import SensorSimulator
from tests.daemon_helpers import start_daemon, stop_daemon
from tests.helpers import free_port
from tests.io.test_schema_registry import READING_V1 as READING

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
RULES = ROOT / "deploy" / "prometheus" / "rules" / "streamdet.rules.yml"
TEMPLATE_VALUES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$topic": ".*",
    "$detector": ".*",
}


PROCESS_WIDE = (
    "streamdet_end_to_end",
    "streamdet_batch_size",
    "streamdet_scoring_latency",
    "streamdet_broker_up",
    "streamdet_alert_publish_failures",
    "streamdet_commit_failures",
    "streamdet_transaction_rewinds",
    "streamdet_dead_letter_failures",
    "streamdet_schema_registry_up",
)


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed: `make test` installs Debian's prometheus package"
    return path


def dashboard_queries() -> list[tuple[str, str]]:
    queries = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                queries.append((f"{path.stem}: {panel['title']}", target["expr"]))
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                query = variable["query"]
                query = query["query"] if isinstance(query, dict) else query
                inner = re.match(r"label_values\((.*),\s*\w+\)$", query)
                queries.append((f"{path.stem}: variable {variable['name']}", inner.group(1)))
        for note in board["annotations"]["list"]:
            if "expr" in note:
                queries.append((f"{path.stem}: annotation {note['name']}", note["expr"]))
    return queries


def rule_queries() -> list[tuple[str, str]]:
    """Recording rules as they are; alerts as the quantity they compare with a threshold."""
    queries = []
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            expr = " ".join(rule["expr"].split())
            if "alert" in rule:
                measured = re.match(r"^(.*?)\s*(==|!=|>=|<=|>|<)\s*[-0-9.e]+$", expr)
                assert measured, f"alert {rule['alert']}: expected '<quantity> <op> <number>'"
                queries.append((f"alert {rule['alert']}", measured.group(1)))
            else:
                queries.append((f"record {rule['record']}", expr))
                queries.append((f"recorded series {rule['record']}", rule["record"]))
    return queries


def substitute(expr: str) -> str:
    for name, value in TEMPLATE_VALUES.items():
        expr = expr.replace(name, value)
    return expr


def promql(base: str, expr: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    body = json.loads(urllib.request.urlopen(url, timeout=10).read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def has_data(result: list[dict]) -> bool:
    return any(sample["value"][1] not in ("NaN", "+Inf", "-Inf") for sample in result)


@pytest.mark.kafka
def test_every_dashboard_and_rule_expression_returns_data(
    kafka_bootstrap, new_topic, schema_registry, tmp_path
):
    """The daemon's topic is Avro through a real schema registry, so its panel and rule have
    data too."""
    promtool = tool("promtool")
    prometheus_bin = tool("prometheus")
    topic = new_topic("obs", partitions=2)
    registry = {k: schema_registry[k] for k in ("url", "username", "password")}
    schema_id = SchemaRegistry(SchemaRegistryConfig(**registry)).client.register_schema(
        f"{topic}-value", Schema(json.dumps(READING), "AVRO")
    )
    writer = fastavro.parse_schema(READING)

    def avro(event: dict) -> bytes:
        body = io.BytesIO()
        fields = {"sensor": event["sensor"], "ts": event["ts"], "value": event["value"]}
        fastavro.schemaless_writer(body, writer, fields)
        return SchemaId("AVRO", schema_id).id_to_bytes() + body.getvalue()

    feedback = new_topic("obs-feedback")
    metrics_port, prom_port = free_port(), free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": kafka_bootstrap, "group_id": f"g-{topic}"},
                "topics": [
                    {
                        "name": topic,
                        "format": {"encoding": "avro"},
                        "window": {"seq_len": 32},
                        "detector": {
                            "name": "seq2seq",
                            "params": {"latent_dim": 8, "epochs": 3},
                            "warmup_events": 400,
                        },
                        "threshold": {"threshold_perc": 99},
                    }
                ],
                "alerts": {"topic": new_topic("obs-alerts"), "cooldown_s": 600, "file": None},
                "dead_letter": {"topic": new_topic("obs-dlq")},
                "feedback": {"topic": feedback},
                "schema_registry": registry,
                "metrics": {"port": metrics_port},
                "models": {"store": str(tmp_path / "models")},
            }
        )
    )
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {
                        "job_name": "streamdet",
                        "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                    }
                ],
            }
        )
    )

    stop = threading.Event()
    sim = SensorSimulator(4, 96, 0.05, 300, 3, first_anomaly=600)

    def feed() -> None:
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
        verdict = {"alert_id": "obs-1", "verdict": "confirmed", "note": "seen on site"}
        alert_fields = {"topic": topic, "series": "sensor-1", "severity": 3.0}
        producer.send(feedback, key=b"obs-1", value=json.dumps(verdict | alert_fields).encode())
        sent = 0
        while not stop.is_set():
            for _ in range(100):
                event = sim.next_event()
                producer.send(topic, key=str(event["sensor"]).encode(), value=avro(event))
            producer.send(topic, key=b"sensor-0", value=b"{broken")  # keeps the DLQ busy
            sent += 101
            producer.flush()
            time.sleep(0.1 if sent > 4 * 700 else 0.0)
        producer.close()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    log = tmp_path / "daemon.log"
    daemon = start_daemon(config, log)
    prom = subprocess.Popen(
        [
            prometheus_bin,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("w"),
    )
    base = f"http://127.0.0.1:{prom_port}"
    try:
        health = f"http://127.0.0.1:{metrics_port}"
        deadline = time.time() + 240
        ready = False
        while time.time() < deadline and not ready:
            assert daemon.poll() is None, log.read_text()[-3000:]
            try:
                urllib.request.urlopen(f"{health}/readyz", timeout=2)
                ready = True
            except urllib.error.HTTPError as exc:
                assert exc.code == 503 and b"reason" in exc.read()
            except OSError:
                pass
            time.sleep(1)
        assert ready, log.read_text()[-3000:]
        assert json.loads(urllib.request.urlopen(f"{health}/healthz").read())["status"] == "ok"

        # Let Prometheus see the busy system for a while: scores, alerts, lag, DLQ.
        queries = [
            (where, substitute(expr)) for where, expr in dashboard_queries() + rule_queries()
        ]
        missing: list[str] = []
        deadline = time.time() + 120
        while time.time() < deadline:
            missing = [
                f"{where}: {expr}" for where, expr in queries if not has_data(promql(base, expr))
            ]
            if not missing:
                break
            time.sleep(3)
        assert not missing, "expressions without data:\n" + "\n".join(missing)

        metrics_text = urllib.request.urlopen(f"{health}/metrics").read()
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=metrics_text, capture_output=True
        )
        assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout.decode()
        stop_daemon(daemon)
    finally:
        stop.set()
        feeder.join(10)
        if daemon.poll() is None:
            daemon.kill()
        prom.terminate()
        prom.wait(10)


def test_promtool_accepts_config_and_rules_and_rule_unit_tests_pass():
    promtool = tool("promtool")
    for args in (
        ["check", "config", str(ROOT / "deploy/prometheus/prometheus.yml")],
        ["check", "rules", str(RULES)],
        ["test", "rules", str(ROOT / "tests/deploy/prometheus/rules_test.yml")],
    ):
        done = subprocess.run([promtool, *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_dashboards_are_generated_and_structurally_sound(tmp_path):
    generated = tmp_path / "grafana"
    shutil.copytree(ROOT / "deploy" / "grafana", generated)
    subprocess.run([sys.executable, str(generated / "build_dashboards.py")], check=True)
    assert len(DASHBOARDS) == 3
    for path in DASHBOARDS:
        assert (generated / "dashboards" / path.name).read_text() == path.read_text(), (
            f"{path.name} is stale: run python deploy/grafana/build_dashboards.py"
        )
        board = json.loads(path.read_text())
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert "topic" in variables
        occupied: set[tuple[int, int]] = set()
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}", panel["title"]
                # Every query follows the topic variable, but for process-wide metrics.
                assert "$topic" in target["expr"] or any(
                    name in target["expr"] for name in PROCESS_WIDE
                ), target["expr"]
            grid = panel["gridPos"]
            assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["y"] >= 0
            assert grid["x"] + grid["w"] <= 24, f"{panel['title']} overflows the grid"
            cells = {
                (x, y)
                for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not cells & occupied, f"{panel['title']} overlaps another panel"
            occupied |= cells
