"""Operators teach the daemon back: verdicts on alerts move each series' bar.

A subscriber publishes, to the feedback topic, ``{"alert_id": ..., "verdict": ...,
"note": ...}`` with ``verdict`` one of:

- ``false_alarm``: this excursion was normal for this series. The series' **severity bar**
  rises to the excursion's peak severity (the alert's, or a higher one of the windows the
  cooldown then held back) plus ``feedback.margin`` (never above
  ``feedback.max_severity_bar``): a flagged window of that series alerts only if its
  severity reaches the bar, so the same excursion again does not page and a larger one
  still does. Windows held back by the bar are learnt by the next retraining (the operator
  said they are normal); the rule itself is untouched.
- ``confirmed``: a real anomaly. Kept as a labelled example: the series' bar never rises
  above a confirmed alert's severity (an anomaly as large as a confirmed one always pages);
  alerted windows are never learnt by a retraining anyway. Confirmations and false alarms
  give the precision-from-feedback gauge.
- ``retract``: forget the earlier verdict on this alert (its effect is undone).

The newest verdict for an ``alert_id`` replaces the earlier one, so a verdict delivered
twice changes nothing, and a changed mind is one more message. The alert's topic, series and
severity come from this process's memory of the alerts it raised, or from the verdict
itself (``topic``, ``series``, ``severity`` copied from the alert: what a member that did not
raise the alert needs). Every verdict applied is kept in ``<models.store>/feedback.json``
(written whole, then renamed), newest ``feedback.max_verdicts``, so bars survive restarts.

>>> book = FeedbackBook(margin=0.25, max_bar=10.0, path=None)
>>> book.remember({"alert_id": "a1", "topic": "t", "series": "pump", "severity": 2.0})
>>> book.apply_verdict({"alert_id": "a1", "verdict": "false_alarm"})
'false_alarm'
>>> book.bars("t")["pump"]
2.5
>>> book.apply_verdict({"alert_id": "a1", "verdict": "retract"})
'retract'
>>> book.bars("t")
{}
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from streamdet.core.bounded import BoundedMap
from streamdet.core.records import Message

log = logging.getLogger("streamdet.feedback")

VERDICTS = ("false_alarm", "confirmed", "retract")
MAX_FEEDBACK_BYTES = 65_536
MAX_NOTE_CHARS = 1_000
REMEMBERED_ALERTS = 100_000


class InvalidFeedback(ValueError):
    pass


class FeedbackBook:
    def __init__(
        self, margin: float, max_bar: float, path: Path | None, max_verdicts: int = 100_000
    ) -> None:
        self.margin = margin
        self.max_bar = max_bar
        self.path = path
        self.max_verdicts = max_verdicts
        self._raised: BoundedMap[dict[str, Any]] = BoundedMap(REMEMBERED_ALERTS)
        self._latest: BoundedMap[str] = BoundedMap(REMEMBERED_ALERTS)  # topic+series -> id
        self.verdicts: dict[str, dict[str, Any]] = {}  # alert_id -> verdict, oldest first
        self._bars: dict[str, dict[str, float]] = {}  # topic -> series -> bar (live objects)
        self.applied: Counter[tuple[str, str]] = Counter()  # (topic, verdict) -> count
        self.invalid = 0
        self._load()

    # ---- what the pipelines call -----------------------------------------------------------
    def remember(self, alert: dict[str, Any]) -> None:
        """An alert this process raised: what a verdict on it needs."""
        kept = {k: alert[k] for k in ("topic", "series", "severity") if k in alert}
        self._raised.touch(alert["alert_id"], kept)
        self._latest.touch(f"{kept.get('topic')}\x00{kept.get('series')}", alert["alert_id"])

    def extend(self, topic: str, series: str, severity: float) -> None:
        """A flagged window the cooldown held back after the series' last alert: the same
        excursion. A verdict on the alert covers the excursion's peak severity, not only the
        window that happened to alert first."""
        alert_id = self._latest.get(f"{topic}\x00{series}")
        kept = None if alert_id is None else self._raised.get(alert_id)
        if kept is not None and severity > kept.get("severity", 0.0):
            kept["severity"] = float(severity)

    def bars(self, topic: str) -> dict[str, float]:
        """``series -> severity bar`` for ``topic`` (the same dict, updated in place)."""
        return self._bars.setdefault(topic, {})

    def precision(self, topic: str) -> float | None:
        """Confirmed / (confirmed + false alarms) among the kept verdicts on ``topic``."""
        kinds = Counter(v["verdict"] for v in self.verdicts.values() if v["topic"] == topic)
        judged = kinds["confirmed"] + kinds["false_alarm"]
        return kinds["confirmed"] / judged if judged else None

    # ---- what the loop calls -------------------------------------------------------------
    def apply(self, message: Message) -> str | None:
        """Apply one message of the feedback topic; its verdict, or None if it was refused
        (logged with the topic, offset and reason, counted)."""
        try:
            return self.apply_verdict(self._parse(message))
        except InvalidFeedback as exc:
            self.invalid += 1
            log.warning(
                "feedback topic %s partition %d offset %d refused: %s",
                message.topic,
                message.partition,
                message.offset,
                exc,
            )
            return None

    def apply_verdict(self, feedback: dict[str, Any]) -> str:
        alert_id, verdict = feedback["alert_id"], feedback["verdict"]
        if verdict == "retract":
            earlier = self.verdicts.pop(alert_id, None)
            if earlier is not None:
                self.applied[(earlier["topic"], verdict)] += 1
                self._changed(earlier["topic"], earlier["series"], f"{alert_id} retracted")
            return verdict
        known = self._raised.get(alert_id) or self.verdicts.get(alert_id) or {}
        topic = feedback.get("topic", known.get("topic"))
        series = feedback.get("series", known.get("series"))
        severity = feedback.get("severity", known.get("severity"))
        if topic is None or series is None or not isinstance(severity, int | float):
            raise InvalidFeedback(
                f"alert {alert_id} is not one this process raised: add its topic, series "
                "and severity (copied from the alert) to the verdict"
            )
        entry = {
            "topic": str(topic),
            "series": str(series),
            "severity": float(severity),
            "verdict": verdict,
            "note": feedback.get("note"),
            "at_ms": int(time.time() * 1000),
        }
        earlier = self.verdicts.get(alert_id)
        if earlier is not None and all(
            earlier[k] == entry[k] for k in ("topic", "series", "severity", "verdict", "note")
        ):
            return verdict  # delivered again: nothing changes
        self.verdicts.pop(alert_id, None)
        self.verdicts[alert_id] = entry
        while len(self.verdicts) > self.max_verdicts:
            oldest = next(iter(self.verdicts))
            dropped = self.verdicts.pop(oldest)
            self._recompute(dropped["topic"], dropped["series"])
        self.applied[(entry["topic"], verdict)] += 1
        self._changed(entry["topic"], entry["series"], f"{alert_id} {verdict}")
        return verdict

    # ---- bars ------------------------------------------------------------------------------
    def _recompute(self, topic: str, series: str) -> float:
        false_alarms, confirmed = [], []
        for v in self.verdicts.values():
            if v["topic"] == topic and v["series"] == series:
                (false_alarms if v["verdict"] == "false_alarm" else confirmed).append(v["severity"])
        bar = 1.0
        if false_alarms:
            bar = min(self.max_bar, max(false_alarms) * (1.0 + self.margin))
        if confirmed:
            bar = min(bar, min(confirmed))
        bars = self.bars(topic)
        if bar > 1.0:
            bars[series] = bar
        else:
            bars.pop(series, None)
        return bar

    def _changed(self, topic: str, series: str, what: str) -> None:
        before = self.bars(topic).get(series, 1.0)
        after = self._recompute(topic, series)
        log.info(
            "feedback: %s on %s/%s: severity bar %.3g -> %.3g", what, topic, series, before, after
        )
        self._save()

    # ---- parsing and persistence -----------------------------------------------------------
    @staticmethod
    def _parse(message: Message) -> dict[str, Any]:
        raw = message.value or b""
        if len(raw) > MAX_FEEDBACK_BYTES:
            raise InvalidFeedback(f"{len(raw)} bytes (at most {MAX_FEEDBACK_BYTES})")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise InvalidFeedback(f"not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidFeedback("not a JSON object")
        alert_id, verdict = body.get("alert_id"), body.get("verdict")
        if not isinstance(alert_id, str) or not 0 < len(alert_id) <= 128:
            raise InvalidFeedback("alert_id must be the alert's alert_id (a string)")
        if verdict not in VERDICTS:
            raise InvalidFeedback(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
        note = body.get("note")
        if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE_CHARS):
            raise InvalidFeedback(f"note must be a string of at most {MAX_NOTE_CHARS} chars")
        feedback: dict[str, Any] = {"alert_id": alert_id, "verdict": verdict, "note": note}
        for field in ("topic", "series"):
            if field in body:
                if not isinstance(body[field], str):
                    raise InvalidFeedback(f"{field} must be a string")
                feedback[field] = body[field]
        if "severity" in body:
            severity = body["severity"]
            if (
                isinstance(severity, bool)
                or not isinstance(severity, int | float)
                or not 0 <= severity < 1e12
            ):
                raise InvalidFeedback("severity must be the alert's severity (a number >= 0)")
            feedback["severity"] = float(severity)
        return feedback

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            kept = json.loads(self.path.read_text())["verdicts"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("feedback: %s unreadable (%s); starting without verdicts", self.path, exc)
            return
        self.verdicts = {str(k): v for k, v in kept.items()}
        for topic, series in {(v["topic"], v["series"]) for v in self.verdicts.values()}:
            self._recompute(topic, series)

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        with temporary.open("w") as handle:
            json.dump({"verdicts": self.verdicts}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(self.path)
