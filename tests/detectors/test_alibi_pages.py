"""alibi-detect's documentation snippets for OutlierSeq2Seq, OutlierVAEGMM and AdversarialVAE,
with only the import line changed (tiny data, one epoch), plus every ``fit`` option the
pages list and user networks with a custom layer surviving a fresh-process load."""

from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.keras.layers import (
    Conv2D,
    Conv2DTranspose,
    Dense,
    InputLayer,
    Reshape,
)

from streamdet.core.errors import InvalidInputError
from streamdet.detectors import AdversarialVAE, OutlierSeq2Seq, OutlierVAEGMM
from tests.detectors.custom_layers import LearnedScale, mean_abs_error

RNG = np.random.default_rng(0)


def series(n: int, n_features: int) -> np.ndarray:
    t = np.arange(n, dtype=np.float32)[:, None]
    waves = [np.sin(t / (3 + k)) for k in range(n_features)]
    return (np.hstack(waves) + 0.05 * RNG.normal(size=(n, n_features))).astype(np.float32)


def test_seq2seq_page_snippets_run_for_2d_and_3d_data():
    n_features, seq_len, latent_dim = 2, 10, 8
    threshold_net = tf.keras.Sequential(
        [
            InputLayer(input_shape=(seq_len, latent_dim)),
            Dense(6, activation=tf.nn.relu),
            Dense(6, activation=tf.nn.relu),
        ]
    )
    od = OutlierSeq2Seq(
        n_features, seq_len, threshold=None, threshold_net=threshold_net, latent_dim=latent_dim
    )
    X_train = series(120, n_features)
    od.fit(X_train, epochs=1, verbose=False)
    X = series(60, n_features)
    X[30, 0] += 5.0
    od.infer_threshold(X, threshold_perc=np.array([95, 90]))
    assert np.shape(od.threshold) == (2,)
    preds = od.predict(
        X,
        outlier_type="instance",
        outlier_perc=100,
        return_feature_score=True,
        return_instance_score=True,
    )
    assert preds["data"]["instance_score"].shape == (60,)
    assert preds["data"]["feature_score"].shape == (60, n_features)
    assert preds["data"]["is_outlier"].shape == (60,)
    feature = od.predict(X, outlier_type="feature")["data"]["is_outlier"]
    assert feature.shape == (60, n_features)
    # One threshold per feature at 95 % and 90 %: about 5 % and 10 % of the cells flagged.
    shares = feature.mean(axis=0)
    assert shares[0] <= 0.05 + 1 / 60 and shares[1] <= 0.10 + 1 / 60

    windows = np.stack([X[i : i + seq_len] for i in range(0, 50, 5)])
    by_window = od.predict(windows, outlier_type="feature", outlier_perc=75)
    assert by_window["data"]["instance_score"].shape == (10,)
    assert by_window["data"]["is_outlier"].shape == windows.shape
    assert by_window["meta"]["outlier_type"] == "feature"
    assert od.predict(windows, return_feature_score=False)["data"]["feature_score"] is None

    od.infer_threshold(windows, outlier_perc=50, threshold_perc=80, batch_size=4)
    assert np.ndim(od.threshold) == 0


def test_seq2seq_positional_arguments_follow_alibi_and_a_pretrained_model_is_reused():
    od = OutlierSeq2Seq(3, 12, latent_dim=4)
    assert od.params["n_features"] == 3 and od.params["seq_len"] == 12
    with pytest.raises(InvalidInputError, match=r"expected 3 feature\(s\)"):
        od.fit(series(40, 2), epochs=1, verbose=False)
    od.fit(series(40, 3), epochs=1, verbose=False)
    reused = OutlierSeq2Seq(3, 12, seq2seq=od.seq2seq, threshold=0.5)
    assert reused.threshold == 0.5 and reused.fitted
    assert reused.predict(series(24, 3))["data"]["is_outlier"].shape == (24,)
    with pytest.raises(InvalidInputError, match="seq_len=20, but the model has 12"):
        OutlierSeq2Seq(3, 20, seq2seq=od.seq2seq)
    with pytest.raises(InvalidInputError, match="lacks the layers"):
        OutlierSeq2Seq(seq2seq=keras.Sequential([keras.Input((4,)), Dense(2)]))


