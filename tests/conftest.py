"""Shared fixtures. The Kafka broker is real: ``KAFKA_BOOTSTRAP_SERVERS`` if set, else a
testcontainers broker where Docker answers, else the project's local jar broker."""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from streamdet.detectors import (
    Seq2SeqDetector,
)
from tests.helpers import make_series

ROOT = Path(__file__).resolve().parents[1]


def _load_script(name: str):
    sys.path.insert(0, str(ROOT / "scripts"))  # local_registry imports local_kafka
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_local_kafka():
    return _load_script("local_kafka")


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real, running Kafka broker for the whole session."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    local_kafka = _load_local_kafka()
    run_dir = tmp_path_factory.mktemp("kafka")
    bootstrap, _ = local_kafka.start(run_dir)
    try:
        yield bootstrap
    finally:
        local_kafka.stop(run_dir)


REGISTRY_USER, REGISTRY_PASSWORD = "streamdet", "registry-secret"


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real schema registry (Apicurio Registry's Confluent-compatible API) with basic auth:
    ``{"url", "username", "password", "run_dir"}``. ``SCHEMA_REGISTRY_URL`` (plus
    ``SCHEMA_REGISTRY_USER`` and ``SCHEMA_REGISTRY_PASSWORD``) uses one already running."""
    if os.environ.get("SCHEMA_REGISTRY_URL"):
        yield {
            "url": os.environ["SCHEMA_REGISTRY_URL"],
            "username": os.environ.get("SCHEMA_REGISTRY_USER", ""),
            "password": os.environ.get("SCHEMA_REGISTRY_PASSWORD", ""),
            "run_dir": "",
        }
        return
    local_registry = _load_script("local_registry")
    run_dir = tmp_path_factory.mktemp("registry")
    url = local_registry.start(run_dir, REGISTRY_USER, REGISTRY_PASSWORD)
    try:
        yield {
            "url": url,
            "username": REGISTRY_USER,
            "password": REGISTRY_PASSWORD,
            "run_dir": str(run_dir),
        }
    finally:
        local_registry.stop(run_dir)


@pytest.fixture
def new_topic(kafka_bootstrap: str) -> Callable[..., str]:
    """Factory: create a uniquely named topic and return its name."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    created: list[str] = []

    def make(prefix: str = "t", partitions: int = 1) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        admin.create_topics([NewTopic(name, partitions, 1)])
        created.append(name)
        return name

    yield make
    admin.close()


@pytest.fixture
def synthetic_series() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """Factory: a seasonal multi-feature series with labelled injected anomalies."""
    return make_series


@pytest.fixture
def python_exe() -> str:
    return sys.executable


@pytest.fixture(scope="session")
def saved_models(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[Path, np.ndarray]]:
    """A tiny fitted and saved Seq2Seq model (feature-wise threshold), with its series.
    (Every registered detector's save/load is covered by test_detector_contract.py.)"""
    root = tmp_path_factory.mktemp("models")
    series, _ = make_series(n=400, n_features=2, seed=7)
    seq2seq = Seq2SeqDetector(seq_len=12, latent_dim=8, epochs=1, stride=4, seed=0)
    seq2seq.fit(series, verbose=False)
    seq2seq.infer_threshold(series, threshold_perc=np.array([97, 97]))
    return {"seq2seq": (seq2seq.save(root / "seq2seq"), series)}
