"""Alerts: building them (deterministic ids, CloudEvents attributes) and publishing them.

>>> alert_id("sensors", 0, 42, "seq2seq") == alert_id("sensors", 0, 42, "seq2seq")
True
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Protocol, TextIO

CE_TYPE = "io.streamdet.alert.v1"


def alert_id(topic: str, partition: int, offset: int, detector: str) -> str:
    """Same window end, same detector -> same id, so consumers can de-duplicate replays."""
    raw = f"{topic}:{partition}:{offset}:{detector}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def iso_ms(timestamp_ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp_ms / 1000)) + (
        f".{timestamp_ms % 1000:03d}Z"
    )


def cloudevent_headers(alert: dict[str, Any]) -> list[tuple[str, bytes]]:
    """CloudEvents binary-mode attributes for the Kafka protocol binding."""
    return [
        ("ce_specversion", b"1.0"),
        ("ce_type", CE_TYPE.encode()),
        ("ce_source", f"streamdet/{alert['topic']}".encode()),
        ("ce_id", alert["alert_id"].encode()),
        ("ce_time", alert["detected_at"].encode()),
        ("content-type", b"application/json"),
    ]


class AlertSink(Protocol):
    def publish(self, alerts: list[dict[str, Any]]) -> None:
        """Deliver every alert or raise; the caller commits offsets only after this returns."""


class FanOutAlertSink:
    """Publish to several sinks in order; the first failure propagates."""

    def __init__(self, *sinks: AlertSink) -> None:
        self.sinks = sinks

    def publish(self, alerts: list[dict[str, Any]]) -> None:
        for sink in self.sinks:
            sink.publish(alerts)


class JsonLinesAlertSink:
    """Alerts as JSON lines on a stream (stdout by default) and appended to a file."""

    def __init__(
        self, path: str | Path | None, stream: TextIO | None = None, echo: bool = True
    ) -> None:
        self.path = Path(path) if path else None
        self.stream = stream or sys.stdout
        self.echo = echo

    def publish(self, alerts: list[dict[str, Any]]) -> None:
        if not alerts:
            return
        lines = "".join(json.dumps(a, sort_keys=True) + "\n" for a in alerts)
        if self.echo:
            self.stream.write(lines)
            self.stream.flush()
        if self.path is not None:
            with self.path.open("a") as handle:
                handle.write(lines)
