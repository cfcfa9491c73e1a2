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
    AdversarialVAEDetector,
    ImageVAEDetector,
    Seq2SeqDetector,
    VAEGMMDetector,
    VAELSTMDetector,
)
from tests.helpers import make_series
from tests.test_adversarial_vae import manifold_rows, vulnerable_classifier

ROOT = Path(__file__).resolve().parents[1]


def _load_local_kafka():
    spec = importlib.util.spec_from_file_location(
        "local_kafka", ROOT / "scripts" / "local_kafka.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    """One tiny fitted and saved model of every registered detector, with data it scores."""
    root = tmp_path_factory.mktemp("models")
    series, _ = make_series(n=400, n_features=2, seed=7)
    seq2seq = Seq2SeqDetector(seq_len=12, latent_dim=8, epochs=1, stride=4, seed=0)
    seq2seq.fit(series)
    seq2seq.infer_threshold(series, threshold_perc=np.array([97, 97]))
    vae_lstm = VAELSTMDetector(window=8, n_windows=3, epochs_vae=1, epochs_lstm=1, seed=0)
    vae_lstm.fit(series)
    vae_lstm.infer_threshold(series)
    rows = series[:, :2] + 0.1 * np.arange(len(series))[:, None] % 3
    vaegmm = VAEGMMDetector.tuned(epochs=1, samples=3, seed=0, feature_names=["a", "b"])
    vaegmm.fit(rows)
    vaegmm.infer_threshold(rows)
    clean, _ = manifold_rows(300, 0)
    adversarial = AdversarialVAEDetector.tuned(
        classifier=vulnerable_classifier(root / "classifier.keras"), epochs=1, samples=3, seed=0
    )
    adversarial.fit(clean)
    adversarial.infer_threshold(clean)
    images = np.random.default_rng(3).uniform(0, 1, (200, 8, 8, 1)).astype(np.float32)
    image_vae = ImageVAEDetector(epochs=1, filters=4, latent_dim=4, batch_size=32, seed=0)
    image_vae.fit(images)
    image_vae.infer_threshold(images)
    return {
        "image_vae": (image_vae.save(root / "image_vae"), images),
        "adversarial_vae": (adversarial.save(root / "adversarial_vae"), clean),
        "seq2seq": (seq2seq.save(root / "seq2seq"), series),
        "vae_lstm": (vae_lstm.save(root / "vae_lstm"), series),
        "vaegmm": (vaegmm.save(root / "vaegmm"), rows),
    }
