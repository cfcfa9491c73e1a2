"""Graceful rebalances on a real broker: a member joining takes partitions over from one
that has alerted on them, in both delivery modes. Every process stopped here was started
here, and is stopped by its pid."""

from __future__ import annotations

import pytest

from tests.daemon.test_faults import daemon_config, produce, stream, trained_model
from tests.daemon.test_outages import SENSORS, all_caught, false_alarms
from tests.daemon_helpers import AlertReader, start_daemon, stop_daemon, wait_until_ready
from tests.helpers import free_port

pytestmark = pytest.mark.kafka
__all__ = ["trained_model"]  # the module-scoped fixture, shared with test_faults


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_a_graceful_rebalance_commits_what_it_hands_over_and_re_alerts_nothing(
    kafka_bootstrap, new_topic, tmp_path, trained_model, delivery
):
    """A second member joins while the first owns every partition and has alerted the
    early spikes. Periodic commits are an hour apart, so without a commit as the partitions
    are handed over the newcomer would re-read them from the start and alert those spikes
    again. Exactly-once: the hand-over commits the open transaction with every partition's
    offsets, and the subscriber reads committed alerts only."""
    topic = new_topic("handover", partitions=4)
    alerts_topic, dlq = new_topic("alerts"), new_topic("dlq")
    early, late = {300}, {600}
    produce(kafka_bootstrap, topic, stream(range(400), early, sensors=SENSORS))
    daemons, logs = [], []
    isolation = "read_committed" if delivery == "exactly_once" else "read_uncommitted"
    reader = AlertReader(kafka_bootstrap, alerts_topic, isolation)

    def start(member: str) -> int:
        folder, port = tmp_path / member, free_port()
        config = daemon_config(
            folder,
            kafka_bootstrap,
            topic,
            trained_model,
            port,
            alerts=alerts_topic,
            dlq=dlq,
            # Exactly-once alerts are seen at each commit: there, commits a second apart.
            commit_interval_ms=3_600_000 if delivery == "at_least_once" else 1_000,
            delivery={"delivery": delivery, "transactional_id": f"{topic}-{member}"},
        )
        logs.append(folder / "daemon.log")
        daemons.append(start_daemon(config, logs[-1]))
        return port

    try:
        start("a")
        reader.wait_for(lambda got: all_caught(got, early), 180, daemons[0], logs[0])
        port_b = start("b")
        wait_until_ready(port_b, daemons[1], logs[1], 120)  # the hand-over is done
        produce(kafka_bootstrap, topic, stream(range(400, 700), late, seed=1, sensors=SENSORS))
        reader.wait_for(lambda got: all_caught(got, early | late), 240, daemons[0], logs[0])
        for daemon in daemons:
            stop_daemon(daemon)
    finally:
        for daemon in daemons:
            if daemon.poll() is None:
                daemon.kill()
        reader.close()
    ids = [alert["alert_id"] for alert in reader.alerts]
    assert len(ids) - len(set(ids)) == 0, "alerts raised twice"
    if delivery == "at_least_once":
        lines = logs[0].read_text().splitlines()
        handed_over = [line for line in lines if "handing them over" in line]
        assert handed_over and "failed" not in handed_over[0], handed_over
    assert false_alarms(reader.alerts, early | late) == []
    print(
        f"RELIABILITY graceful rebalance ({delivery}): {700 * len(SENSORS)} events over 4 "
        f"partitions, a second member joined after {len(early) * len(SENSORS)} spike/sensor "
        f"pairs were alerted; {len(ids)} alerts, 0 raised twice, 0 lost"
    )
