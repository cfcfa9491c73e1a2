"""Adversarial VAE: tiny classifiers, real FGSM attacks, detection and correction."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from streamdet.core.errors import InvalidInputError, ModelLoadError, NotFittedError
from streamdet.detectors import AdversarialVAEDetector, load_detector
from streamdet.evaluation.attacks import fgsm
from streamdet.evaluation.metrics import roc_auc
from tests.helpers import run_cli

DIMS = 16
_rng = np.random.default_rng(5)
PLANE = np.linalg.qr(_rng.normal(size=(DIMS, 2)))[0]  # orthonormal basis of the data's plane
_off = _rng.normal(size=DIMS)
OFF_PLANE = (_off - PLANE @ (PLANE.T @ _off)) / np.linalg.norm(_off - PLANE @ (PLANE.T @ _off))
FEATURES = [f"f{i}" for i in range(DIMS)]


def manifold_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows on a 2-D plane in 16-D (plus a little noise); the class is the side of a line
    in the plane."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    x = z @ PLANE.T + 0.01 * rng.normal(size=(n, DIMS))
    return x.astype(np.float32), (z[:, 0] + 0.5 * z[:, 1] > 0).astype(np.int64)


def vulnerable_classifier(path: Path) -> keras.Model:
    """A linear classifier that is right on the plane but also leans on a direction the data
    never varies in: the weakness gradient attacks find in image classifiers, built in."""
    direction = 3.0 * (PLANE @ np.array([1.0, 0.5]) + 2.0 * OFF_PLANE)
    model = keras.Sequential([keras.Input((DIMS,)), keras.layers.Dense(2, activation="softmax")])
    model.layers[0].set_weights([np.stack([-direction, direction], axis=1), np.zeros(2)])
    model.save(path)
    return model


def attack_rows(model: keras.Model, x: np.ndarray, y: np.ndarray, eps: float) -> np.ndarray:
    """FGSM on rows (the attacks module clips to [0, 1], so rows are mapped into it)."""
    low, span = x.min() - eps, x.max() - x.min() + 2 * eps

    def logits(scaled: tf.Tensor) -> tf.Tensor:
        return tf.math.log(model(scaled * span + low) + 1e-7)

    return fgsm(logits, (x - low) / span, y, eps / span) * span + low


@pytest.fixture(scope="module")
def row_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("classifier") / "rows.keras"
    vulnerable_classifier(path)
    return path


def test_adversarial_vae_flags_and_corrects_fgsm_rows(row_classifier, tmp_path):
    classifier = keras.saving.load_model(row_classifier, safe_mode=True)
    train, _ = manifold_rows(2000, 1)
    test, labels = manifold_rows(300, 2)
    attacked = attack_rows(classifier, test, labels, eps=0.2)
    assert (classifier.predict(test, verbose=0).argmax(-1) == labels).mean() > 0.95
    attacked_accuracy = (classifier.predict(attacked, verbose=0).argmax(-1) == labels).mean()
    assert attacked_accuracy < 0.3, "the attack itself must work for the test to mean anything"

    detector = AdversarialVAEDetector.tuned(
        classifier=str(row_classifier), latent_dim=2, epochs=30, batch_size=64, seed=0
    )
    summary = detector.fit(train, progress=lambda line: None)
    assert summary["classes"] == 2 and summary["training_instances"] == 2000
    detector.infer_threshold(train, threshold_perc=95)
    scores = detector.score(np.r_[test, attacked])
    assert scores.feature_score.shape == (600, DIMS)
    auc = roc_auc(np.r_[np.zeros(300), np.ones(300)], scores.instance_score)
    assert auc > 0.95, f"AUROC {auc:.3f}"

    out = detector.predict(attacked)
    assert out["meta"]["detector_type"] == "adversarial"
    assert out["meta"]["data_type"] == "tabular"
    assert out["data"]["is_adversarial"].mean() > 0.9
    # Part of each FGSM step lies in the plane and really crosses the class line, so not
    # every label is recoverable. How many are varies with the seed (0.44-0.93 over six
    # trainings); every one restored well over the attacked accuracy.
    corrected = detector.correct(attacked)["data"]["corrected"]
    assert (corrected == labels).mean() > max(0.4, attacked_accuracy + 0.1)
    clean = detector.correct(test)["data"]
    assert clean["is_adversarial"].mean() < 0.1
    assert (clean["corrected"] == labels).mean() > 0.95

    # The saved directory carries its own copy of the classifier.
    directory = detector.save(tmp_path / "model")
    row_classifier.rename(tmp_path / "moved.keras")
    try:
        same = load_detector(directory)
        np.testing.assert_allclose(
            same.score(attacked).instance_score, scores.instance_score[300:], rtol=1e-4
        )
    finally:
        (tmp_path / "moved.keras").rename(row_classifier)


def test_adversarial_vae_reports_unusable_inputs_and_classifiers(row_classifier, tmp_path):
    with pytest.raises(InvalidInputError, match=r"no classifier; pass model=.*params\.classifier"):
        AdversarialVAEDetector(epochs=1).fit(np.zeros((8, DIMS)))
    with pytest.raises(ModelLoadError, match="does not exist"):
        AdversarialVAEDetector(classifier=str(tmp_path / "none.keras")).fit(np.zeros((8, 4)))
    (tmp_path / "bad.keras").write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError, match="could not be loaded"):
        AdversarialVAEDetector(classifier=str(tmp_path / "bad.keras")).fit(np.zeros((8, 4)))
    with pytest.raises(InvalidInputError, match="does not accept instances of shape"):
        AdversarialVAEDetector(classifier=str(row_classifier), epochs=1).fit(np.zeros((8, 4)))
    with pytest.raises(NotFittedError):
        AdversarialVAEDetector(classifier=str(row_classifier)).score(np.zeros((2, DIMS)))
    with pytest.raises(InvalidInputError, match="temperature must be > 0"):
        AdversarialVAEDetector(temperature=0.0)


def test_evaluate_mnist_adversarial_command_writes_json_plots_and_table(tmp_path):
    done = run_cli(
        "evaluate",
        "mnist",
        "--task",
        "adversarial",
        "--seeds",
        "1",
        "--train-limit",
        "1500",
        "--epochs",
        "1",
        "--classifier-epochs",
        "1",
        "--n-test",
        "60",
        "--cw-iterations",
        "5",
        "--pgd-iterations",
        "5",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    assert "classifier epoch 1/1" in done.stderr and "adversarial_vae epoch 1/1" in done.stderr
    assert "cw_l2" in done.stdout and "share restored" in done.stdout
    result = json.loads((tmp_path / "mnist_adversarial.json").read_text())
    assert set(result["attacks"]) == {"fgsm_0.1", "fgsm_0.2", "fgsm_0.3", "pgd_0.3", "cw_l2"}
    for attack in result["attacks"].values():
        assert 0.0 <= attack["auroc"] <= 1.0
        assert 0.0 <= attack["accuracy_after_correction"] <= 1.0
    # FGSM at eps 0.3 changes every pixel it can by 0.3: far more than eps 0.1 does.
    fgsm = result["attacks"]
    assert fgsm["fgsm_0.3"]["mean_l2_perturbation"] > 2 * fgsm["fgsm_0.1"]["mean_l2_perturbation"]
    assert result["attacked_images"] == 60
    for picture in ("adversarial_roc.png", "adversarial_examples.png"):
        assert (tmp_path / picture).stat().st_size > 1000
    assert (tmp_path / "adversarial_cw_l2_confusion_scores.png").exists()
    detector = load_detector(tmp_path / "model")
    assert detector.name == "adversarial_vae" and detector.input_shape == (28, 28, 1)
