"""One topic's pipeline: decode -> windows -> (wait for the model) -> score -> decide.

:class:`TopicPipeline` holds everything the daemon keeps per topic: the window store, the
model's lifecycle, the threshold policy, the drift monitor and the windows waiting for a
model. Alerts and dead letters go to the shared outbox; counts are kept here for the metrics
collector to read at scrape time. Nothing in it knows Kafka or Prometheus.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from streamdet.config import TopicConfig
from streamdet.core.backoff import Backoff
from streamdet.core.records import (
    Event,
    Message,
    Pending,
    ScoredWindow,
    TopicPartition,
    Window,
    note_pending,
)
from streamdet.io.schema_registry import RegistryUnavailable
from streamdet.io.sinks.alerts import build_alert
from streamdet.io.sinks.dead_letter import DeadLetter
from streamdet.io.sinks.scores import ScoreSink
from streamdet.io.sources.base import wall_clock_ms
from streamdet.runtime.explanation import explain
from streamdet.runtime.outbox import Outbox
from streamdet.serving.drift import ScoreDrift
from streamdet.serving.lifecycle import ModelLifecycle
from streamdet.stream.decode import (
    InvalidMessage,
    RecordReader,
    decode_image,
    decode_timeseries,
)
from streamdet.stream.window_store import WindowStore
from streamdet.thresholds import DecisionPolicy

log = logging.getLogger("streamdet.pipeline")

# Batches in a row in which no window scored before their windows are dead-lettered.
MAX_SCORING_ATTEMPTS = 5

# A batch observer: (topic, detector, scores, seconds spent scoring).
ScoresObserver = Callable[[str, str, np.ndarray, float], None]


class TopicPipeline:
    """Per topic: :meth:`handle` a message, :meth:`tend` the model and the windows that wait
    for it, :meth:`score` a batch of its windows."""

    def __init__(
        self,
        topic: TopicConfig,
        lifecycle: ModelLifecycle,
        outbox: Outbox,
        *,
        cooldown_ms: int,
        max_backlog_bytes: int,
        already_scored: Callable[[str, int, int], bool] = lambda topic, partition, end: False,
        pause: Callable[[str, bool], None] = lambda topic, pause: None,
        scores: ScoreSink | None = None,
        observe_scores: ScoresObserver = lambda topic, detector, scores, seconds: None,
        progress: Callable[[str], None] = lambda message: None,
        clock_ms: Callable[[], int] = wall_clock_ms,
        raised: Callable[[dict[str, Any]], None] = lambda alert: None,
        episode: Callable[[str, float], None] = lambda series, severity: None,
        severity_bars: Mapping[str, float] | None = None,
        read_record: RecordReader | None = None,
    ) -> None:
        self.config = topic
        self.name = topic.name
        self.lifecycle = lifecycle
        self.outbox = outbox
        self.clock_ms = clock_ms
        self.raised = raised
        self.episode = episode
        self.held_by_feedback = 0
        shape = lifecycle.shape
        self.windows = WindowStore(
            shape.seq_len,
            shape.n_features,
            1 if shape.one_event_per_instance else topic.window.stride,
            "accept" if shape.one_event_per_instance else topic.window.out_of_order,
            topic.window.lateness_ms,
            topic.max_series,
            on_evict=self._forget_series,
        )
        self.policy = DecisionPolicy(topic.threshold, cooldown_ms, topic.max_series)
        if severity_bars is not None:
            self.policy.severity_bars = severity_bars
        self.drift = ScoreDrift(topic.drift_window, min(200, topic.drift_window))
        self.max_backlog_bytes = max_backlog_bytes
        self._already_scored = already_scored
        self._pause = pause
        self.scores = scores
        self._observe_scores = observe_scores
        self.progress = progress
        # Windows completed while the model is not ready, scored in order once it is. Bounded
        # in bytes: past the limit the topic's partitions pause instead of windows dropping.
        self.backlog: deque[Window] = deque()
        self.backlog_bytes = 0
        # Scoring that failed for every window of a batch: retried after this backoff.
        self.scoring_backoff = Backoff(1.0, 30.0)
        self.deferred: list[Window] = []  # of the last batch, back in the backlog
        self.backlog_full = False
        # Messages that wait for the schema registry, in the order they came: while any
        # waits, later ones queue behind it and the topic's partitions are paused.
        self.read_record = read_record
        self.waiting_for_schema: deque[Message] = deque()
        self.schema_backoff = Backoff(1.0, 30.0)
        self._all_partitions_seen = False
        self._serving: object = None
        # What the metrics collector reads at scrape time.
        self.events = 0
        self.invalid: Counter[str] = Counter()
        self.rebuilt = 0
        self.shed_for_bytes = 0  # times series were forgotten for the byte budget
        self.windows_scored = 0
        self.alerts_raised = 0
        self.last_threshold: float | None = None

    # ---- the hot path ----------------------------------------------------------------------
    def handle(self, message: Message, now: float, all_partitions_seen: bool) -> list[Window]:
        """Decode one message; the windows it completes that are due for scoring now (the
        others wait in the backlog until the model is ready)."""
        self.events += 1
        self._all_partitions_seen = all_partitions_seen
        if self.waiting_for_schema:
            self.waiting_for_schema.append(message)
            return []
        return self._handle(message, now)

    def _handle(self, message: Message, now: float) -> list[Window]:
        try:
            event = self._decode(message)
        except RegistryUnavailable as exc:
            self.waiting_for_schema.append(message)
            delay = self.schema_backoff.failed(time.monotonic())
            self._pause(self.name, True)
            self.progress(
                f"topic {self.name}: {exc}; {len(self.waiting_for_schema)} message(s) wait, "
                f"consumption paused, retry in {delay:.0f}s"
            )
            return []
        if event is None:
            return []
        all_partitions_seen = self._all_partitions_seen
        lifecycle = self.lifecycle
        if not lifecycle.ready:
            lifecycle.offer(event.series, event.values, all_partitions_seen)
        lifecycle.observe(
            event.series,
            event.timestamp_ms,
            event.values,
            learn=self.windows.established(event.series),
        )
        due = []
        windows = self.windows.add_all(event, now)
        if self.state_bytes() > self.config.max_state_bytes:
            self._shed_state()
        for window in windows:
            if self._already_scored(window.topic, window.partition, window.end_offset):
                self.rebuilt += 1
            elif lifecycle.ready and not self.backlog:
                due.append(window)
            else:
                self.backlog.append(window)
                self.backlog_bytes += window.nbytes
        return due

    def _decode(self, message: Message) -> Event | None:
        topic = self.config
        now_ms = self.clock_ms()
        try:
            if topic.kind == "image":
                shape: Any = self.lifecycle.shape.instance_shape
                return decode_image(
                    message, topic.format, shape, topic.limits, now_ms, self.read_record
                )
            return decode_timeseries(
                message,
                topic.format,
                self.lifecycle.shape.one_event_per_instance,
                topic.limits,
                now_ms,
                self.read_record,
            )
        except RegistryUnavailable:
            raise  # not the message's fault: it waits (see handle)
        except InvalidMessage as exc:
            self.dead_letter(message, exc.reason, exc.detail)
        except Exception as exc:  # a decoder bug must not stop the partition either
            log.exception(
                "decoding %s/%d@%d failed", message.topic, message.partition, message.offset
            )
            self.dead_letter(message, "decode_error", f"{type(exc).__name__}: {exc}"[:300])
        return None

    def state_bytes(self) -> int:
        """Memory the topic's per-series state holds (estimated from per-series sizes)."""
        return (
            len(self.windows) * self.windows.series_bytes
            + self.policy.state_bytes()
            + self.lifecycle.state_bytes()
        )

    def _shed_state(self) -> None:
        """Forget series until the state fits the topic's byte budget again (series that
        never filled a window first), with a tenth of the budget to spare so that this
        runs seldom."""
        target = 0.9 * self.config.max_state_bytes
        while len(self.windows) > 1 and (held := self.state_bytes()) > target:
            per_series = held / len(self.windows)
            excess = max(1, math.ceil((held - target) / per_series))
            self.windows.trim(len(self.windows) - excess)
        self.shed_for_bytes += 1

    def _forget_series(self, series: str) -> None:
        """The window store forgot ``series`` (beyond the topic's series or bytes): so does
        every other per-series state."""
        self.policy.forget(series)
        self.lifecycle.forget(series)

    def dead_letter(self, message: Message, reason: str, detail: str) -> None:
        self.invalid[reason] += 1
        self.outbox.add_dead_letter(DeadLetter(message, reason, detail))

    # ---- the model and the windows that wait for it ----------------------------------------
    def tend(self, now: float, check_store: bool, budget: int | None) -> list[Window]:
        """Retry a failed training, follow the store, start a due retraining, swap in a new
        model; then the windows of the backlog now due (at most ``budget``, None: all), and
        pause or resume the topic's partitions by the backlog's size."""
        lifecycle = self.lifecycle
        lifecycle.retry_if_due(now)
        if check_store:
            if not lifecycle.synchronous:  # a replay's store changes only through it
                lifecycle.check_store()
            reason = lifecycle.retrain_due(self.drift.statistic())
            if reason is not None:
                lifecycle.start_retraining(reason)
        lifecycle.apply_reload()
        released = self._retry_waiting(now)
        if lifecycle.ready and self.scoring_backoff.ready(time.monotonic()):
            while self.backlog and (budget is None or len(released) < budget):
                window = self.backlog.popleft()
                self.backlog_bytes -= window.nbytes
                released.append(window)
        # While warming the model needs more events, so the topic is never paused then.
        warming = lifecycle.state == "warming"
        if not self.backlog_full and not warming and self.backlog_bytes > self.max_backlog_bytes:
            self._set_backlog_full(True)
        elif self.backlog_full and self.backlog_bytes <= self.max_backlog_bytes // 2:
            self._set_backlog_full(False)
        return released

    def _retry_waiting(self, now: float) -> list[Window]:
        """Once the backoff allows, decode the messages that wait for the registry, in
        order, until one has to wait again; the windows they complete (as :meth:`handle`)."""
        if not self.waiting_for_schema or not self.schema_backoff.ready(time.monotonic()):
            return []
        waiting = self.waiting_for_schema
        self.waiting_for_schema = deque()
        windows: list[Window] = []
        while waiting:
            windows.extend(self._handle(waiting.popleft(), now))
            if self.waiting_for_schema:  # the registry failed again: the rest wait behind
                self.waiting_for_schema.extend(waiting)
                return windows
        self.schema_backoff.succeeded()
        self._pause(self.name, self.paused)
        self.progress(f"topic {self.name}: the schema registry answers; consuming again")
        return windows

    @property
    def paused(self) -> bool:
        """The topic's partitions should not be fetched: its backlog is full, or messages
        wait for the schema registry."""
        return self.backlog_full or bool(self.waiting_for_schema)

    def _set_backlog_full(self, full: bool) -> None:
        self.backlog_full = full
        self._pause(self.name, self.paused)
        self.progress(
            f"topic {self.name}: {'pausing' if full else 'resuming'} consumption "
            f"({self.backlog_bytes} bytes of windows wait for the model)"
        )

    @property
    def busy(self) -> bool:
        """A model is training, windows wait that a ready model can score, or messages wait
        for the schema registry."""
        return (
            self.lifecycle.state == "training"
            or (self.lifecycle.ready and bool(self.backlog))
            or bool(self.waiting_for_schema)
        )

    # ---- scoring and deciding --------------------------------------------------------------
    def score(self, windows: list[Window]) -> list[ScoredWindow]:
        """Score a batch of this topic's windows and decide each: alerts and dead letters go
        to the outbox."""
        bundle = self.lifecycle.bundle
        assert bundle is not None
        if bundle is not self._serving:
            # A new model scores on another scale: the rules start again from its calibration.
            self._serving = bundle
            self.policy.start(bundle.calibration)
            self.drift.reference(bundle, bundle.calibration.pooled)
        started = time.perf_counter()
        self.deferred = []
        predicted = self._predict(windows)
        if predicted:
            self._observe_scores(
                self.name,
                bundle.name,
                np.array([score for _, score, _ in predicted]),
                time.perf_counter() - started,
            )
        scored = []
        thresholds = []
        alerted: list[ScoredWindow] = []
        for window, score, feature in predicted:
            decision = self.policy.decide(
                window.series, score, window.end_ts_ms, (window.partition, window.end_offset)
            )
            result = ScoredWindow(window, score, decision, feature, bundle.version)
            scored.append(result)
            self.drift.observe(score)
            thresholds.append(decision.threshold)
            if self.scores is not None:
                self.scores.record(result)
            if decision.held_by_feedback:
                self.held_by_feedback += 1
            elif decision.flagged:
                # Flagged windows (alerted, or held back by the cooldown) are never learnt.
                self.lifecycle.exclude(window.series, window.start_ts_ms, window.end_ts_ms)
            if decision.alert:
                alerted.append(result)
        # Explained together (one forward pass), then raised in the windows' order: a
        # window the cooldown held after an alert of the same batch extends that alert.
        explanations = iter(self._explain(alerted))
        for result in scored:
            decision = result.decision
            if decision.alert:
                self.alerts_raised += 1
                alert = build_alert(result, bundle.name, bundle.model_version)
                alert["explanation"] = next(explanations)
                self.raised(alert)
                self.outbox.add_alert(alert, result.window)
            elif decision.flagged and not decision.held_by_feedback:
                self.episode(result.window.series, decision.severity)  # held by the cooldown
        self.windows_scored += len(scored)
        finite = [t for t in thresholds if np.isfinite(t)]
        if finite:
            self.last_threshold = float(np.median(finite))
        return scored

    def _explain(self, alerted: list[ScoredWindow]) -> list[dict[str, Any] | None]:
        """What each alert shows of its window: observed and expected values, the steps and
        features that scored highest. The expected values cost one more forward pass, for
        the batch's alerted windows together; a detector that cannot give them (or fails
        to) gives none. An explanation never costs an alert."""
        if not alerted:
            return []
        lifecycle = self.lifecycle
        shape = lifecycle.shape
        detector = lifecycle.detector
        assert detector is not None
        series = [result.window.series for result in alerted]
        instances = shape.instances(
            lifecycle.scaled(series, np.stack([result.window.values for result in alerted]))
        )
        expected: list[np.ndarray | None] = [None] * len(alerted)
        try:
            guess = detector.expected(instances)
            if guess is not None:
                expected = list(np.asarray(guess, np.float64))
                for i, name in enumerate(series):
                    statistics = (
                        None if lifecycle.scaler is None else lifecycle.scaler.statistics(name)
                    )
                    if statistics is not None:  # back from the series' own standard units
                        mean, std = statistics
                        expected[i] = expected[i] * std + mean
        except Exception:
            log.exception("expected values of %d windows of %s failed", len(alerted), self.name)
        members: list[dict[str, Any]] | None = None
        member_probabilities = getattr(detector, "member_probabilities", None)
        if member_probabilities is not None:  # an ensemble: what each member made of it
            try:
                probabilities, _ = member_probabilities(instances)
                members = [
                    {"detector": member.name, "probability": np.asarray(p, np.float64), "weight": w}
                    for member, p, w in zip(
                        detector.members, probabilities, detector.weights, strict=True
                    )
                ]
            except Exception:
                log.exception("ensemble members of %s failed", self.name)
        explanations = []
        for i, result in enumerate(alerted):
            try:
                explanation = self._explain_one(result, expected[i])
                if members is not None:
                    explanation["members"] = [
                        {
                            "detector": m["detector"],
                            "probability": float(m["probability"][i]),
                            "weight": float(m["weight"]),
                        }
                        for m in members
                    ]
                explanations.append(explanation)
            except Exception:
                log.exception(
                    "explaining an alert of %s/%s failed", self.name, result.window.series
                )
                explanations.append(None)
        return explanations

    def _explain_one(self, scored: ScoredWindow, expected: np.ndarray | None) -> dict[str, Any]:
        kind = self.config.kind
        window = scored.window
        values = window.values if kind == "timeseries" else window.values[0]
        if kind == "image":
            values = values.reshape(self.lifecycle.shape.instance_shape)
        scores = np.asarray(scored.feature_scores, np.float64)
        if scores.size == values.size:
            scores = scores.reshape(values.shape)
        elif expected is not None and np.size(expected) == values.size:
            # Scores not per cell (e.g. per embedded sub-window): the squared deviation from
            # what the model expected ranks the cells instead.
            scores = np.square(values - np.reshape(expected, values.shape))
        else:
            scores = np.zeros(values.shape)
        if expected is not None and np.size(expected) != values.size:
            expected = None
        return explain(kind, values, scores, expected, tuple(self.config.format.value_fields))

    def _predict(self, windows: list[Window]) -> list[tuple[Window, float, np.ndarray]]:
        """(window, score, feature scores) for every window that scores. If the batch fails,
        each window is scored alone: one bad window never costs its batch, and goes to the
        dead-letter sink (it fails, or scores NaN, while others score). When no window
        scores at all the fault is the scorer's, not the windows' (a transient error): they
        go back to the head of the backlog and are tried again after a backoff, and only
        after ``MAX_SCORING_ATTEMPTS`` such failures in a row are they dead-lettered."""
        try:
            results = self._predict_batch(windows)
            self.scoring_backoff.succeeded()
            return results
        except Exception as exc:
            failures: list[tuple[Window, Exception]] = [(windows[0], exc)]
            results = []
            if len(windows) > 1:
                failures = []
                for window in windows:
                    try:
                        results.extend(self._predict_batch([window]))
                    except Exception as window_exc:
                        failures.append((window, window_exc))
        if results:
            self.scoring_backoff.succeeded()
        elif self.scoring_backoff.failures + 1 < MAX_SCORING_ATTEMPTS:
            delay = self.scoring_backoff.failed(time.monotonic())
            self.deferred = [window for window, _ in failures]
            for window in reversed(self.deferred):
                self.backlog.appendleft(window)
                self.backlog_bytes += window.nbytes
            log.warning(
                "topic %s: no window of a batch of %d scored (%s); trying again in %.1fs",
                self.name,
                len(windows),
                failures[0][1],
                delay,
            )
            return []
        else:
            self.scoring_backoff.succeeded()
        for window, window_exc in failures:
            self._dead_letter_window(window, window_exc)
        return results

    def _predict_batch(self, windows: list[Window]) -> list[tuple[Window, float, np.ndarray]]:
        lifecycle = self.lifecycle
        detector = lifecycle.detector
        assert detector is not None
        values = lifecycle.scaled(
            [w.series for w in windows], np.stack([w.values for w in windows])
        )
        scores = detector.score(lifecycle.shape.instances(values))
        instance = np.asarray(scores.instance_score, dtype=np.float64)
        if not np.all(np.isfinite(instance)):
            bad = int(np.argmin(np.isfinite(instance)))
            raise ValueError(f"the detector scored window {bad} of the batch {instance[bad]}")
        features = np.asarray(scores.feature_score)
        return [(w, float(instance[i]), features[i]) for i, w in enumerate(windows)]

    def _dead_letter_window(self, window: Window, exc: Exception) -> None:
        """A window that cannot be scored: its last message's position and why."""
        description = {
            "series": window.series,
            "window_start_offset": window.start_offset,
            "window_end_offset": window.end_offset,
        }
        message = Message(
            window.topic,
            window.partition,
            window.end_offset,
            window.series.encode("utf-8", "replace"),
            json.dumps(description).encode(),
            window.end_ts_ms,
        )
        self.dead_letter(message, "scoring_failed", f"{type(exc).__name__}: {exc}"[:300])

    # ---- what the checkpoint asks ----------------------------------------------------------
    def pending(self) -> Pending:
        """Windows waiting for the model and events held for reordering."""
        pending: Pending = {}
        for window in self.backlog:
            note_pending(pending, window.key, window.start_offset, window.end_offset)
        for partition, offset in self.windows.unreleased().items():
            note_pending(pending, (self.name, partition), offset, offset)
        for message in self.waiting_for_schema:
            note_pending(pending, (self.name, message.partition), message.offset, message.offset)
        return pending

    def replay_points(self, exact: bool = False) -> dict[TopicPartition, int]:
        points = self.windows.replay_points(exact)
        return {(self.name, p): offset for p, offset in points.items()}

    def drop_partitions(self, partitions: set[TopicPartition]) -> None:
        """Another member owns ``partitions`` now: forget their windows (the new owner
        rebuilds them from the last commit)."""
        mine = {p for t, p in partitions if t == self.name}
        if not mine:
            return
        self.windows.drop_partitions(mine)
        kept = [w for w in self.backlog if w.partition not in mine]
        self.backlog = deque(kept)
        self.backlog_bytes = sum(w.nbytes for w in kept)
        self.waiting_for_schema = deque(
            m for m in self.waiting_for_schema if m.partition not in mine
        )
