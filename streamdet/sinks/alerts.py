"""Alerts: building them (deterministic ids, CloudEvents attributes) and publishing them.

>>> alert_id("sensors", 0, 42, "seq2seq") == alert_id("sensors", 0, 42, "seq2seq")
True
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np

CE_TYPE = "io.streamdet.alert.v1"


def alert_id(topic: str, partition: int, offset: int, detector: str) -> str:
    """Same window end, same detector -> same id, so consumers can de-duplicate replays."""
    raw = f"{topic}:{partition}:{offset}:{detector}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def iso_ms(timestamp_ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp_ms / 1000)) + (
        f".{timestamp_ms % 1000:03d}Z"
    )


def build_alert(
    window: Any, detector: Any, score: float, threshold: np.ndarray, feature: np.ndarray
) -> dict[str, Any]:
    """The alert record of docs/alert.schema.json for one flagged window."""
    name = detector.name
    return {
        "alert_id": alert_id(window.topic, window.partition, window.end_offset, name),
        "series": window.series,
        "topic": window.topic,
        "partition": window.partition,
        "detector": name,
        "model_version": detector.training.get("model_version"),
        "store_version": detector.training.get("store_version"),
        "score": score,
        "threshold": threshold.tolist(),
        "window_start": iso_ms(window.start_ts_ms),
        "window_end": iso_ms(window.end_ts_ms),
        "window_start_offset": window.start_offset,
        "window_end_offset": window.end_offset,
        "feature_scores": feature.reshape(-1, feature.shape[-1]).mean(axis=0).tolist(),
        "detected_at": iso_ms(int(time.time() * 1000)),
    }


def alert_json(alert: dict[str, Any]) -> str:
    """The alert as one line of JSON. Non-finite numbers are written as null: JSON has no
    NaN, and a subscriber's parser must never choke on an alert."""
    clean = {k: _finite_or_none(v) for k, v in alert.items()}
    return json.dumps(clean, sort_keys=True, allow_nan=False)


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


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
        lines = "".join(alert_json(a) + "\n" for a in alerts)
        if self.echo:
            self.stream.write(lines)
            self.stream.flush()
        if self.path is not None:
            with self.path.open("a") as handle:
                handle.write(lines)


def alert_schema() -> dict[str, Any]:
    """The JSON Schema of an alert (``docs/alert.schema.json`` is this, written by
    ``streamdet schema``); ``detector`` lists the registered detectors."""
    from streamdet.detectors import DETECTORS

    described = {
        "alert_id": "sha256 of topic:partition:window_end_offset:detector (first 32 hex "
        "digits): the same window always gets the same id, so consumers can de-duplicate "
        "replays",
        "score": "instance score; for seq2seq the static threshold is already subtracted "
        "(alert when > 0); for adversarial_vae the KL divergence between the classifier's "
        "predictions on the input and on its reconstruction",
    }
    number_or_list = [{"type": "number"}, {"type": "array", "items": {"type": "number"}}]
    timestamp = {"type": "string", "format": "date-time"}
    offset = {"type": "integer", "minimum": 0}
    properties: dict[str, Any] = {
        "alert_id": {
            "type": "string",
            "pattern": "^[0-9a-f]{32}$",
            "description": described["alert_id"],
        },
        "series": {"type": "string"},
        "topic": {"type": "string", "description": "the source topic"},
        "partition": {"type": "integer", "minimum": 0},
        "detector": {"type": "string", "enum": sorted(DETECTORS)},
        "model_version": {"type": ["string", "null"]},
        "store_version": {
            "type": ["string", "null"],
            "description": "the model store version that scored the window (v000001, ...; "
            "null for a model that was never stored)",
        },
        "score": {"type": "number", "description": described["score"]},
        "threshold": {
            "description": "what the score was compared with: the detector's threshold (a "
            "number, or one per feature), or for threshold policies spot, dspot and dynamic "
            "the series' threshold at that moment",
            "oneOf": number_or_list,
        },
        "window_start": timestamp,
        "window_end": timestamp,
        "window_start_offset": offset,
        "window_end_offset": offset,
        "feature_scores": {
            "type": "array",
            "items": {"type": "number"},
            "minItems": 1,
            "description": "mean feature score per value field over the window",
        },
        "detected_at": timestamp,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://streamdet.dev/schemas/alert.v1.json",
        "title": "streamdet alert",
        "description": (
            "One anomaly alert, published as JSON on the alert topic (key: series) with "
            "CloudEvents binary-mode headers ce_specversion=1.0, ce_type=" + CE_TYPE + ", "
            "ce_source=streamdet/<topic>, ce_id=<alert_id>, ce_time=<detected_at>."
        ),
        "type": "object",
        "required": list(properties),
        "additionalProperties": False,
        "properties": properties,
    }