def vaegmm_networks(n_features: int, latent_dim: int, n_gmm: int) -> dict[str, keras.Model]:
    encoder_net = tf.keras.Sequential(
        [
            InputLayer(input_shape=(n_features,)),
            Dense(60, activation=tf.nn.tanh),
            Dense(30, activation=tf.nn.tanh),
            Dense(10, activation=tf.nn.tanh),
            Dense(latent_dim, activation=None),
        ]
    )
    decoder_net = tf.keras.Sequential(
        [
            InputLayer(input_shape=(latent_dim,)),
            Dense(10, activation=tf.nn.tanh),
            Dense(30, activation=tf.nn.tanh),
            Dense(60, activation=tf.nn.tanh),
            Dense(n_features, activation=None),
        ]
    )
    gmm_density_net = tf.keras.Sequential(
        [
            InputLayer(input_shape=(latent_dim + 2,)),
            Dense(10, activation=tf.nn.tanh),
            Dense(n_gmm, activation=tf.nn.softmax),
        ]
    )
    return {
        "encoder_net": encoder_net,
        "decoder_net": decoder_net,
        "gmm_density_net": gmm_density_net,
    }


def rows(n: int) -> np.ndarray:
    a = RNG.normal(size=(n, 1))
    return (np.hstack([a, 2 * a, -a, a**2]) + 0.05 * RNG.normal(size=(n, 4))).astype(np.float32)


def test_vaegmm_page_snippets_run(tmp_path):
    od = OutlierVAEGMM(threshold=7.5, **vaegmm_networks(4, 4, 2), latent_dim=4, n_gmm=2, samples=10)
    assert od.threshold == 7.5
    X_train = rows(512)
    od.fit(X_train, epochs=1, batch_size=1024, verbose=False)
    X = rows(100)
    od.infer_threshold(X, threshold_perc=95)
    preds = od.predict(X, return_instance_score=True)
    assert set(preds["data"]) == {"is_outlier", "instance_score"}
    assert preds["data"]["is_outlier"].shape == preds["data"]["instance_score"].shape == (100,)
    assert preds["meta"]["name"] == "vaegmm" and preds["meta"]["data_type"] == "tabular"
    assert (
        od.predict(X, batch_size=16, return_instance_score=False)["data"]["instance_score"] is None
    )
    # The pages' defaults.
    fresh = OutlierVAEGMM()
    assert (fresh.params["w_recon"], fresh.params["w_energy"], fresh.params["w_cov_diag"]) == (
        1e-7,
        0.1,
        0.005,
    )
    assert fresh.params["learning_rate"] == 1e-4 and fresh.params["samples"] == 10
    assert (fresh.params["elbo_cov"], fresh.params["sigma"]) == ("fixed", 0.05)


