from __future__ import annotations

import numpy as np
import pytest

from streamdet.core.errors import ConfigError, InvalidInputError, NotFittedError
from streamdet.core.windows import sliding_windows
from streamdet.detectors import Seq2SeqDetector, VAELSTMDetector, create_detector
from streamdet.evaluation.metrics import roc_auc
from tests.helpers import make_series

ANOMALIES = (130, 300, 470, 640, 810)


def window_labels(labels: np.ndarray, seq_len: int, stride: int) -> np.ndarray:
    return sliding_windows(labels.astype(np.float32), seq_len, stride).max(axis=(1, 2)) > 0


@pytest.fixture(scope="module")
def seq2seq() -> Seq2SeqDetector:
    train, _ = make_series(n=1500, seed=1)
    detector = Seq2SeqDetector(seq_len=20, latent_dim=16, epochs=12, stride=2, seed=0)
    detector.fit(train)
    return detector


def test_seq2seq_scores_injected_anomalies_above_normal_windows(seq2seq, synthetic_series):
    test, labels = synthetic_series(n=1000, seed=2, anomalies=ANOMALIES)
    scores = seq2seq.score(sliding_windows(test, 20, 10)).instance_score
    auc = roc_auc(window_labels(labels, 20, 10), scores)
    assert auc > 0.9, f"AUROC {auc:.3f} on planted spikes/shifts/frequency changes"


def test_seq2seq_threshold_kinds_and_outlier_types(seq2seq, synthetic_series):
    normal, _ = synthetic_series(n=600, seed=3)
    seq2seq.infer_threshold(normal, threshold_perc=99)
    assert np.ndim(seq2seq.threshold) == 0
    seq2seq.infer_threshold(normal, threshold_perc=np.array([99, 99]))
    assert np.shape(seq2seq.threshold) == (2,)

    # With a 100th-percentile instance threshold nothing in the same data is flagged,
    # and at the 50th about half the windows are.
    seq2seq.infer_threshold(normal, threshold_perc=100, level="instance")
    assert seq2seq.predict(normal)["data"]["is_outlier"].sum() == 0
    seq2seq.infer_threshold(normal, threshold_perc=50, level="instance")
    flagged = seq2seq.predict(normal)["data"]["is_outlier"].mean()
    assert 0.4 < flagged < 0.6

    windows = sliding_windows(normal, 20, 20)
    feature = seq2seq.predict(windows, outlier_type="feature")
    assert feature["meta"]["outlier_type"] == "feature"
    assert feature["data"]["is_outlier"].shape == windows.shape
    assert feature["meta"]["name"] == "seq2seq"

    # outlier_perc: scoring by the worst 5 % of cells is never below scoring by all of them.
    all_cells = seq2seq.score(windows, outlier_perc=100).instance_score
    worst = seq2seq.score(windows, outlier_perc=5).instance_score
    assert np.all(worst >= all_cells - 1e-6)


def test_seq2seq_bad_input_names_the_problem(seq2seq):
    with pytest.raises(InvalidInputError, match=r"expected instances of shape \(20, 2\)"):
        seq2seq.score(np.zeros((4, 10, 2), dtype=np.float32))
    with pytest.raises(InvalidInputError, match=r"expected 2 feature\(s\).*\(n_features\); got 3"):
        seq2seq.score(np.zeros((4, 20, 3), dtype=np.float32))
    with pytest.raises(InvalidInputError, match="expected 2 feature"):
        seq2seq.score(np.zeros((100, 3), dtype=np.float32))
    bad = np.zeros((2, 20, 2), dtype=np.float32)
    bad[1, 5, 0] = np.nan
    with pytest.raises(InvalidInputError, match=r"NaN or inf \(first at \(1, 5, 0\)\)"):
        seq2seq.score(bad)
    with pytest.raises(InvalidInputError, match=r"expected windows .*or a series"):
        seq2seq.score(np.zeros((2, 2, 20, 2), dtype=np.float32))


def test_seq2seq_scores_a_series_per_row_like_alibi(seq2seq, synthetic_series):
    """(batch, n_features) is one series: one instance score and one feature score per row,
    read from consecutive windows; shorter than a window is padded with its first row."""
    series, _ = synthetic_series(n=50, seed=5)
    out = seq2seq.predict(series, outlier_type="feature")["data"]
    assert out["instance_score"].shape == (50,)
    assert out["feature_score"].shape == out["is_outlier"].shape == (50, 2)
    windows = np.stack([series[0:20], series[20:40], series[30:50]])
    per_window = seq2seq.score(windows).feature_score
    expected = np.concatenate([per_window[0], per_window[1], per_window[2][10:]])
    np.testing.assert_allclose(out["feature_score"], expected, rtol=1e-6, atol=1e-7)
    short = seq2seq.score(series[:5])
    assert short.instance_score.shape == (5,) and short.feature_score.shape == (5, 2)


def test_unfitted_detectors_refuse_clearly():
    with pytest.raises(NotFittedError, match="call fit"):
        Seq2SeqDetector(seq_len=10).score(np.zeros((1, 10, 1)))
    with pytest.raises(NotFittedError, match="call fit"):
        VAELSTMDetector(window=8, n_windows=3).predict(np.zeros(100))
    with pytest.raises(NotFittedError, match="before save"):
        Seq2SeqDetector(seq_len=10).save("/tmp/never")
    with pytest.raises(InvalidInputError, match="no seq_len"):
        Seq2SeqDetector().fit(np.zeros(100))
    allowed = (
        "allowed: adversarial_vae, ensemble, iforest, image_vae, pca, seq2seq, vae_lstm, vaegmm"
    )
    with pytest.raises(ConfigError, match=allowed):
        create_detector("lstm")


def test_vae_lstm_scores_anomalies_above_normal_sequences(synthetic_series):
    train, _ = synthetic_series(n=2000, n_features=1, seed=4)
    test, labels = synthetic_series(n=1200, n_features=1, seed=5, anomalies=ANOMALIES)
    detector = VAELSTMDetector(
        window=10,
        n_windows=4,
        epochs_vae=6,
        epochs_lstm=6,
        lstm_units=16,
        seed=0,
        learning_rate_vae=2e-3,
        learning_rate_lstm=2e-3,
    )
    summary = detector.fit(train)
    assert summary["training_sequences"] == 2000 - 40 + 1
    scores = detector.score(test).instance_score
    assert scores.shape == (1200 - 40 + 1,)
    labels_seq = window_labels(labels, 40, 1)
    auc = roc_auc(labels_seq, scores)
    assert auc > 0.8, f"AUROC {auc:.3f}"
    detector.infer_threshold(train, threshold_perc=99)
    flagged = detector.predict(test)["data"]["is_outlier"].astype(bool)
    # Alerts land mostly on anomalous sequences.
    assert labels_seq[flagged].mean() > 0.5
    with pytest.raises(InvalidInputError, match="shorter than one window"):
        detector.score(np.zeros(30))
