"""Kafka consumer source: manual commits, rebalance callbacks, lag, window-state replay.

Offsets are committed by the daemon's :class:`~streamdet.runtime.checkpoint.Checkpoint`.
The committed offset is the position consumed, as for any consumer, so the group lag that
Kafka's tools and KEDA read is 0 at rest. The commit's metadata carries ``replay_from``
(the oldest event still needed to rebuild every series' window, or scored and not yet
acknowledged) and ``scored_through`` (so rebuilt windows are not alerted twice). A partition
this member is assigned (at start, or moved here by a rebalance) is held paused until its
metadata is read; the consumer then seeks back to ``replay_from`` and re-reads just enough
history to refill its windows, before anything after it is fetched. A commit written before
``replay_from`` was kept (its offset was the replay point) needs no seek.

Broker trouble never escapes as an exception from :meth:`KafkaSource.poll` or
:meth:`KafkaSource.lag`: it is logged, ``connected()`` turns false, and the next call tries
again. Commits do raise, so the checkpoint can retry them with backoff.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kafka import AsyncConsumerRebalanceListener, KafkaConsumer
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from kafka.structs import TopicPartition as KafkaPartition

from streamdet.config import KafkaConfig
from streamdet.io.kafka_client import client_settings, refused_connections
from streamdet.io.sources.base import (
    Message,
    PartitionsCallback,
    Position,
    SettleCallback,
    TopicPartition,
    wall_clock_ms,
)

METADATA_MAX_AGE_MS = 30_000
# Broker calls made from the consume loop wait at most this long, so an outage slows the
# loop down but never stalls it past the health check's limit.
CALL_TIMEOUT_MS = 2_000
COMMIT_TIMEOUT_MS = 5_000
# A poll hands over the fetch answered while the loop was busy, which the broker answered as
# soon as it had a byte: it holds what arrived just after the previous poll. The rest of
# that turn's events come in the fetch the poll sends out again; waiting one round trip for
# it hands them over in this turn instead of the next one.
FRESH_FETCH_MS = 10
ASSIGNORS = {"cooperative-sticky": CooperativeStickyAssignor, "range": RangePartitionAssignor}
log = logging.getLogger("streamdet.kafka")


def release_parked_records(consumer: KafkaConsumer) -> None:
    """Let kafka-python hand back the records it kept for a partition while it was paused.

    kafka-python 3 keeps what it had fetched for a partition that is paused (KAFKA-7548,
    dpkp/kafka-python#2981) and gives it back after ``resume`` only when its in-line slot is
    empty, ``None``; but that slot keeps the last partition's drained records, which are
    falsy and never ``None`` again. The paused-then-resumed partition is then never fetched
    again: a partition held for its replay point (each assignment, each rewind) or paused
    by back-pressure read nothing for good (found in the hour-long chaos soak, one member,
    10 minutes, until the run ended). Emptying a drained slot is what the fetcher itself
    does before taking the next records; a kafka-python without these fields is left as is.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    in_line = getattr(fetcher, "_next_partition_records", None)
    if in_line is not None and not in_line and getattr(fetcher, "_paused_partition_records", None):
        fetcher._next_partition_records = None  # type: ignore[union-attr]


class _Listener(AsyncConsumerRebalanceListener):
    """Forwards rebalances to the daemon. kafka-python runs it on its IO thread while the
    daemon's loop waits in ``poll`` (or ``close``), so it may read the loop's state; it
    awaits the commit of partitions it gives up (a blocking commit is refused there), and
    the heartbeat keeps running meanwhile."""

    def __init__(
        self,
        hold: Callable[[set[KafkaPartition]], None],
        commit_before_moving: Callable[[set[TopicPartition]], Awaitable[None]],
    ) -> None:
        self.revoked: PartitionsCallback = lambda partitions: None
        self.assigned: PartitionsCallback = lambda partitions: None
        self.hold = hold
        self.commit_before_moving = commit_before_moving

    async def on_partitions_revoked(self, revoked: set[KafkaPartition]) -> None:
        partitions = {(tp.topic, tp.partition) for tp in revoked}
        await self.commit_before_moving(partitions)
        self.revoked(partitions)

    async def on_partitions_assigned(self, assigned: set[KafkaPartition]) -> None:
        # Held until the loop thread has read their commits and sought to the replay point
        # (``seek`` and ``committed`` are blocking calls, refused on this thread).
        self.hold(assigned)
        self.assigned({(tp.topic, tp.partition) for tp in assigned})

    async def on_partitions_lost(self, lost: set[KafkaPartition]) -> None:
        # The group has moved on without us: a commit would be refused, and the next owner
        # rebuilds from the last one.
        self.revoked({(tp.topic, tp.partition) for tp in lost})


class KafkaSource:
    def __init__(self, config: KafkaConfig, topics: list[str], max_poll_records: int = 2000):
        # Partitions assigned but not yet sought to their replay point; topics the daemon
        # paused (back-pressure), which newly assigned partitions join; restart marks read.
        self._awaiting: set[KafkaPartition] = set()
        self._paused_topics: set[str] = set()
        self._marks: dict[TopicPartition, int] = {}
        # Per assigned partition: its position, since when, and whether it was waiting to be
        # read (behind the log end, not paused, not held) — refreshed by ``lag``.
        self._progress: dict[KafkaPartition, tuple[int, float, bool]] = {}
        self._settle: SettleCallback | None = None
        # True while the loop thread waits in the consumer (poll, close): only then may a
        # rebalance callback read the loop's state.
        self._loop_waiting = False
        with refused_connections(config):
            self._connect(config, topics, max_poll_records)
        self._connected = True
        self._last_error = 0.0

    def _connect(self, config: KafkaConfig, topics: list[str], max_poll_records: int) -> None:
        extra = {}
        if config.group_instance_id:
            extra["group_instance_id"] = config.group_instance_id
        self.consumer = KafkaConsumer(
            group_id=config.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_poll_records,
            partition_assignment_strategy=(ASSIGNORS[config.assignment],),
            # A member that joined before its topics' metadata arrived gets no partitions
            # until the next refresh: keep that window at 30 s, not the default 5 min.
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
            session_timeout_ms=config.session_timeout_ms,
            **extra,
            **client_settings(config),
        )
        # Know the topics' partitions before joining the group, so the first assignment is
        # not an empty one (seen on restarts: minutes without consuming).
        for topic in topics:
            self.consumer.partitions_for_topic(topic)
        self._listener = _Listener(self._hold, self._commit_before_moving)
        self.consumer.subscribe(topics, listener=self._listener)

    @property
    def exhausted(self) -> bool:
        return False

    def _broker_failed(self, what: str, exc: Exception) -> None:
        self._connected = False
        now = time.monotonic()
        if now - self._last_error > 10:  # one line per 10 s during an outage, not per call
            log.warning("kafka: %s failed: %s: %s", what, type(exc).__name__, exc)
            self._last_error = now

    def _hold(self, partitions: set[KafkaPartition]) -> None:
        self._awaiting |= set(partitions)
        self.consumer.pause(*partitions)

    def rewind(self, partitions: set[TopicPartition]) -> None:
        """Read ``partitions`` again from their last commit, as if newly assigned: held until
        the commit is read and the consumer sought back to its replay point (an aborted
        alert transaction). Safe from the rebalance listener's thread, as ``_hold`` is."""
        self._hold({KafkaPartition(*tp) for tp in partitions} & self.consumer.assignment())

    def _seek_to_replay_points(self) -> None:
        """For each partition awaiting it: read its commit, seek back to ``replay_from``,
        then let it flow (unless its topic is paused). A partition whose commit cannot be
        read stays held and is tried again at the next poll: nothing is read past a replay
        point that is not known."""
        owned = self.consumer.assignment()
        for tp in list(self._awaiting):
            if tp not in owned:
                self._awaiting.discard(tp)
                continue
            try:
                committed = self.consumer.committed(tp, metadata=True, timeout_ms=CALL_TIMEOUT_MS)
            except KafkaError as exc:
                self._broker_failed(f"reading the commit of {tp.topic}/{tp.partition}", exc)
                return
            meta = _metadata(committed)
            self._marks[(tp.topic, tp.partition)] = int(meta.get("scored_through", -1))
            replay_from = meta.get("replay_from")
            # Where a new owner starts; said explicitly, because a rewound partition's
            # consumer is elsewhere already.
            if isinstance(replay_from, int) and replay_from >= 0:
                self.consumer.seek(tp, replay_from)
            elif committed is not None:
                self.consumer.seek(tp, committed.offset)
            else:
                self.consumer.seek_to_beginning(tp)  # auto_offset_reset="earliest"
            self._awaiting.discard(tp)
            if tp.topic not in self._paused_topics:
                self.consumer.resume(tp)

    def poll(self, timeout_ms: int) -> list[Message]:
        if self._awaiting:
            self._seek_to_replay_points()
        release_parked_records(self.consumer)
        try:
            self._loop_waiting = True
            records = self.consumer.poll(timeout_ms=timeout_ms)
            if records:
                for tp, fresh in self.consumer.poll(timeout_ms=FRESH_FETCH_MS).items():
                    records.setdefault(tp, []).extend(fresh)
        except KafkaError as exc:
            self._broker_failed("poll", exc)
            time.sleep(timeout_ms / 1000)
            return []
        finally:
            self._loop_waiting = False
        messages = [
            Message(r.topic, r.partition, r.offset, r.key, r.value or b"", r.timestamp)
            for tp, batch in records.items()
            if tp not in self._awaiting  # fetched before a rewind: read again after the seek
            for r in batch
        ]
        if messages:
            self._connected = True
        return messages

    def assignment(self) -> set[TopicPartition]:
        return {(tp.topic, tp.partition) for tp in self.consumer.assignment()}

    def restart_mark(self, partition: TopicPartition) -> int:
        """``scored_through`` from the committed metadata; -1 when there is none. If the
        broker cannot say, -1 too: windows are then re-scored (duplicate alert ids), never
        lost."""
        if partition in self._marks:
            return self._marks.pop(partition)
        for attempt in range(3):
            try:
                committed = self.consumer.committed(
                    KafkaPartition(*partition), metadata=True, timeout_ms=CALL_TIMEOUT_MS
                )
                break
            except KafkaError as exc:
                self._broker_failed(f"reading the commit of {partition}", exc)
                time.sleep(0.5 * 2**attempt)
        else:
            return -1
        return int(_metadata(committed).get("scored_through", -1))

    def commit(self, positions: dict[TopicPartition, Position]) -> None:
        payload = _offsets(positions)
        if payload:
            self.consumer.commit(payload, timeout_ms=COMMIT_TIMEOUT_MS)
            self._connected = True

    def transaction_offsets(
        self, positions: dict[TopicPartition, Position]
    ) -> dict[KafkaPartition, OffsetAndMetadata]:
        """What a transaction commits for ``positions`` (``alerts.delivery: exactly_once``)."""
        return _offsets(positions)

    def committed_offsets(
        self, partitions: set[TopicPartition]
    ) -> dict[KafkaPartition, OffsetAndMetadata]:
        """The group's committed offsets of ``partitions``, shaped as
        :meth:`transaction_offsets` gives them (to tell whether a transaction went through)."""
        committed = {}
        for topic, partition in sorted(partitions):
            key = KafkaPartition(topic, partition)
            found = self.consumer.committed(key, metadata=True, timeout_ms=CALL_TIMEOUT_MS)
            if found is not None:
                committed[key] = OffsetAndMetadata(found.offset, found.metadata, -1)
        return committed

    def group_metadata(self) -> Any:
        """This member's generation, which fences the transactions of a replaced member."""
        return self.consumer.group_metadata()

    async def _commit_before_moving(self, partitions: set[TopicPartition]) -> None:
        """Commit ``partitions`` as the loop left them, before the group hands them to
        another member: what was scored and delivered here is then not re-scored (nor
        re-alerted) there. Failing that, the next owner rebuilds from the last periodic
        commit, as after a crash."""
        if self._settle is None or not self._loop_waiting:
            return
        positions = self._settle(partitions)
        if not positions:
            return
        try:
            await self.consumer.commit_async(_offsets(positions))
        except KafkaError as exc:
            log.warning(
                "kafka: committing %s before handing them over failed (%s: %s); their next "
                "owner rebuilds from the last commit",
                sorted(partitions),
                type(exc).__name__,
                exc,
            )
            return
        log.info("kafka: committed %s before handing them over", sorted(positions))

    def on_rebalance(
        self,
        revoked: PartitionsCallback,
        assigned: PartitionsCallback,
        settle: SettleCallback | None = None,
    ) -> None:
        self._listener.revoked = revoked
        self._listener.assigned = assigned
        self._settle = settle

    def pause(self, partitions: set[TopicPartition]) -> None:
        """Stop fetching ``partitions``; partitions of their topics assigned later (a
        rebalance) start paused too, until :meth:`resume`."""
        self._paused_topics |= {topic for topic, _ in partitions}
        owned = self.assignment()
        self.consumer.pause(*(KafkaPartition(*tp) for tp in partitions if tp in owned))

    def resume(self, partitions: set[TopicPartition]) -> None:
        self._paused_topics -= {topic for topic, _ in partitions}
        flowing = [KafkaPartition(*tp) for tp in partitions]
        self.consumer.resume(*(tp for tp in flowing if tp not in self._awaiting))

    def lag(self) -> dict[TopicPartition, int]:
        """Messages behind the log end, per assigned partition ({} if the broker is away)."""
        assigned = list(self.consumer.assignment())
        if not assigned:
            self._progress = {}
            return {}
        try:
            ends = self.consumer.end_offsets(assigned, timeout_ms=CALL_TIMEOUT_MS)
            positions = {
                tp: int(self.consumer.position(tp, timeout_ms=CALL_TIMEOUT_MS))
                for tp in assigned
                if tp in ends
            }
        except (KafkaError, KeyError, ValueError) as exc:
            self._broker_failed("reading end offsets", exc)
            self._progress = {}  # an outage is not a stall: count again once it answers
            return {}
        self._connected = True
        self._note_progress(positions, {tp: int(end) for tp, end in ends.items()})
        return {
            (tp.topic, tp.partition): max(ends[tp] - position, 0)
            for tp, position in positions.items()
        }

    def _note_progress(
        self, positions: dict[KafkaPartition, int], ends: dict[KafkaPartition, int]
    ) -> None:
        now = time.monotonic()
        held = set(self.consumer.paused()) | self._awaiting
        progress = {}
        for tp, position in positions.items():
            waiting = position < ends[tp] and tp not in held
            before = self._progress.get(tp)
            if waiting and before is not None and before[2] and before[0] == position:
                progress[tp] = before
            else:
                progress[tp] = (position, now, waiting)
        self._progress = progress

    def stalled(self) -> dict[TopicPartition, float]:
        """Per assigned partition, the seconds it has waited to be read without its position
        moving (0 while it is read, caught up, paused or held), as of the last :meth:`lag`.
        A partition the broker has records for and the client does not fetch shows here."""
        now = time.monotonic()
        return {
            (tp.topic, tp.partition): (now - since) if waiting else 0.0
            for tp, (_, since, waiting) in self._progress.items()
        }

    def connected(self) -> bool:
        return self._connected

    def clock_ms(self) -> int:
        return wall_clock_ms()

    def close(self) -> None:
        try:
            self._loop_waiting = True
            self.consumer.close(autocommit=False)
        except KafkaError as exc:
            log.warning("kafka: closing the consumer failed: %s", exc)
        finally:
            self._loop_waiting = False


def _offsets(positions: dict[TopicPartition, Position]) -> dict[KafkaPartition, OffsetAndMetadata]:
    """The consumed offset, with the replay point and restart mark in its metadata."""
    return {
        KafkaPartition(topic, partition): OffsetAndMetadata(
            p.consumed,
            json.dumps({"replay_from": p.replay_from, "scored_through": p.scored_through}),
            -1,
        )
        for (topic, partition), p in positions.items()
    }


def _metadata(committed: OffsetAndMetadata | None) -> dict[str, Any]:
    """The commit's metadata (a JSON object), or {} for none or a foreign one."""
    if committed is None or not committed.metadata:
        return {}
    try:
        meta = json.loads(committed.metadata)
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}
