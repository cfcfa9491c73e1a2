"""The daemon: the wiring of source -> pipelines -> batcher -> outbox -> checkpoint, and a
short loop over them (after quixstreams' ``Application.run``).

Every job lives in a collaborator: :class:`~streamdet.runtime.pipeline.TopicPipeline`
decodes, windows, scores and decides one topic; the
:class:`~streamdet.serving.lifecycle.ModelLifecycle` inside it trains, retrains and
reloads; :class:`~streamdet.runtime.outbox.Outbox` delivers alerts and dead letters;
:class:`~streamdet.runtime.checkpoint.Checkpoint` owns the commit order; the metrics collector
reads all of them at scrape time.

Delivery is at least once: the committed position never passes work a stage still holds,
and the committed offset is the replay point that lets a restarted daemon (or the member a
rebalance hands a partition to) rebuild every series' window. Windows rebuilt from replayed
events are not scored again. Nothing a message holds, and no broker or training failure,
ends the loop.
"""

from __future__ import annotations

import functools
import logging
import signal
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from streamdet.config import StreamdetConfig
from streamdet.core.errors import ConfigError
from streamdet.core.progress import ProgressFn, stderr_progress
from streamdet.core.records import TopicPartition, Window
from streamdet.io.build import IO, build_io
from streamdet.io.schema_registry import SchemaRegistry
from streamdet.io.sinks.base import Sink
from streamdet.io.sinks.scores import ScoreSink
from streamdet.io.sources.base import Source
from streamdet.runtime.checkpoint import Checkpoint
from streamdet.runtime.feedback import FeedbackBook
from streamdet.runtime.metrics import Metrics, SeriesScoreExporter
from streamdet.runtime.outbox import Outbox, Outgoing
from streamdet.runtime.pipeline import TopicPipeline
from streamdet.serving.lifecycle import ModelLifecycle
from streamdet.stream.batcher import WindowBatcher
from streamdet.stream.record_readers import record_reader

log = logging.getLogger("streamdet.app")
RECENT_ALERTS = 20  # the latest alerts shown on the Detector dashboard
# A partition with records waiting that the consumer has not fetched for this long is
# logged; past the second limit ``/healthz`` fails, so the process is restarted with a new
# consumer (a kafka-python defect once left one partition unread for good).
STALLED_WARN_S = 120.0
STALLED_UNHEALTHY_S = 600.0


def n_features(topic: Any) -> int:
    if topic.kind == "image":
        return int(np.prod(topic.format.image_shape))
    return len(topic.format.value_fields)


