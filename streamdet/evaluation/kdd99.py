"""KDD Cup 1999 (10 % file) under two published protocols.

``alibi``: alibi-detect's VAEGMM example. The 18 continuous features, attacks as outliers;
train on normal rows, set the threshold on 1,000 rows with 5 % outliers (percentile 95),
test on 1,000 rows with 10 % outliers. The threshold and test rows are drawn first and never
trained on.

``dagmm``: the DAGMM paper's setting. All 41 features with the 3 categorical ones one-hot,
'normal.' (about 20 %) as the anomaly class; a random 50/50 split; train on the training
half's attack rows only; flag the top 20 % of the test half by energy; average over seeds.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamdet.core.progress import ProgressFn, stderr_progress
from streamdet.detectors import OutlierVAEGMM, VAEGMMDetector
from streamdet.detectors.keras_base import keras, tf
from streamdet.evaluation import plots
from streamdet.evaluation.data import dataset_dir, outlier_batch
from streamdet.evaluation.metrics import average_precision, roc_auc
from streamdet.evaluation.thresholding import (
    compare_policies,
    described_rules,
    headline,
    threshold_rules,
)

ALIBI_FEATURES = (
    "srv_count",
    "serror_rate",
    "srv_serror_rate",
    "rerror_rate",
    "srv_rerror_rate",
    "same_srv_rate",
    "diff_srv_rate",
    "srv_diff_host_rate",
    "dst_host_count",
    "dst_host_srv_count",
    "dst_host_same_srv_rate",
    "dst_host_diff_srv_rate",
    "dst_host_same_src_port_rate",
    "dst_host_srv_diff_host_rate",
    "dst_host_serror_rate",
    "dst_host_srv_serror_rate",
    "dst_host_rerror_rate",
    "dst_host_srv_rerror_rate",
)
CATEGORICAL = ("protocol_type", "service", "flag")
PUBLISHED = {
    "alibi": {"source": "alibi-detect VAEGMM KDD example", "f1": 0.9463},
    "dagmm": {
        "source": "DAGMM (Zong et al., ICLR 2018), KDDCUP",
        "precision": 0.9297,
        "recall": 0.9442,
        "f1": 0.9369,
    },
}


def load_kdd(folder: Path) -> tuple[list[str], list[list[str]], np.ndarray]:
    """Column names, raw rows (strings) and labels (without the trailing dot)."""
    names = []
    for line in (folder / "kddcup.names").read_text().splitlines()[1:]:
        if ":" in line:
            names.append(line.split(":")[0].strip())
    rows, labels = [], []
    with gzip.open(folder / "kddcup.data_10_percent.gz", "rt") as handle:
        for line in handle:
            parts = line.strip().split(",")
            if len(parts) == len(names) + 1:
                rows.append(parts[:-1])
                labels.append(parts[-1].rstrip("."))
    return names, rows, np.asarray(labels)


def alibi_matrix(names: list[str], rows: list[list[str]]) -> np.ndarray:
    index = [names.index(f) for f in ALIBI_FEATURES]
    return np.asarray([[float(r[i]) for i in index] for r in rows], dtype=np.float32)


def dagmm_matrix(names: list[str], rows: list[list[str]]) -> np.ndarray:
    """41 features: numeric as they are, categorical one-hot, then min-max scaled to [0, 1]."""
    columns = []
    for i, name in enumerate(names):
        values = [r[i] for r in rows]
        if name in CATEGORICAL:
            levels = sorted(set(values))
            lookup = {v: k for k, v in enumerate(levels)}
            onehot = np.zeros((len(rows), len(levels)), dtype=np.float32)
            onehot[np.arange(len(rows)), [lookup[v] for v in values]] = 1.0
            columns.append(onehot)
        else:
            columns.append(np.asarray(values, dtype=np.float32)[:, None])
    data = np.concatenate(columns, axis=1)
    span = data.max(axis=0) - data.min(axis=0)
    return (data - data.min(axis=0)) / np.where(span > 0, span, 1.0)


def _dense_stack(
    inputs: int,
    units: tuple[int, ...],
    activation: Any,
    output: int | None = None,
    last: Any = None,
) -> keras.Sequential:
    """``Dense`` layers of ``units`` with ``activation``, then one of ``output`` units with
    ``last`` (the way alibi-detect's pages and examples write their networks)."""
    layers = [keras.layers.Dense(n, activation=activation) for n in units]
    if output is not None:
        layers.append(keras.layers.Dense(output, activation=last))
    return tf.keras.Sequential([keras.Input((inputs,)), *layers])


def _alibi_vaegmm(
    n_features: int,
    seed: int,
    activation: Any,
    encoder_units: tuple[int, ...],
    latent_dim: int,
    code_layer: bool,
) -> OutlierVAEGMM:
    """OutlierVAEGMM with alibi-detect's network layout: the decoder mirrors the encoder's
    units, the density net has 10 units and 2 components, 10 samples."""
    n_gmm = 2
    encoder_net = _dense_stack(
        n_features, encoder_units, activation, latent_dim if code_layer else None
    )
    decoder_net = _dense_stack(latent_dim, encoder_units[::-1], activation, n_features)
    gmm_density_net = _dense_stack(latent_dim + 2, (10,), activation, n_gmm, tf.nn.softmax)
    return OutlierVAEGMM(
        threshold=None,
        encoder_net=encoder_net,
        decoder_net=decoder_net,
        gmm_density_net=gmm_density_net,
        latent_dim=latent_dim,
        n_gmm=n_gmm,
        samples=10,
        seed=seed,
        feature_names=list(ALIBI_FEATURES),
    )


def page_vaegmm(n_features: int, seed: int) -> OutlierVAEGMM:
    """OutlierVAEGMM exactly as alibi-detect's page builds it (encoder 60-30-10-4 and
    decoder 10-30-60 with tanh, latent_dim 4, 2 components, 10 samples; its loss weights
    and Adam at 1e-4 are the class's defaults)."""
    return _alibi_vaegmm(n_features, seed, tf.nn.tanh, (60, 30, 10), 4, code_layer=True)


def example_vaegmm(n_features: int, seed: int) -> OutlierVAEGMM:
    """OutlierVAEGMM as alibi-detect's KDD Cup example notebook (``od_aegmm_kddcup``)
    trains it for the F1 it publishes: encoder 20-15-7 and decoder 7-15-20 with ReLU (no
    code layer of its own), latent 2, 2 components, a density net of 10 ReLU units, 10
    samples (the relative Euclidean distance and cosine similarity features, streamdet's
    default too)."""
    return _alibi_vaegmm(n_features, seed, tf.nn.relu, (20, 15, 7), 2, code_layer=False)


# The example draws its 400,000 normal training rows with replacement (alibi-detect's
# create_outlier_batch does when asked for more rows than the class has: 10 % KDD has
# ~97,000 normal rows).
EXAMPLE_TRAINING_ROWS = 400_000


def _alibi(
    names,
    rows,
    labels,
    out_dir,
    epochs,
    seed,
    progress,
    page_defaults,
    example_settings,
    threshold_policy,
    threshold_params,
) -> dict[str, Any]:
    X = alibi_matrix(names, rows)
    y = (labels != "normal").astype(np.int8)
    rng = np.random.default_rng(seed)
    X_thr, _ = outlier_batch(X, y, 1000, 5, rng)
    X_test, y_test = outlier_batch(X, y, 1000, 10, rng)
    # Never train on a row of the threshold or test batches.
    held = {r.tobytes() for r in np.r_[X_thr, X_test]}
    train = np.asarray([r for r in X[y == 0] if r.tobytes() not in held])
    progress(f"kdd99 alibi: {len(train)} normal training rows, 18 features")
    if page_defaults:
        # The page's usage: fit(X_train, epochs=10, batch_size=1024), defaults otherwise.
        detector = page_vaegmm(X.shape[1], seed)
        training = detector.fit(train, epochs=10, batch_size=1024, verbose=False, progress=progress)
    elif example_settings:
        # The example's training: 400,000 rows drawn with replacement, standardised with
        # their own mean and std (OutlierVAEGMM's default), 50 epochs of 1,024 rows, and an
        # ELBO whose likelihood scale is 0.0025 (the page's default is 0.05).
        resampled = train[rng.choice(len(train), EXAMPLE_TRAINING_ROWS, replace=True)]
        progress(f"kdd99 alibi example: {len(resampled)} rows drawn with replacement")
        detector = example_vaegmm(X.shape[1], seed)
        training = detector.fit(
            resampled,
            epochs=50,
            batch_size=1024,
            cov_elbo=dict(sim=0.0025),
            verbose=False,
            progress=progress,
        )
    else:
        detector = VAEGMMDetector.tuned(
            latent_dim=1,
            n_gmm=2,
            encoder_units=(60, 30),
            decoder_units=(30, 60),
            samples=10,
            epochs=epochs,
            batch_size=256,
            seed=seed,
            feature_names=list(ALIBI_FEATURES),
        )
        training = detector.fit(train, progress=progress)
    detector.infer_threshold(X_thr, threshold_perc=95)
    prediction = detector.predict(X_test)["data"]
    scores = prediction["instance_score"]
    threshold = float(detector.threshold)
    policies, _ = compare_policies(
        y_test,
        scores,
        detector.score(train).instance_score,
        prediction["is_outlier"],
        rules=threshold_rules(threshold_params),
    )
    detector.save(out_dir / "model_alibi")
    plots.roc_pr_curves(out_dir / "kdd99_alibi_roc_pr.png", "KDD99 VAEGMM (alibi)", y_test, scores)
    plots.confusion_and_histogram(
        out_dir / "kdd99_alibi_confusion_scores.png",
        "KDD99 VAEGMM (alibi)",
        y_test,
        scores,
        threshold,
    )
    return {
        "protocol": "alibi",
        "training": training,
        "threshold": threshold,
        "threshold_policy": threshold_policy,
        "threshold_rules": described_rules(threshold_params),
        "policies": policies,
        "metrics": {
            **headline(policies, threshold_policy),
            "auc": roc_auc(y_test, scores),
            "average_precision": average_precision(y_test, scores),
        },
        "published": PUBLISHED["alibi"],
    }


def _dagmm(
    names, rows, labels, out_dir, epochs, seed, progress, threshold_policy, threshold_params
) -> dict[str, Any]:
    X = dagmm_matrix(names, rows)
    y = (labels == "normal").astype(np.int8)  # the minority 'normal' class is the anomaly
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(X))
    train_idx, test_idx = order[: len(X) // 2], order[len(X) // 2 :]
    train = X[train_idx][y[train_idx] == 0]
    progress(
        f"kdd99 dagmm seed {seed}: {len(train)} attack rows to train on, {X.shape[1]} features"
    )
    detector = VAEGMMDetector.tuned(
        latent_dim=1,
        n_gmm=4,
        encoder_units=(60, 30, 10),
        decoder_units=(10, 30, 60),
        samples=5,
        epochs=epochs,
        batch_size=1024,
        normalise=False,
        seed=seed,
    )
    training = detector.fit(train, progress=progress)
    scores = detector.score(X[test_idx]).instance_score
    # The paper's rule: the top 20 % of test scores, the share of anomalies it knows.
    threshold = float(np.percentile(scores, 80))
    y_test = y[test_idx]
    policies, _ = compare_policies(
        y_test,
        scores,
        detector.score(train).instance_score,
        scores > threshold,
        rules=threshold_rules(threshold_params),
    )
    plots.roc_pr_curves(out_dir / "kdd99_dagmm_roc_pr.png", "KDD99 VAEGMM (DAGMM)", y_test, scores)
    plots.confusion_and_histogram(
        out_dir / "kdd99_dagmm_confusion_scores.png",
        "KDD99 VAEGMM (DAGMM)",
        y_test,
        scores,
        threshold,
    )
    return {
        "protocol": "dagmm",
        "training": training,
        "threshold": threshold,
        "threshold_policy": threshold_policy,
        "threshold_rules": described_rules(threshold_params),
        "policies": policies,
        "metrics": {
            **headline(policies, threshold_policy),
            "auc": roc_auc(y_test, scores),
            "average_precision": average_precision(y_test, scores),
        },
        "published": PUBLISHED["dagmm"],
    }


def run(
    data: str | Path | None,
    out: str | Path,
    *,
    protocol: str = "alibi",
    page_defaults: bool = False,
    example_settings: bool = False,
    epochs: int = 30,
    threshold_policy: str = "protocol",
    threshold_params: dict[str, Any] | None = None,
    seed: int = 0,
    progress: ProgressFn = stderr_progress,
) -> dict[str, Any]:
    """One seed of a protocol; ``kdd99_<protocol>.json`` and plots into ``out``.

    Every threshold policy is reported under ``policies`` (the label-free ones calibrated
    on the training rows' scores); ``threshold_policy`` picks the headline ``metrics``.
    """
    folder = dataset_dir(data, "kddcup99")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    names, rows, labels = load_kdd(folder)
    progress(f"kdd99: {len(rows)} rows, {int((labels == 'normal').sum())} normal")
    if protocol == "alibi":
        result = _alibi(
            names,
            rows,
            labels,
            out_dir,
            epochs,
            seed,
            progress,
            page_defaults,
            example_settings,
            threshold_policy,
            threshold_params,
        )
        result["page_defaults"] = page_defaults
        result["example_settings"] = example_settings
    else:
        result = _dagmm(
            names, rows, labels, out_dir, epochs, seed, progress, threshold_policy, threshold_params
        )
    result["seed"] = seed
    result["seconds"] = round(time.perf_counter() - started, 1)
    (out_dir / f"kdd99_{protocol}.json").write_text(json.dumps(result, indent=2, default=float))
    progress(f"kdd99: wrote {out_dir / f'kdd99_{protocol}.json'} and plots")
    return result
