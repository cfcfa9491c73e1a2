"""The feedback book: verdicts move each series' severity bar, bounded, idempotent,
reversible, kept across restarts; hostile feedback is refused with its offset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamdet.config import ConfigError, load_config_text
from streamdet.core.records import Message
from streamdet.runtime.feedback import FeedbackBook
from streamdet.thresholds import rule_params
from streamdet.thresholds.policy import Calibration, DecisionPolicy


def verdict(offset: int, **body: object) -> Message:
    return Message("feedback", 0, offset, None, json.dumps(body).encode(), 0)


def alert(alert_id: str, series: str = "pump", severity: float = 2.0) -> dict:
    return {"alert_id": alert_id, "topic": "t", "series": series, "severity": severity}


def test_bars_follow_verdicts_and_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "feedback.json"
    book = FeedbackBook(margin=0.25, max_bar=3.0, path=path)
    book.remember(alert("a1", severity=2.0))
    book.extend("t", "pump", 2.2)  # a later window of the same excursion, held by the cooldown
    assert book.apply(verdict(0, alert_id="a1", verdict="false_alarm")) == "false_alarm"
    assert book.bars("t") == {"pump": pytest.approx(2.75)}
    assert book.apply(verdict(1, alert_id="a1", verdict="false_alarm")) == "false_alarm"
    assert book.applied[("t", "false_alarm")] == 1  # delivered twice, applied once
    book.remember(alert("a2", severity=9.0))
    book.apply(verdict(2, alert_id="a2", verdict="false_alarm"))
    assert book.bars("t")["pump"] == 3.0  # bounded
    book.remember(alert("a3", severity=2.5))
    book.apply(verdict(3, alert_id="a3", verdict="confirmed"))
    assert book.bars("t")["pump"] == 2.5  # never above a confirmed anomaly
    assert book.precision("t") == pytest.approx(1 / 3)

    again = FeedbackBook(margin=0.25, max_bar=3.0, path=path)  # a restart
    assert again.bars("t") == {"pump": 2.5}
    # The topic is re-read from its start: minimal verdicts resolve from the kept file.
    assert again.apply(verdict(0, alert_id="a1", verdict="false_alarm")) == "false_alarm"
    again.apply(verdict(4, alert_id="a3", verdict="retract"))
    again.apply(verdict(5, alert_id="a2", verdict="retract"))
    assert again.bars("t") == {"pump": 2.75}
    again.apply(verdict(6, alert_id="a1", verdict="confirmed"))  # a changed mind
    assert again.bars("t") == {}


def test_a_bar_holds_back_the_same_severity_and_lets_a_larger_one_alert() -> None:
    policy = DecisionPolicy(rule_params({"policy": "percentile"}), 0, max_series=10)
    policy.start(Calibration([float(x % 10) / 10 for x in range(1000)]))
    severity = policy.judge("pump", 2.0).severity
    assert severity > 1
    policy.severity_bars = {"pump": severity * 1.25}
    held = policy.decide("pump", 2.0, 0)
    assert held.flagged and held.held_by_feedback and not held.alert
    assert policy.decide("pump", 50.0, 1).alert
    assert policy.decide("other", 2.0, 2).alert


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"verdict": "false_alarm"}', "alert_id"),
        (b'{"alert_id": "x", "verdict": "maybe"}', "not one of"),
        (b'{"alert_id": "x", "verdict": "confirmed", "note": 5}', "note"),
        (b'{"alert_id": "x", "verdict": "confirmed", "severity": "high"}', "severity"),
        (b'{"alert_id": "x", "verdict": "confirmed", "severity": NaN}', "severity"),
        (b'{"alert_id": "unknown", "verdict": "false_alarm"}', "not one this process raised"),
        (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "bytes"),
    ],
)
def test_hostile_feedback_is_refused_with_its_offset(raw, why, caplog) -> None:
    book = FeedbackBook(margin=0.25, max_bar=3.0, path=None)
    assert book.apply(Message("feedback", 2, 77, None, raw, 0)) is None
    assert book.invalid == 1 and book.bars("t") == {}
    assert "partition 2 offset 77" in caplog.text and why in caplog.text


def test_a_verdict_carrying_the_alerts_fields_needs_no_memory_of_it() -> None:
    book = FeedbackBook(margin=0.5, max_bar=10.0, path=None)
    fields = {"topic": "t", "series": "s", "severity": 2.0}
    book.apply(verdict(0, alert_id="other-member", verdict="false_alarm", **fields))
    assert book.bars("t") == {"s": 3.0}


def test_feedback_needs_kafka_and_its_own_topic() -> None:
    with pytest.raises(ConfigError, match=r"feedback\.topic needs kafka\.bootstrap_servers"):
        load_config_text(
            "topics: [{name: s, detector: {name: seq2seq}}]\nfeedback: {topic: fb}", environ={}
        )
    with pytest.raises(ConfigError, match="must differ"):
        load_config_text(
            "kafka: {bootstrap_servers: 'h:9092'}\n"
            "topics: [{name: s, detector: {name: seq2seq}}]\nfeedback: {topic: s}",
            environ={},
        )