class Application:
    """The streamdet daemon.

    ``source``, ``alert_sinks`` and ``dead_letter_sinks`` replace what the config would build
    (embedders, replays, tests). ``scores`` (a :class:`ScoreSink`) sees every scored window's
    decision, not only alerts. ``synchronous`` is for finite replays (``streamdet replay``,
    ``evaluate nab``): trainings block the loop, retraining triggers are checked after every
    poll and each poll's windows are scored before the next, so a replay's alerts do not
    depend on the machine's speed.

    >>> from streamdet.config import load_config_text
    >>> app = Application(load_config_text("topics: [{name: s, detector: {name: seq2seq}}]",
    ...                                    environ={}), serve_metrics=False)
    >>> sorted(app.pipelines)
    ['s']
    """

    def __init__(
        self,
        config: StreamdetConfig,
        *,
        source: Source | None = None,
        alert_sinks: list[Sink[Any]] | None = None,
        dead_letter_sinks: list[Sink[Any]] | None = None,
        progress: ProgressFn = stderr_progress,
        serve_metrics: bool = True,
        scores: ScoreSink | None = None,
        synchronous: bool = False,
    ) -> None:
        if not config.topics:
            raise ConfigError("config.yaml: topics: at least one topic is needed")
        self.config = config
        self.progress = progress
        self.synchronous = synchronous
        self.scores = scores
        self._serve_metrics = serve_metrics
        self.io = self._io(source, alert_sinks, dead_letter_sinks)
        self.source = self.io.source
        self.metrics = Metrics()
        self.series_scores = SeriesScoreExporter(
            self.metrics, config.metrics.series_allowlist, config.metrics.top_k_series
        )
        self.alerts_delivered: dict[str, int] = {}
        self.outbox_full = False
        self.recent_alerts: deque[dict[str, Any]] = deque(maxlen=RECENT_ALERTS)
        feedback = config.feedback
        self.feedback = FeedbackBook(
            feedback.margin,
            feedback.max_severity_bar,
            Path(config.models.store) / "feedback.json" if feedback.topic else None,
            feedback.max_verdicts,
        )
        self.outbox = Outbox(
            self.io.alert_sinks,
            self.io.dead_letter_sinks,
            on_delivered=self._delivered,
            on_settled=self._settled,
        )
        batching = config.batching
        self.batcher = WindowBatcher(batching.max_batch, batching.max_delay_ms)
        self.pipelines: dict[str, TopicPipeline] = {}
        self.checkpoint = Checkpoint(
            self.source,
            self.outbox,
            [self.batcher],
            batching.commit_interval_ms / 1000,
            max_replay_lag=batching.max_replay_lag,
            transaction=self.io.transaction,
            # Possibly on the consumer's IO thread (a rebalance): applied by the loop.
            on_rewind=lambda partitions: self._rebalances.append(("rewound", partitions)),
        )
        self.schema_registry = (
            SchemaRegistry(config.schema_registry)
            if any(t.format.encoding != "json" for t in config.topics)
            else None
        )
        for topic in config.topics:
            lifecycle = ModelLifecycle(
                topic,
                Path(config.models.store),
                n_features(topic),
                progress,
                keep_versions=config.models.keep_versions,
                synchronous=synchronous,
            )
            pipeline = TopicPipeline(
                topic,
                lifecycle,
                self.outbox,
                cooldown_ms=int(config.alerts.cooldown_s * 1000),
                max_backlog_bytes=batching.max_backlog_bytes,
                already_scored=self.checkpoint.already_scored,
                pause=self._pause,
                scores=scores,
                observe_scores=self.metrics.observe_scores,
                progress=progress,
                clock_ms=self.source.clock_ms,
                raised=self.feedback.remember,
                episode=functools.partial(self.feedback.extend, topic.name),
                severity_bars=self.feedback.bars(topic.name),
                read_record=record_reader(topic, self.schema_registry),
            )
            self.pipelines[topic.name] = pipeline
            self.checkpoint.stages.append(pipeline)
        self._rebalances: deque[tuple[str, set[TopicPartition]]] = deque()
        self.source.on_rebalance(
            lambda partitions: self._rebalances.append(("revoked", partitions)),
            lambda partitions: self._rebalances.append(("assigned", partitions)),
            settle=self.checkpoint.settle,
        )
        self.lag: dict[TopicPartition, int] = {}
        self.stalled: dict[TopicPartition, float] = {}
        self.broker_up = True
        self.metrics.watch(self)
        self._stop = False
        now = time.monotonic()
        self._last_loop = self._last_report = self._last_lag = now
        self._next_store_check = now + config.models.reload_interval_s

    def _io(
        self,
        source: Source | None,
        alert_sinks: list[Sink[Any]] | None,
        dead_letter_sinks: list[Sink[Any]] | None,
    ) -> IO:
        if source is not None and alert_sinks is not None and dead_letter_sinks is not None:
            return IO(source, alert_sinks, dead_letter_sinks)
        built = build_io(self.config)
        return IO(
            source or built.source,
            built.alert_sinks if alert_sinks is None else alert_sinks,
            built.dead_letter_sinks if dead_letter_sinks is None else dead_letter_sinks,
            built.closers,
            built.feedback,
            built.transaction if source is None else None,
        )

    @property
    def alerts_published(self) -> int:
        return sum(self.alerts_delivered.values())

    # ---- lifecycle --------------------------------------------------------------------
    def stop(self, *_: Any) -> None:
        """Ask the loop to finish the current batch, publish, commit and return."""
        self._stop = True

    def run(self, install_signal_handlers: bool = True) -> int:
        """Consume until stopped (SIGTERM/SIGINT) or the source is exhausted; exit code.

        Embedders running the loop off the main thread pass ``install_signal_handlers=False``
        and call :meth:`stop` themselves.
        """
        if install_signal_handlers:
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        server = None
        if self._serve_metrics:
            from streamdet.runtime.http import serve

            server = serve(self.config.metrics, self.metrics.registry, self.healthy, self.ready)
            scheme = "https" if self.config.metrics.tls_certfile else "http"
            self.progress(
                f"metrics at {scheme}://{self.config.metrics.host}:{server.server_port}/metrics "
                "(and /healthz, /readyz)"
            )
        if self.io.feedback is not None:
            given = self.io.feedback.catch_up(deadline_s=15.0)
            applied = [self.feedback.apply(message) for message in given]
            self.progress(
                f"feedback: {sum(a is not None for a in applied)} verdict(s) read from "
                f"{self.config.feedback.topic}"
            )
        try:
            while not self._stop:
                self.turn()
                if self.source.exhausted and not self._busy():
                    self._score_what_is_left()
                    if not self._busy():  # unless a failing scorer put windows back
                        break
            self._score_what_is_left()
            self.checkpoint.commit(time.monotonic(), force=True)
        finally:
            if server is not None:
                server.shutdown()
            for pipeline in self.pipelines.values():
                # A training stops at its next epoch: TensorFlow must not be running in a
                # thread when the interpreter exits (it aborts the process).
                pipeline.lifecycle.stop()
            self.source.close()
            if self.scores is not None:
                self.scores.close()
            self.io.close()
        scored = sum(p.windows_scored for p in self.pipelines.values())
        consumed = sum(p.events for p in self.pipelines.values())
        self.progress(
            f"stopped: {consumed} event(s) consumed, {scored} window(s) scored, "
            f"{self.alerts_published} alert(s) published"
        )
        return 0

    def turn(self) -> None:
        """One turn of the loop: poll, route, tend the models, score what is due, deliver
        and commit, report."""
        self._last_loop = time.monotonic()
        messages = self.source.poll(self.config.batching.poll_timeout_ms)
        if self.io.feedback is not None:
            for verdict in self.io.feedback.poll(0):
                self.feedback.apply(verdict)
        self._apply_rebalances()
        now = time.monotonic()
        for message in messages:
            pipeline = self.pipelines.get(message.topic)
            if pipeline is None:
                continue
            self.checkpoint.consumed(message)
            # Only a model still warming up asks (it reads the assignment: not per event).
            seen = pipeline.lifecycle.ready or self._all_partitions_seen(message.topic)
            for window in pipeline.handle(message, now, seen):
                self.batcher.add(window, now)
        self._tend(now, drain=False)
        if self.synchronous or self.batcher.due(time.monotonic()):
            self._score(self.batcher.drain(), now)
        self.checkpoint.commit(time.monotonic())
        self._bound_outbox()
        self._report()

    def _busy(self) -> bool:
        return any(p.busy for p in self.pipelines.values())

    def _score_what_is_left(self) -> None:
        """The last windows: every backlog and the batch that waits, scored now."""
        now = time.monotonic()
        self._tend(now, drain=True)
        self._score(self.batcher.drain(), now)

    def _tend(self, now: float, drain: bool) -> None:
        check_store = now >= self._next_store_check or self.synchronous
        if check_store:
            self._next_store_check = now + self.config.models.reload_interval_s
        # Backlogs are released in slices, so the loop keeps polling and honours SIGTERM.
        budget = None if drain or self.synchronous else 4 * self.config.batching.max_batch
        if self.outbox_full:  # the sinks are behind: no new verdicts until they catch up
            budget = 0
        for pipeline in self.pipelines.values():
            for window in pipeline.tend(now, check_store, budget):
                self.batcher.add(window, now)
                if self.batcher.due(now):
                    self._score(self.batcher.drain(), now)

    def _score(self, batch: list[Window], now: float) -> None:
        if not batch:
            return
        self.metrics.batch_size.observe(len(batch))
        by_topic: dict[str, list[Window]] = {}
        for window in batch:
            by_topic.setdefault(window.topic, []).append(window)
        deferred: list[Window] = []
        for topic, windows in by_topic.items():
            pipeline = self.pipelines[topic]
            for scored in pipeline.score(windows):
                self.series_scores.observe(topic, scored.window.series, scored.score)
            deferred.extend(pipeline.deferred)
        if deferred:  # back in their topic's backlog, not settled
            waiting = {id(window) for window in deferred}
            batch = [window for window in batch if id(window) not in waiting]
        self.outbox.track(batch)

    # ---- what the collaborators call back ----------------------------------------------
    def _delivered(self, item: Outgoing) -> None:
        if item.kind == "alert":
            topic = item.key[0]
            self.alerts_delivered[topic] = self.alerts_delivered.get(topic, 0) + 1
            self.recent_alerts.append(item.record)

    def _settled(self, received_at: list[float], now: float) -> None:
        """Every scored window's verdict is durable: observe its end-to-end latency."""
        for received in received_at:
            self.metrics.e2e_latency.observe(now - received)

    def _pause(self, topic: str, paused: bool) -> None:
        """A pipeline's backlog asks to pause or resume its topic."""
        self._set_flow(topic)

    def _set_flow(self, topic: str) -> None:
        """Fetch ``topic`` unless its backlog is full or the outbox holds too much."""
        hold = self.pipelines[topic].paused or self.outbox_full
        partitions = {key for key in self.checkpoint.partitions() if key[0] == topic}
        assignment = self.source.assignment()
        if assignment is not None:
            partitions |= {key for key in assignment if key[0] == topic}
        (self.source.pause if hold else self.source.resume)(partitions)

    def _bound_outbox(self) -> None:
        """Back-pressure from the sinks: past ``batching.max_undelivered`` alerts and dead
        letters waiting for a sink, every topic pauses until half of them are out (a
        lasting sink failure must not grow memory, or pile up a replay, without bound)."""
        limit = self.config.batching.max_undelivered
        waiting = len(self.outbox)
        full = waiting > (limit // 2 if self.outbox_full else limit)
        if full == self.outbox_full:
            return
        self.outbox_full = full
        self.progress(
            f"{waiting} alert(s) and dead letter(s) undelivered: "
            + ("pausing consumption until half are out" if full else "resuming consumption")
        )
        for topic in self.pipelines:
            self._set_flow(topic)

    def _all_partitions_seen(self, topic: str) -> bool:
        """True when every partition of ``topic`` assigned to us has delivered data."""
        assignment = self.source.assignment()
        if assignment is None:
            return True
        # An empty assignment means "not known yet" (before the group join completes).
        mine = [key for key in assignment if key[0] == topic]
        return bool(mine) and all(self.checkpoint.seen(key) for key in mine)

    def _apply_rebalances(self) -> None:
        """Partitions moved to another member: drop their state (they were committed as
        they were handed over; the new owner rebuilds from that commit). New partitions:
        their restart marks are read fresh. Partitions rewound (an aborted alert
        transaction): their state is dropped and rebuilt from their last commit."""
        while self._rebalances:
            kind, partitions = self._rebalances.popleft()
            if kind == "rewound":
                self.progress(f"read again from the last commit: {sorted(partitions)}")
            else:
                self.progress(f"rebalance: {kind} {sorted(partitions)}")
            if kind == "assigned":
                self.checkpoint.assign(partitions)
                continue
            if kind == "revoked":
                self.checkpoint.revoke(partitions)
            self.batcher.drop_partitions(partitions)
            for pipeline in self.pipelines.values():
                pipeline.drop_partitions(partitions)

    def _report(self) -> None:
        now = time.monotonic()
        if now - self._last_lag >= 5:
            self._last_lag = now
            self.lag = self.source.lag()
            self.broker_up = self.source.connected()
            self._watch_stalls(self.source.stalled())
        if now - self._last_report < 10:
            return
        self._last_report = now
        self.series_scores.export()
        for name, pipeline in self.pipelines.items():
            self.progress(
                f"topic {name}: model {self._model_state(pipeline)}, {len(pipeline.windows)} "
                f"series, {pipeline.windows_scored} windows scored, "
                f"{self.alerts_published} alert(s) so far"
            )

    def _watch_stalls(self, stalled: dict[TopicPartition, float]) -> None:
        """Say when a partition starts or stops waiting unread past ``STALLED_WARN_S``."""
        for (topic, partition), seconds in stalled.items():
            was = self.stalled.get((topic, partition), 0.0) >= STALLED_WARN_S
            if seconds >= STALLED_WARN_S and not was:
                log.warning(
                    "kafka: %s/%d has had %d message(s) waiting for %.0fs and the consumer "
                    "does not fetch them (not paused); /healthz fails after %.0fs",
                    topic,
                    partition,
                    self.lag.get((topic, partition), 0),
                    seconds,
                    STALLED_UNHEALTHY_S,
                )
            elif was and seconds < STALLED_WARN_S:
                log.warning("kafka: %s/%d is read again", topic, partition)
        self.stalled = stalled

    # ---- health -------------------------------------------------------------------------
    def healthy(self) -> tuple[bool, str]:
        """The loop turned recently (it polls at least every ``poll_timeout_ms``) and no
        partition's records have waited unfetched past ``STALLED_UNHEALTHY_S``."""
        idle = time.monotonic() - self._last_loop
        limit = max(30.0, 10 * self.config.batching.poll_timeout_ms / 1000)
        if idle > limit:
            return False, f"the consume loop has not turned for {idle:.0f}s"
        wedged = sorted(
            key for key, seconds in self.stalled.items() if seconds >= STALLED_UNHEALTHY_S
        )
        if wedged:
            return False, f"partitions with records the consumer does not fetch: {wedged}"
        return True, "consume loop running"

    def ready(self) -> tuple[bool, str]:
        """Broker reachable, partitions assigned (Kafka) and every topic's model loaded."""
        if not self.source.connected():
            return False, "the Kafka broker cannot be reached"
        assignment = self.source.assignment()
        if assignment is not None and not assignment:
            return False, "no partitions assigned yet"
        registry = self.schema_registry
        if registry is not None and not registry.up:
            return False, "the schema registry cannot answer (the reason is in the log)"
        waiting = [p for p in self.pipelines.values() if not p.lifecycle.ready]
        if waiting:
            states = ", ".join(f"{p.name}: {self._model_state(p)}" for p in waiting)
            return False, f"models not ready ({states})"
        return True, "consuming with every model loaded"

    @staticmethod
    def _model_state(pipeline: TopicPipeline) -> str:
        model = pipeline.lifecycle
        if model.state == "failed" and model.retry_at is not None:
            wait = max(model.retry_at - time.monotonic(), 0)
            # The reason is in the log: an unauthenticated probe shows no exception text.
            return f"training failed, retry in {wait:.0f}s (the reason is in the log)"
        return model.state
