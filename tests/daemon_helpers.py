"""Running the daemon as a user does (a subprocess) against a real broker, and reading back
what it published: alerts and dead letters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import jsonschema
from kafka import KafkaConsumer

ALERT_SCHEMA = json.loads((Path(__file__).parents[1] / "docs" / "alert.schema.json").read_text())


class AlertReader:
    """A separate consumer of the alert topic, collecting in the background."""

    def __init__(
        self, bootstrap: str, topic: str, isolation_level: str = "read_uncommitted"
    ) -> None:
        self.alerts: list[dict] = []
        self.headers: list[dict] = []
        self._stop = False
        self._consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
            consumer_timeout_ms=500,
            isolation_level=isolation_level,
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            for record in self._consumer:
                self.alerts.append(json.loads(record.value))
                self.headers.append({k: v.decode() for k, v in record.headers})

    def wait_for(self, predicate, timeout: float, process: subprocess.Popen, log: Path) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate(self.alerts):
                return
            assert process.poll() is None, log.read_text()[-4000:]
            time.sleep(0.5)
        raise AssertionError(f"timed out; alerts so far: {self.alerts}\n{log.read_text()[-3000:]}")

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self._consumer.close()


def start_daemon(config: Path, log: Path) -> subprocess.Popen:
    with log.open("a") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "streamdet.cli", "run", "--config", str(config)],
            cwd=config.parent,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=dict(os.environ),
        )


def wait_until_ready(port: int, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Until ``/readyz`` answers 200 (model loaded, partitions assigned); fail with the
    daemon's log if it exits or is not ready in time."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2)
            return
        except OSError:
            assert process.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
    raise AssertionError(f"not ready within {timeout:.0f}s\n{log.read_text()[-3000:]}")


def stop_daemon(process: subprocess.Popen) -> None:
    """SIGTERM, then a clean exit (0). The wait's bound catches a hang, not slowness: the
    daemon finishes its batch, commits and stops a running training at its next epoch, which
    took 10.2 s once on CI's loaded cores (Kubernetes waits 30 s before SIGKILL)."""
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    assert process.returncode == 0


def alerts_until_planted_are_flagged(
    config: Path, bootstrap: str, alerts_topic: str, planted: list[int], timeout: float = 300
) -> list[dict]:
    """Start the daemon, wait until every planted offset has an alert, stop it (SIGTERM,
    clean exit) and return all alerts published, each checked against
    docs/alert.schema.json."""
    reader = AlertReader(bootstrap, alerts_topic)
    log = config.parent / "daemon.log"
    daemon = start_daemon(config, log)
    try:
        reader.wait_for(
            lambda alerts: {a["window_end_offset"] for a in alerts} >= set(planted),
            timeout,
            daemon,
            log,
        )
        stop_daemon(daemon)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        reader.close()
    for alert in reader.alerts:
        jsonschema.validate(alert, ALERT_SCHEMA)
    return reader.alerts


def dead_letters(bootstrap: str, dlq_topic: str) -> dict[bytes, str]:
    """Every dead letter's value, with the reason from its header."""
    consumer = KafkaConsumer(
        dlq_topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    letters = {r.value: dict(r.headers)["streamdet_reason"].decode() for r in consumer}
    consumer.close()
    return letters
