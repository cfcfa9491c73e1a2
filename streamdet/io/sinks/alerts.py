"""Alerts: building them (deterministic ids, CloudEvents attributes) and publishing them.

>>> alert_id("sensors", 0, 42, "seq2seq") == alert_id("sensors", 0, 42, "seq2seq")
True
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import orjson

from streamdet.core.records import ScoredWindow

CE_TYPE = "io.streamdet.alert.v1"


def alert_id(topic: str, partition: int, offset: int, detector: str) -> str:
    """Same window end, same detector -> same id, so consumers can de-duplicate replays."""
    raw = f"{topic}:{partition}:{offset}:{detector}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def iso_ms(timestamp_ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp_ms / 1000)) + (
        f".{timestamp_ms % 1000:03d}Z"
    )


def build_alert(scored: ScoredWindow, detector: str, model_version: str | None) -> dict[str, Any]:
    """The alert record of docs/alert.schema.json for one window the rule flagged."""
    window, decision = scored.window, scored.decision
    feature = np.asarray(scored.feature_scores, np.float64)
    return {
        "alert_id": alert_id(window.topic, window.partition, window.end_offset, detector),
        "series": window.series,
        "topic": window.topic,
        "partition": window.partition,
        "detector": detector,
        "model_version": model_version,
        "store_version": scored.store_version,
        "score": scored.score,
        "rule": decision.rule,
        "threshold": decision.threshold,
        "severity": decision.severity,
        "window_start": iso_ms(window.start_ts_ms),
        "window_end": iso_ms(window.end_ts_ms),
        "window_start_offset": window.start_offset,
        "window_end_offset": window.end_offset,
        "feature_scores": feature.reshape(-1, feature.shape[-1]).mean(axis=0).tolist(),
        "detected_at": iso_ms(int(time.time() * 1000)),
    }


def alert_bytes(alert: dict[str, Any]) -> bytes:
    """The alert as one line of JSON (UTF-8, keys sorted). Non-finite numbers are written as
    null: JSON has no NaN, and a subscriber's parser must never choke on an alert.

    >>> alert_bytes({"score": float("nan"), "series": "pump-3", "values": [1.5, float("inf")]})
    b'{"score":null,"series":"pump-3","values":[1.5,null]}'
    """
    return orjson.dumps(alert, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)


def alert_json(alert: dict[str, Any]) -> str:
    """:func:`alert_bytes` as text."""
    return alert_bytes(alert).decode()


def kafka_record(alert: dict[str, Any], mode: str = "binary") -> dict[str, Any]:
    """The alert as a Kafka record through the CloudEvents SDK's Kafka protocol binding,
    keyed by its series (the event's ``partitionkey``). ``binary`` (the default): ``ce_*``
    headers and the alert's JSON as the value; ``structured``: the whole CloudEvent as the
    JSON value, the alert in its ``data``.

    >>> import json
    >>> record = kafka_record({"alert_id": "ab12", "topic": "plant", "series": "pump-3",
    ...                        "detected_at": "2026-12-02T03:00:00.000Z", "score": 1.0})
    >>> record["key"], dict(record["headers"])["ce_id"], dict(record["headers"])["ce_type"]
    (b'pump-3', b'ab12', b'io.streamdet.alert.v1')
    >>> from cloudevents.kafka import KafkaMessage, from_binary
    >>> read = KafkaMessage(dict(record["headers"]), record["key"], record["value"])
    >>> event = from_binary(read, data_unmarshaller=json.loads)
    >>> event["source"], event.data["series"]
    ('streamdet/plant', 'pump-3')
    >>> from cloudevents.kafka import from_structured
    >>> record = kafka_record({"alert_id": "ab12", "topic": "plant", "series": "pump-3",
    ...                        "detected_at": "2026-12-02T03:00:00.000Z"}, "structured")
    >>> event = from_structured(KafkaMessage(dict(record["headers"]), record["key"],
    ...                                      record["value"]))
    >>> event["id"], event.data["series"], json.loads(record["value"])["type"]
    ('ab12', 'pump-3', 'io.streamdet.alert.v1')
    """
    from cloudevents.http import CloudEvent
    from cloudevents.kafka import to_binary, to_structured

    event = CloudEvent(
        {
            "specversion": "1.0",
            "type": CE_TYPE,
            "source": f"streamdet/{alert['topic']}",
            "id": alert["alert_id"],
            "time": alert["detected_at"],
            "datacontenttype": "application/json",
            "partitionkey": alert["series"],
        },
        alert,
    )
    if mode == "structured":
        # The SDK writes the whole event with the standard library: the alert goes in
        # with NaN and inf already made null.
        event.data = orjson.loads(alert_bytes(alert))
        message = to_structured(event)
    else:
        message = to_binary(event, data_marshaller=alert_bytes)
    key = message.key.encode() if isinstance(message.key, str) else message.key
    return {"key": key, "value": message.value, "headers": list(message.headers.items())}


class JsonLinesAlertSink:
    """Alerts as JSON lines on a stream (stdout by default) and appended to a file."""

    name = "alerts-file"
    transactional = False

    def __init__(
        self, path: str | Path | None, stream: TextIO | None = None, echo: bool = True
    ) -> None:
        self.path = Path(path) if path else None
        self.stream = stream or sys.stdout
        self.echo = echo

    def deliver(self, alerts: Sequence[dict[str, Any]]) -> list[Exception | None]:
        if not alerts or not (self.echo or self.path is not None):
            return [None] * len(alerts)
        lines = "".join(alert_json(a) + "\n" for a in alerts)
        try:
            if self.echo:
                self.stream.write(lines)
                self.stream.flush()
            if self.path is not None:
                with self.path.open("a") as handle:
                    handle.write(lines)
        except OSError as exc:  # a full disk, a closed pipe: every alert is kept and resent
            return [exc] * len(alerts)
        return [None] * len(alerts)


def _explanation_schema() -> dict[str, Any]:
    number = {"type": ["number", "null"]}
    numbers = {"type": "array", "items": number}
    return {
        "description": "what the window held and what the model expected, bounded in size "
        "(null if it could not be computed)",
        "type": ["object", "null"],
        "additionalProperties": False,
        "required": [
            "features",
            "first_step",
            "observed",
            "expected",
            "top_steps",
            "top_features",
            "error_map",
        ],
        "properties": {
            "features": {
                "description": "the value fields shown (at most 16, the most anomalous "
                "first for rows); null for images",
                "type": ["array", "null"],
                "items": {"type": "string"},
            },
            "first_step": {
                "description": "the window's step the observed values start at (the newest "
                "128 steps are shown)",
                "type": "integer",
                "minimum": 0,
            },
            "observed": {
                "description": "the window's values (steps x features) or the row's",
                "type": ["array", "null"],
                "items": {"oneOf": [number, numbers]},
            },
            "expected": {
                "description": "what the model expected, in the same shape and units (its "
                "reconstruction or forecast); null if the detector cannot say",
                "type": ["array", "null"],
                "items": {"oneOf": [number, numbers]},
            },
            "top_steps": {
                "description": "the cells with the highest feature scores",
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "step": {"type": "integer"},
                        "steps_before_end": {"type": "integer"},
                        "feature": {"type": "string"},
                        "score": number,
                        "observed": number,
                        "expected": number,
                    },
                },
            },
            "top_features": {
                "description": "features by their share of what lifts the window above its "
                "median cell",
                "type": "array",
                "items": {"type": "object", "properties": {"feature": {"type": "string"}}},
            },
            "error_map": {
                "description": "images: the reconstruction error over a grid of at most 8 x 8 "
                "cells, as shares of the total",
                "type": ["array", "null"],
                "items": numbers,
            },
            "members": {
                "description": "ensembles: each member's tail probability of its score "
                "against its own calibration scores, and the trust it was given (weights "
                "sum to 1; the smallest probability / weight decided)",
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["detector", "probability"],
                    "properties": {
                        "detector": {"type": "string"},
                        "probability": number,
                        "weight": number,
                    },
                },
            },
        },
    }


def alert_schema() -> dict[str, Any]:
    """The JSON Schema of an alert (``docs/alert.schema.json`` is this, written by
    ``streamdet schema``); ``detector`` lists the registered detectors."""
    from streamdet.detectors import detector_names
    from streamdet.thresholds import rule_names

    described = {
        "alert_id": "sha256 of topic:partition:window_end_offset:detector (first 32 hex "
        "digits): the same window always gets the same id, so consumers can de-duplicate "
        "replays",
        "score": "the detector's instance score (for adversarial_vae the KL divergence "
        "between the classifier's predictions on the input and on its reconstruction)",
    }
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
        "detector": {"type": "string", "enum": list(detector_names())},
        "model_version": {"type": ["string", "null"]},
        "store_version": {
            "type": ["string", "null"],
            "description": "the model store version that scored the window (v000001, ...; "
            "null for a model that was never stored)",
        },
        "score": {"type": "number", "description": described["score"]},
        "rule": {
            "type": "string",
            "enum": list(rule_names()),
            "description": "the threshold rule that decided (the topic's threshold.policy)",
        },
        "threshold": {
            "type": "number",
            "description": "the score at which the rule flags this series' window at that "
            "moment (for likelihood: the score that would bring the recent mean's tail "
            "probability to its risk)",
        },
        "severity": {
            "type": "number",
            "description": "the score on the rule's own scale, where 1 is its threshold: "
            "comparable across series, rules and models",
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
        "explanation": _explanation_schema(),
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
