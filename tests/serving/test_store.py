"""The versioned model store on disk: atomic versions, CURRENT, rollback, pruning, locking,
and the daemon's topic model swapping versions without a restart."""

from __future__ import annotations

import json
import multiprocessing
import time

import numpy as np
import pytest

from streamdet.config import TopicConfig
from streamdet.core.errors import StreamdetError
from streamdet.serving.bundle import bundle_summary
from streamdet.serving.lifecycle import ModelLifecycle
from streamdet.serving.store import LEGACY, ModelStore


def publish(store: ModelStore, tag: str) -> str:
    with store.writing() as (version, folder):
        (folder / "metadata.json").write_text(json.dumps({"detector": "x", "tag": tag}))
    return version


def test_versions_current_history_and_rollback(tmp_path):
    store = ModelStore(tmp_path / "t", keep=3)
    assert store.current() is None and store.versions() == []
    first, second = publish(store, "a"), publish(store, "b")
    assert (first, second, store.current()) == ("v000001", "v000002", "v000002")
    assert store.rollback() == "v000001" and store.current() == "v000001"
    store.promote("v000002")
    assert store.current() == "v000002"
    assert [e["reason"] for e in store.history()] == [
        "published",
        "published",
        "rollback",
        "promoted",
    ]
    described = {info.version: info for info in store.describe()}
    assert described["v000002"].current and not described["v000001"].current
    with pytest.raises(StreamdetError, match="no version 'v000009'; stored: v000001, v000002"):
        store.promote("v000009")
    with pytest.raises(StreamdetError, match="not a version name"):
        store.promote("../../etc")


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    store = ModelStore(tmp_path / "t")
    publish(store, "a")
    with pytest.raises(RuntimeError), store.writing() as (_, folder):
        (folder / "half.keras").write_text("partial")
        raise RuntimeError("disk full")
    with pytest.raises(StreamdetError, match=r"without metadata\.json"), store.writing():
        pass
    assert store.versions() == ["v000001"] and store.current() == "v000001"
    assert [p.name for p in (tmp_path / "t" / "versions").iterdir()] == ["v000001"]


def test_pruning_keeps_the_current_version_and_the_rollback_target(tmp_path):
    store = ModelStore(tmp_path / "t", keep=2)
    for tag in "abc":
        publish(store, tag)
    assert store.versions() == ["v000002", "v000003"]
    store.promote("v000002")  # an operator went back; later trainings must not delete it
    publish(store, "d")
    publish(store, "e")
    assert store.current() == "v000005"
    assert store.rollback() == "v000004"
    assert "v000004" in store.versions() and len(store.versions()) <= 3
    with pytest.raises(StreamdetError, match="at least 2"):
        ModelStore(tmp_path / "u", keep=1)


def test_a_directory_from_before_versions_is_read_as_legacy(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "metadata.json").write_text(json.dumps({"detector": "x"}))
    store = ModelStore(tmp_path / "t")
    assert store.current() == LEGACY and store.path_of(LEGACY) == tmp_path / "t"
    assert publish(store, "new") == "v000001" and store.current() == "v000001"
    assert store.rollback() == LEGACY


def _publish_many(root: str, count: int) -> None:
    store = ModelStore(root, keep=100)
    for k in range(count):
        publish(store, f"{multiprocessing.current_process().name}-{k}")


def test_concurrent_writers_never_share_or_corrupt_a_version(tmp_path):
    root = tmp_path / "shared"
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_publish_many, args=(str(root), 10)) for _ in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    store = ModelStore(root, keep=100)
    assert store.versions() == [f"v{k:06d}" for k in range(1, 41)]
    tags = {
        json.loads((store.path_of(v) / "metadata.json").read_text())["tag"]
        for v in store.versions()
    }
    assert len(tags) == 40  # every write landed in its own version
    assert store.current() in store.versions()
    assert len(store.history()) == 40
    assert not [p for p in (root / "versions").iterdir() if p.name.startswith(".tmp")]


def tiny_topic(model_dir) -> TopicConfig:
    return TopicConfig.model_validate(
        {
            "name": "t",
            "window": {"seq_len": 8},
            "detector": {
                "name": "seq2seq",
                "params": {"latent_dim": 4, "epochs": 1},
                "model_dir": str(model_dir),
            },
        }
    )


def series(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"s": np.sin(np.arange(200) / 5)[:, None] + 0.05 * rng.normal(size=(200, 1))}


def wait_for_reload(model: ModelLifecycle) -> bool:
    model.check_store()
    deadline = time.time() + 60
    while model.loading and time.time() < deadline:
        time.sleep(0.05)
    return model.apply_reload()


