from __future__ import annotations

import json

import numpy as np
import pytest

from streamdet.core.errors import InvalidInputError, NotFittedError
from streamdet.detectors import ImageVAEDetector, load_detector
from streamdet.evaluation.data import data_root
from streamdet.evaluation.metrics import roc_auc
from streamdet.evaluation.mnist import load_mnist, threshold_for_recall
from tests.helpers import run_cli


def strokes(n: int, seed: int, vertical: bool) -> np.ndarray:
    """Tiny 12x12 images: a bar at a random position, vertical or horizontal, over faint
    noise (so no two images are identical and scores do not tie at the threshold)."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 0.15, (n, 12, 12, 1)).astype(np.float32)
    for i, pos in enumerate(rng.integers(2, 10, n)):
        if vertical:
            images[i, 1:11, pos - 1 : pos + 1] = 1.0
        else:
            images[i, pos - 1 : pos + 1, 1:11] = 1.0
    return images


def test_image_vae_scores_an_unseen_shape_above_the_trained_one(tmp_path):
    detector = ImageVAEDetector(epochs=30, filters=8, batch_size=32, seed=0)
    summary = detector.fit(strokes(600, 0, vertical=True))
    assert summary["training_images"] == 600
    normal, odd = strokes(100, 1, vertical=True), strokes(20, 2, vertical=False)
    scores = detector.score(np.r_[normal, odd])
    assert scores.feature_score.shape == (120, 12, 12, 1)
    auc = roc_auc(np.r_[np.zeros(100), np.ones(20)], scores.instance_score)
    assert auc > 0.9, f"AUROC {auc:.3f}"
    detector.infer_threshold(normal, threshold_perc=99)
    assert detector.predict(odd)["data"]["is_outlier"].mean() > 0.8
    same = load_detector(detector.save(tmp_path / "m"))
    np.testing.assert_allclose(
        same.score(odd).instance_score, detector.score(odd).instance_score, rtol=1e-5
    )


def test_image_vae_refuses_unscaled_or_misshapen_images():
    with pytest.raises(NotFittedError):
        ImageVAEDetector().score(np.zeros((1, 8, 8, 1)))
    with pytest.raises(InvalidInputError, match=r"scaled to \[0, 1\]"):
        ImageVAEDetector(epochs=1).fit(np.full((4, 8, 8, 1), 255.0))
    detector = ImageVAEDetector(epochs=1, filters=4)
    detector.fit(strokes(32, 0, True))
    with pytest.raises(InvalidInputError, match=r"expected instances of shape \(12, 12, 1\)"):
        detector.score(np.zeros((2, 28, 28, 1)))
    with pytest.raises(InvalidInputError, match="loss must be"):
        ImageVAEDetector(loss="l1")  # type: ignore[arg-type]


def test_mnist_files_load_and_recall_threshold_keeps_the_target():
    x_train, y_train, x_test, y_test = load_mnist(data_root() / "mnist")
    assert x_train.shape == (60000, 28, 28) and y_train.shape == (60000,)
    assert x_test.shape == (10000, 28, 28) and np.bincount(y_test)[5] == 892
    labels = np.r_[np.ones(1000), np.zeros(1000)].astype(np.int8)
    scores = np.r_[np.linspace(1, 2, 1000), np.linspace(0, 1.5, 1000)]
    threshold = threshold_for_recall(labels, scores, 0.997)
    assert (scores[labels == 1] > threshold).mean() >= 0.997


def test_evaluate_mnist_digit_holdout_command_reports_both_score_losses(tmp_path):
    done = run_cli(
        "evaluate",
        "mnist",
        "--task",
        "digit-holdout",
        "--seeds",
        "1",
        "--digit",
        "5",
        "--train-limit",
        "2000",
        "--epochs",
        "2",
        "--params",
        '{"beta": 0.0, "kl_warmup_epochs": 0}',
        "--recon-epochs",
        "1",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    assert "image_vae epoch 2/2" in done.stderr
    assert "mse score" in done.stdout and "bce score" in done.stdout
    result = json.loads((tmp_path / "mnist_digit_holdout.json").read_text())
    assert result["training"]["training_images"] == 1800  # 10 % held out for validation
    history = result["training"]["history"]
    assert len(history) == 2 and all(epoch["beta"] == 0.0 for epoch in history)
    assert all({"loss", "val_loss", "grad_norm"} <= set(epoch) for epoch in history)
    for picture in (
        "training",
        "reconstructions",
        "anomalous_digit",
        "loss_distribution",
        "confusion_scores",
    ):
        assert (tmp_path / f"mnist_holdout_{picture}.png").stat().st_size > 1000, picture
    assert result["score_loss"] == "mse"
    assert set(result["by_score_loss"]) == {"bce", "mse"}
    assert result["auroc"] == result["by_score_loss"]["mse"]["auroc"]
    point = result["operating_point"]
    assert point["recall"] >= 0.997 and 0.0 <= point["false_positive_rate"] <= 1.0
    # Any model beats chance on a held-out digit it never reconstructed.
    assert result["by_score_loss"]["bce"]["auroc"] > 0.5
    assert (tmp_path / "mnist_holdout_roc_pr.png").exists()
    saved = load_detector(tmp_path / "model")
    assert saved.params["score_loss"] == "mse" and saved.params["beta"] == 0.0
    assert saved.reconstruct(np.zeros((3, 28, 28, 1), np.float32)).shape == (3, 28, 28, 1)