@pytest.mark.parametrize(
    ("cov_elbo", "expected"),
    [(dict(cov_full=None), "full"), (dict(cov_diag=None), "features"), (dict(sim=0.2), "fixed")],
)
def test_vaegmm_fit_takes_every_page_option(cov_elbo, expected):
    seen: list[dict[str, object]] = []

    def loss_fn(x, x_recon, z, gamma, w_recon, w_energy, cov_full, cov_diag, sim):
        seen.append({"full": cov_full is not None, "diag": cov_diag is not None, "sim": sim})
        return (
            w_recon * tf.reduce_mean(tf.square(x - x_recon))
            + w_energy * tf.reduce_mean(tf.square(z))
            + 0.0 * tf.reduce_sum(gamma)
        )

    lines: list[str] = []
    od = OutlierVAEGMM(latent_dim=2, n_gmm=2, samples=2)
    summary = od.fit(
        rows(256),
        loss_fn=loss_fn,
        w_recon=1.0,
        w_energy=0.01,
        w_cov_diag=0.001,
        optimizer=tf.keras.optimizers.Adam(learning_rate=1e-3),
        cov_elbo=cov_elbo,
        epochs=2,
        batch_size=64,
        verbose=True,
        log_metric=("mae", keras.metrics.MeanAbsoluteError()),
        progress=lines.append,
    )
    assert od.params["elbo_cov"] == expected and od.params["w_recon"] == 1.0
    assert seen and seen[0]["full"] == (expected == "full")
    assert seen[0]["diag"] == (expected == "features")
    assert len(lines) == 2 and "mae=" in lines[0]
    assert [set(epoch) >= {"loss", "kl", "mae"} for epoch in summary["history"]] == [True, True]
    with pytest.raises(InvalidInputError, match="cov_elbo must be one of"):
        od.fit(rows(64), cov_elbo=dict(cov=1), verbose=False)
    with pytest.raises(InvalidInputError, match="log_metric must be a"):
        od.fit(rows(64), log_metric="mae", verbose=False)


def test_adversarial_vae_page_snippets_run_on_images():
    latent_dim, input_dim, output_dim = 8, (32, 32, 3), 10
    encoder_net = tf.keras.Sequential(
        [
            InputLayer(input_shape=input_dim),
            Conv2D(8, 4, strides=2, padding="same", activation=tf.nn.relu),
            Conv2D(16, 4, strides=2, padding="same", activation=tf.nn.relu),
            Conv2D(32, 4, strides=2, padding="same", activation=tf.nn.relu),
        ]
    )
    decoder_net = tf.keras.Sequential(
        [
            InputLayer(input_shape=(latent_dim,)),
            Dense(4 * 4 * 16),
            Reshape(target_shape=(4, 4, 16)),
            Conv2DTranspose(32, 4, strides=2, padding="same", activation=tf.nn.relu),
            Conv2DTranspose(8, 4, strides=2, padding="same", activation=tf.nn.relu),
            Conv2DTranspose(3, 4, strides=2, padding="same", activation="sigmoid"),
        ]
    )
    inputs = tf.keras.Input(shape=input_dim)
    flat = tf.keras.layers.Flatten()(inputs)
    outputs = tf.keras.layers.Dense(output_dim, activation=tf.nn.softmax)(flat)
    model = tf.keras.Model(inputs=inputs, outputs=outputs)

    ad = AdversarialVAE(
        threshold=0.1,
        encoder_net=encoder_net,
        decoder_net=decoder_net,
        model=model,
        latent_dim=latent_dim,
        samples=10,
    )
    X_train = RNG.uniform(0, 1, (48, *input_dim)).astype(np.float32)
    ad.fit(X_train, epochs=1, verbose=False)
    X = RNG.uniform(0, 1, (20, *input_dim)).astype(np.float32)
    ad.infer_threshold(X, threshold_perc=95)
    preds = ad.predict(X, return_instance_score=True)
    assert set(preds["data"]) == {"is_adversarial", "instance_score"}
    assert preds["data"]["is_adversarial"].shape == (20,)
    assert preds["meta"]["detector_type"] == "adversarial"
    assert preds["meta"]["data_type"] == "image"
    fresh = AdversarialVAE()
    assert (fresh.params["samples"], fresh.params["beta"], fresh.params["w_recon"]) == (10, 0, 0)
    with pytest.raises(InvalidInputError, match="decoder_net outputs shape"):
        AdversarialVAE(
            model=model,
            latent_dim=latent_dim,
            encoder_net=encoder_net,
            decoder_net=tf.keras.Sequential([InputLayer(input_shape=(latent_dim,)), Dense(3)]),
        ).fit(X_train, epochs=1, verbose=False)