def test_a_serving_model_swaps_in_new_versions_and_refuses_broken_ones(tmp_path):
    quiet = lambda message: None  # noqa: E731
    serving = ModelLifecycle(tiny_topic(tmp_path / "store"), tmp_path, 1, quiet)
    serving.train(series(0))
    assert serving.version == "v000001" and serving.ready
    first = serving.detector
    assert not wait_for_reload(serving)  # nothing new

    # Another writer (``streamdet train``, a replica) publishes a version.
    ModelLifecycle(tiny_topic(tmp_path / "store"), tmp_path, 1, quiet).train(series(1))
    assert wait_for_reload(serving)
    assert serving.version == "v000002" and serving.detector is not first
    assert serving.bundle.version == "v000002"

    # A corrupt version becomes current: refused once, the serving model stays.
    store = ModelStore(tmp_path / "store")
    with store.writing() as (_, folder):
        (folder / "metadata.json").write_text("{not json")
    assert not wait_for_reload(serving)
    assert serving.version == "v000002" and serving.load_refusals == 1
    assert not wait_for_reload(serving)  # not retried while it stays current
    assert serving.load_refusals == 1

    store.rollback()  # the operator's way back: served again within one check
    assert store.current() == "v000002" and not wait_for_reload(serving)
    store.promote("v000001")
    assert wait_for_reload(serving) and serving.version == "v000001"

    # CURRENT becomes unreadable (bytes that are no version name): reported once, counted,
    # and the serving model carries on; a readable CURRENT is followed again.
    pointer = tmp_path / "store" / "CURRENT"
    pointer.write_bytes(b"\xff\xfe\x00")
    refusals = serving.load_refusals
    assert not wait_for_reload(serving) and not wait_for_reload(serving)
    assert serving.version == "v000001" and serving.load_refusals == refusals + 1
    pointer.write_text("v000002\n")
    assert wait_for_reload(serving) and serving.version == "v000002"
    store.promote("v000001")
    assert wait_for_reload(serving)

    # A fresh process (a restart) starts from the current version.
    restarted = ModelLifecycle(tiny_topic(tmp_path / "store"), tmp_path, 1, quiet)
    assert restarted.version == "v000001" and restarted.ready
    np.testing.assert_array_equal(
        restarted.detector.score(np.zeros((3, 8, 1), np.float32)).instance_score,
        serving.detector.score(np.zeros((3, 8, 1), np.float32)).instance_score,
    )


def test_a_retrained_candidate_that_alarms_more_is_stored_but_not_promoted(tmp_path):
    quiet = lambda message: None  # noqa: E731
    config = tiny_topic(tmp_path / "store").model_dump()
    config["retrain"] = {"every_events": 100, "holdout": 0.5, "max_false_alarm_rate": 0.01}
    model = ModelLifecycle(TopicConfig.model_validate(config), tmp_path, 1, quiet)
    model.train(series(0))
    rng = np.random.default_rng(5)
    flat = 0.001 * rng.normal(size=(200, 1)).astype(np.float32)
    # Fitted on a flat stretch, judged on the usual sine: its threshold is far too tight.
    outcome = model.retrain({"s": [np.r_[flat, series(2)["s"]]]}, reason="test")
    assert outcome == "rejected" and model.outcomes["rejected"] == 1
    assert not model.apply_reload() and model.version == "v000001"
    store = ModelStore(tmp_path / "store")
    assert store.current() == "v000001" and store.versions() == ["v000001", "v000002"]
    verdict = bundle_summary(store.path_of("v000002"))["retraining"]
    assert verdict["outcome"] == "rejected" and verdict["from"] == "v000001"
    assert verdict["threshold_policy"] == "percentile"  # judged by the topic's own rule
    assert verdict["false_alarm_rate"] > max(verdict["serving_false_alarm_rate"], 0.01)


def test_stopping_cancels_a_running_retraining_at_its_next_epoch(tmp_path):
    said: list[str] = []
    config = tiny_topic(tmp_path / "store").model_dump()
    config["retrain"] = {"every_events": 100, "min_events_between": 100, "epochs": 500}
    model = ModelLifecycle(TopicConfig.model_validate(config), tmp_path, 1, said.append)
    model.train(series(0))
    for k, value in enumerate(series(3)["s"]):
        model.observe("s", k * 1000, value)
    assert model.retrain_due(drift=None) == "events"
    model.start_retraining("events")
    started = time.time()
    model.stop()
    assert time.time() - started < 30 and not model.retraining
    assert any("retraining cancelled" in line for line in said), said[-3:]
    assert model.outcomes == {"bootstrap": 1, "promoted": 0, "rejected": 0, "failed": 0}
    assert ModelStore(tmp_path / "store").versions() == ["v000001"]


def test_a_version_abandoned_mid_write_is_removed_and_history_stays_bounded(tmp_path, monkeypatch):
    """kill -9 during a write leaves a temporary folder: the next writer (holding the lock,
    so no writer is using it) removes it. history.jsonl keeps the newest changes only."""
    import streamdet.serving.store as store_module

    store = ModelStore(tmp_path / "t", keep=2)
    publish(store, "a")
    abandoned = tmp_path / "t" / "versions" / ".tmp-v000002-deadbeef"
    abandoned.mkdir()
    (abandoned / "seq2seq.keras").write_bytes(b"half a model")
    assert publish(store, "b") == "v000002" and not abandoned.exists()
    monkeypatch.setattr(store_module, "HISTORY_KEPT", 5)
    for _ in range(12):
        store.rollback()
    lines = (tmp_path / "t" / "history.jsonl").read_text().splitlines()
    assert 5 <= len(lines) <= 10 and store.rollback() in {"v000001", "v000002"}
