from __future__ import annotations

import gzip

import numpy as np
import pytest

from streamdet.core.errors import InvalidInputError, NotFittedError
from streamdet.detectors import VAEGMMDetector
from streamdet.evaluation.data import data_root
from streamdet.evaluation.metrics import roc_auc
from tests.helpers import run_cli


def manifold_rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(99).normal(size=(2, 6))
    return (rng.normal(size=(n, 2)) @ basis + 0.05 * rng.normal(size=(n, 6))).astype("float32")


def test_vaegmm_energy_ranks_off_manifold_rows_above_normal_ones():
    detector = VAEGMMDetector.tuned(epochs=15, samples=3, seed=0)
    detector.fit(manifold_rows(2000, 1))
    outliers = 2 * np.random.default_rng(2).normal(size=(100, 6)).astype("float32")
    scores = detector.score(np.r_[manifold_rows(1000, 3), outliers]).instance_score
    auc = roc_auc(np.r_[np.zeros(1000), np.ones(100)], scores)
    assert auc > 0.9, f"AUROC {auc:.3f}"
    phi = detector.extra_state["phi"]
    assert phi.shape == (2,) and abs(phi.sum() - 1) < 1e-6
    detector.infer_threshold(manifold_rows(1000, 4), threshold_perc=95)
    flagged = detector.predict(outliers)["data"]["is_outlier"]
    assert flagged.mean() > 0.8


def test_vaegmm_stays_finite_on_standardised_kdd_rows():
    path = data_root() / "kddcup99" / "kddcup.data_10_percent.gz"
    with gzip.open(path, "rt") as handle:
        lines = [next(handle) for _ in range(3000)]
    rows = np.array(
        [
            [float(v) for i, v in enumerate(line.split(",")[:-1]) if i not in (1, 2, 3)]
            for line in lines
        ],
        dtype=np.float32,
    )
    detector = VAEGMMDetector.tuned(epochs=3, samples=2, seed=0, n_gmm=4, latent_dim=1)
    detector.fit(rows)
    scores = detector.score(rows)
    assert np.isfinite(scores.instance_score).all()
    assert np.isfinite(detector.extra_state["cov"]).all()


def test_vaegmm_rejects_bad_input_clearly():
    with pytest.raises(NotFittedError, match="call fit"):
        VAEGMMDetector().score(np.zeros((2, 3)))
    with pytest.raises(InvalidInputError, match="elbo_cov must be"):
        VAEGMMDetector(elbo_cov="diag")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="unknown reconstruction feature"):
        VAEGMMDetector(recon_features=("manhattan",))
    detector = VAEGMMDetector.tuned(epochs=1, samples=1)
    detector.fit(manifold_rows(300, 0))
    with pytest.raises(InvalidInputError, match=r"expected instances of shape \(6,\)"):
        detector.score(np.zeros((2, 5)))
    with pytest.raises(InvalidInputError, match="expected rows"):
        detector.score(np.zeros((2, 6, 1)))
    for elbo_cov in ("features", "full"):
        VAEGMMDetector.tuned(epochs=1, samples=1, elbo_cov=elbo_cov).fit(manifold_rows(300, 0))


def test_evaluate_tabular_command_compares_with_isolation_forest(tmp_path):
    import json

    X = np.r_[manifold_rows(800, 5), 2 * np.random.default_rng(6).normal(size=(40, 6))]
    y = np.r_[np.zeros(800), np.ones(40)].astype(np.int8)
    np.savez(tmp_path / "table.npz", X=X.astype(np.float32), y=y)
    done = run_cli(
        "evaluate",
        "tabular",
        "--npz",
        str(tmp_path / "table.npz"),
        "--seeds",
        "1",
        "--epochs",
        "30",
        "--ensemble-trust",
        "held_out",
        "--out",
        str(tmp_path / "out"),
    )
    assert done.returncode == 0, done.stderr
    assert "IsolationForest" in done.stdout
    result = json.loads((tmp_path / "out" / "tabular.json").read_text())
    assert result["vaegmm"]["auroc"] > 0.9
    assert 0.5 < result["isolation_forest"]["auroc"] <= 1.0
    assert result["ensemble"]["auroc"] > 0.9
    members = result["ensemble_members"]
    assert [m["name"] for m in members] == ["vaegmm", "iforest"]
    assert sum(m["weight"] for m in members) == pytest.approx(1.0, abs=1e-3)
    assert result["ensemble_trust"].startswith("held_out: rehearsed fitted on")
    assert (tmp_path / "out" / "tabular_vaegmm_confusion_scores.png").exists()
    assert (tmp_path / "out" / "tabular_ensemble_roc_pr.png").exists()
    np.savez(tmp_path / "bad.npz", X=X)
    bad = run_cli("evaluate", "tabular", "--npz", str(tmp_path / "bad.npz"))
    assert bad.returncode == 2 and "must hold arrays 'X' and 'y'" in bad.stderr