def test_adversarial_vae_fit_options_and_custom_loss():
    inputs = tf.keras.Input(shape=(4,))
    model = tf.keras.Model(inputs, Dense(2, activation=tf.nn.softmax)(inputs))
    calls: list[str] = []

    def loss_fn(x_true, x_pred, model, w_model, w_recon):
        calls.append("called")
        kl = tf.keras.losses.kld(model(x_true), model(x_pred))
        return w_model * tf.reduce_mean(kl) + w_recon * tf.reduce_mean(tf.square(x_true - x_pred))

    ad = AdversarialVAE(model=model, latent_dim=2, samples=2)
    summary = ad.fit(
        rows(128),
        loss_fn=loss_fn,
        w_model=1.0,
        w_recon=0.1,
        optimizer=tf.keras.optimizers.Adam,
        cov_elbo=dict(cov_diag=None),
        epochs=1,
        batch_size=32,
        verbose=False,
    )
    assert calls and ad.params["w_recon"] == 0.1 and ad.params["elbo_cov"] == "features"
    assert summary["history"][0]["loss"] > 0


def test_user_networks_with_a_custom_layer_load_in_a_fresh_process(tmp_path):
    seq_len, latent_dim = 8, 6
    threshold_net = keras.Sequential(
        [keras.Input((seq_len, latent_dim)), LearnedScale(), Dense(4, activation="relu")]
    )
    seq = OutlierSeq2Seq(2, seq_len, threshold_net=threshold_net, latent_dim=latent_dim, seed=0)
    seq.fit(series(80, 2), epochs=1, verbose=False)
    seq.infer_threshold(series(40, 2), threshold_perc=90)

    networks = vaegmm_networks(4, 2, 2)
    networks["encoder_net"] = keras.Sequential(
        [keras.Input((4,)), LearnedScale(), Dense(8, activation="tanh")]
    )
    networks["gmm_density_net"] = keras.Sequential(
        [keras.Input((3,)), Dense(4, activation="tanh"), Dense(2, activation="softmax")]
    )
    gmm = OutlierVAEGMM(
        **networks, latent_dim=2, n_gmm=2, samples=2, recon_features=mean_abs_error, seed=0
    )
    gmm.fit(rows(256), epochs=1, verbose=False)
    gmm.infer_threshold(rows(64), threshold_perc=90)

    cases = {"seq2seq": (seq, series(40, 2)), "vaegmm": (gmm, rows(64))}
    for name, (detector, data) in cases.items():
        detector.save(tmp_path / name)
        np.save(tmp_path / f"{name}.npy", data)
        np.save(tmp_path / f"{name}_scores.npy", detector.score(data).instance_score)

    scorer = """
import sys, numpy as np
import tests.detectors.custom_layers  # registers LearnedScale and mean_abs_error, as a user would
from streamdet.detectors import load_detector
root = sys.argv[1]
for name in ("seq2seq", "vaegmm"):
    scores = load_detector(f"{root}/{name}").score(np.load(f"{root}/{name}.npy")).instance_score
    np.testing.assert_array_equal(scores, np.load(f"{root}/{name}_scores.npy"))
print("identical")
"""
    done = subprocess.run(
        [sys.executable, "-c", scorer, str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0 and "identical" in done.stdout, done.stderr[-2000:]

    # Without the user's module the custom layer is unknown: refused with Keras's reason.
    bare = """
import sys
from streamdet.detectors import load_detector
try:
    load_detector(sys.argv[1] + "/seq2seq")
except Exception as exc:
    print(type(exc).__name__, exc)
"""
    done = subprocess.run(
        [sys.executable, "-c", bare, str(tmp_path)], capture_output=True, text=True
    )
    assert "ModelLoadError" in done.stdout and "LearnedScale" in done.stdout, done.stdout


def test_an_unregistered_recon_features_function_trains_but_is_not_saved(tmp_path):
    od = OutlierVAEGMM(
        recon_features=lambda x, x_recon: tf.abs(x - x_recon), latent_dim=1, samples=1
    )
    od.fit(rows(128), epochs=1, verbose=False)
    assert od.score(rows(8)).instance_score.shape == (8,)
    with pytest.raises(InvalidInputError, match="register_keras_serializable"):
        od.save(tmp_path / "never")