def test_evaluate_tabular_all_prints_one_table_over_seeds(tmp_path):
    import json

    folder = tmp_path / "tables"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for name, shift in (("near", 1.0), ("far", 4.0)):
        X = np.r_[manifold_rows(400, 8), shift * rng.normal(size=(20, 6))].astype(np.float32)
        np.savez(folder / f"{name}.npz", X=X, y=np.r_[np.zeros(400), np.ones(20)].astype(np.int8))
    done = run_cli(
        "evaluate",
        "tabular",
        "--all",
        str(folder),
        "--seeds",
        "2",
        "--epochs",
        "3",
        "--threshold-policy",
        "spot",
        "--out",
        str(tmp_path / "out"),
    )
    assert done.returncode == 0, done.stderr
    assert "far" in done.stdout and "near" in done.stdout and " ± " in done.stdout
    summary = json.loads((tmp_path / "out" / "tabular_all.json").read_text())
    assert summary["seeds"] == [0, 1] and set(summary["tables"]) == {"near", "far"}
    far = summary["tables"]["far"]
    assert len(far["vaegmm"]["auroc"]["values"]) == 2
    assert far["vaegmm"]["f1"] == far["vaegmm"]["policies"]["spot"]["f1"]
    assert far["isolation_forest"]["auroc"]["mean"] > 0.9
    assert len(far["ensemble"]["auroc"]["values"]) == 2
    assert summary["ensemble_at_least_isolation_forest"].endswith("/2 tables (mean AUROC)")
    assert (tmp_path / "out" / "far" / "seed1" / "tabular.json").exists()
    assert (tmp_path / "out" / "tabular_all_auroc.png").stat().st_size > 1000

    # --resume: a longer run over the same folder reruns only the seed it lacks.
    options = ["evaluate", "tabular", "--all", str(folder), "--epochs", "3"]
    options += ["--threshold-policy", "spot", "--out", str(tmp_path / "out"), "--resume"]
    more = run_cli(*options, "--seeds", "3")
    assert more.returncode == 0, more.stderr
    assert more.stderr.count("finished before") == 4 and "seed 2 (3/3)" in more.stderr
    resumed = json.loads((tmp_path / "out" / "tabular_all.json").read_text())["tables"]["far"]
    values = resumed["vaegmm"]["auroc"]["values"]
    assert len(values) == 3 and values[:2] == far["vaegmm"]["auroc"]["values"]
    other = run_cli(*[o if o != "3" else "4" for o in options], "--seeds", "3")
    assert other.returncode == 2 and "epochs differ" in other.stderr, other.stderr[-500:]


def test_energy_plus_reconstruction_score_survives_save_and_load(tmp_path):
    import json

    from streamdet.core.errors import ModelLoadError

    rows = manifold_rows(600, 1)
    detector = VAEGMMDetector.tuned(epochs=3, samples=1, seed=0)
    assert detector.params["score_terms"] == "energy+reconstruction"
    detector.fit(rows)
    scores = detector.score(rows).instance_score
    # Each term is centred on its training median and scaled by its interquartile range.
    assert abs(float(np.median(scores))) < 1.0
    off_manifold = 3 * np.random.default_rng(3).normal(size=(50, 6)).astype("float32")
    assert np.median(detector.score(off_manifold).instance_score) > np.percentile(scores, 99)
    detector.threshold = 1.0
    detector.save(tmp_path / "model")
    loaded = VAEGMMDetector.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.score(rows).instance_score, scores)
    meta_path = tmp_path / "model" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    del meta["state"]["score_scale"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="training score scale"):
        VAEGMMDetector.load(tmp_path / "model")
    with pytest.raises(InvalidInputError, match="score_terms must be 'energy' or"):
        VAEGMMDetector(score_terms="sum")
