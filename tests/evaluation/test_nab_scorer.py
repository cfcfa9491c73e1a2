"""NAB scoring on hand-computed cases, and the runner on a corpus built here."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamdet.evaluation.nab import (
    CostProfile,
    FileScores,
    load_corpus,
    normalised_score,
    optimise_threshold,
    scaled_sigmoid,
)
from streamdet.evaluation.nab_run import cooldown_detections
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]

STANDARD = CostProfile("standard", tp=1.0, fn=1.0, fp=0.11)
LOW_FN = CostProfile("reward_low_FN_rate", tp=1.0, fn=2.0, fp=0.11)


def one_file(
    detect_at: list[int], n: int = 100, windows=((40, 49),), probation: int = 10, name="f.csv"
):
    scores = np.zeros(n)
    scores[detect_at] = 1.0
    return FileScores(name, scores, list(windows), probation)


def test_detection_at_window_start_earns_full_tp_weight():
    assert one_file([40]).raw_score(STANDARD, 0.5) == pytest.approx(1.0)


def test_later_detection_in_window_earns_less_and_only_the_earliest_counts():
    late = one_file([45]).raw_score(STANDARD, 0.5)
    expected = scaled_sigmoid(-(49 - 45 + 1) / 10) / scaled_sigmoid(-1.0)
    assert late == pytest.approx(expected)
    assert one_file([40, 45]).raw_score(STANDARD, 0.5) == pytest.approx(1.0)


def test_false_positive_before_any_window_costs_the_fp_weight():
    # detection at row 20: no window yet; plus the window itself missed (-fn)
    assert one_file([20]).raw_score(STANDARD, 0.5) == pytest.approx(-0.11 - 1.0)


def test_missed_window_costs_the_fn_weight_of_the_profile():
    assert one_file([]).raw_score(STANDARD, 0.5) == pytest.approx(-1.0)
    assert one_file([]).raw_score(LOW_FN, 0.5) == pytest.approx(-2.0)


def test_fp_just_after_a_window_is_discounted_and_far_after_costs_full():
    just_after = one_file([40, 50]).raw_score(STANDARD, 0.5) - 1.0
    far_after = one_file([40, 90]).raw_score(STANDARD, 0.5) - 1.0
    assert just_after == pytest.approx(0.11 * scaled_sigmoid(1 / 9))
    assert -0.11 < just_after < 0
    assert far_after == pytest.approx(-0.11)


def test_probationary_rows_are_never_scored():
    assert one_file([5]).raw_score(STANDARD, 0.5) == pytest.approx(-1.0)


def test_null_detector_scores_0_and_perfect_detector_100():
    null = [one_file([]), one_file([], windows=((10, 19), (60, 79)))]
    assert normalised_score(null, STANDARD)["score"] == pytest.approx(0.0)
    perfect = [
        one_file([40], name="a.csv"),
        one_file([10, 60], windows=((10, 19), (60, 79)), probation=5, name="b.csv"),
    ]
    result = normalised_score(perfect, STANDARD)
    assert result["score"] == pytest.approx(100.0)
    assert result["tp_windows"] == 3 and result["fp_rows"] == 0


def test_threshold_search_is_exact_over_the_corpus():
    rng = np.random.default_rng(0)
    files = [
        FileScores(f"{k}.csv", rng.random(300), [(100, 129), (200, 219)], 45) for k in range(3)
    ]
    threshold, best = optimise_threshold(files, STANDARD)
    brute = max(
        sum(f.raw_score(STANDARD, t) for f in files)
        for t in np.unique(np.r_[[f.anomaly_score for f in files]].ravel())
    )
    assert best == pytest.approx(brute)
    assert sum(f.raw_score(STANDARD, threshold) for f in files) == pytest.approx(best)


def write_corpus(root: Path, n_files: int = 2, n: int = 900) -> None:
    """A small corpus in NAB layout: sine waves with one spike each."""
    windows = {}
    for k in range(n_files):
        folder = root / "data" / "synthetic"
        folder.mkdir(parents=True, exist_ok=True)
        t = np.arange(n)
        values = (
            10 + np.sin(2 * np.pi * t / 48) + 0.05 * np.random.default_rng(k).standard_normal(n)
        )
        spike = 600 + 50 * k
        values[spike : spike + 3] += 6
        base = np.datetime64("2020-01-01T00:00")
        stamps = [str(base + np.timedelta64(5 * i, "m")).replace("T", " ") + ":00" for i in t]
        lines = ["timestamp,value"] + [f"{s},{v:.5f}" for s, v in zip(stamps, values, strict=True)]
        (folder / f"s{k}.csv").write_text("\n".join(lines) + "\n")
        windows[f"synthetic/s{k}.csv"] = [
            [stamps[spike - 20] + ".000000", stamps[spike + 20] + ".000000"]
        ]
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    (root / "config").mkdir()
    profiles = {
        name: {"CostMatrix": {"tpWeight": 1.0, "fnWeight": fn, "fpWeight": fp, "tnWeight": 1.0}}
        for name, fn, fp in [
            ("standard", 1.0, 0.11),
            ("reward_low_FP_rate", 1.0, 0.22),
            ("reward_low_FN_rate", 2.0, 0.11),
        ]
    }
    (root / "config" / "profiles.json").write_text(json.dumps(profiles))


def test_loader_maps_window_timestamps_to_rows(tmp_path):
    write_corpus(tmp_path)
    files = load_corpus(tmp_path)
    assert [f.key for f in files] == ["synthetic/s0.csv", "synthetic/s1.csv"]
    assert files[0].windows == [(580, 620)]
    assert files[0].probation == math.floor(0.15 * 900)


def test_evaluate_nab_replays_any_nab_layout_corpus_through_the_daemon(tmp_path):
    write_corpus(tmp_path / "corpus", n=700)
    out = tmp_path / "out"
    params = json.dumps({"seq_len": 16, "latent_dim": 8, "epochs": 5})
    done = run_cli(
        "evaluate",
        "nab",
        "--seeds",
        "1",
        "--data",
        str(tmp_path / "corpus"),
        "--out",
        str(out),
        "--params",
        params,
        "--cooldown-rows",
        "50",
        "--threshold-params",
        '{"history": 300}',
        "--retrain-every",
        "250",
        "--retrain-epochs",
        "1",
        "--ablation",
    )
    assert done.returncode == 0, done.stderr
    assert "nab continual [2/2] synthetic/s1.csv" in done.stderr  # progress per file
    assert "nab frozen [2/2] synthetic/s1.csv" in done.stderr  # the ablation's replay
    assert "standard" in done.stdout and "NAB score" in done.stdout
    summary = json.loads((out / "nab.json").read_text())
    assert set(summary["variants"]) == {"continual", "frozen"}
    continual = summary["variants"]["continual"]
    assert continual["lifecycle"]["cooldown_rows"] == 50
    retrained = sum(v for k, v in continual["retrainings"].items() if k != "bootstrap")
    assert retrained >= 2  # 700 rows, every 250 after the 105-row warm-up
    assert summary["variants"]["frozen"]["retrainings"] == {
        "bootstrap": 2,
        "promoted": 0,
        "rejected": 0,
        "failed": 0,
    }
    assert continual["lifecycle"]["threshold"]["history"] == 300
    assert set(summary["profiles"]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    assert summary["profiles"] == continual["profiles"]  # the headline is the lifecycle asked
    assert set(continual["profiles"]["standard"]["categories"]) == {"synthetic"}
    # The planted spikes are easy for the warm-up model: both windows are caught without
    # drowning in FPs, by the NAB protocol's threshold and by the alerts the daemon published.
    frozen = summary["variants"]["frozen"]
    assert frozen["profiles"]["standard"]["tp_windows"] == 2
    assert frozen["profiles"]["standard"]["score"] > 50
    assert frozen["daemon_alerts"]["standard"]["tp_windows"] == 2
    # Each profile's alerts at the threshold.sensitivity that maps to it: balanced is the
    # configured risk (so the daemon's own alerts); the other two fewer and more alerts.
    presets = frozen["sensitivity_alerts"]
    assert {p: presets[p]["sensitivity"] for p in presets} == {
        "standard": "balanced",
        "reward_low_FP_rate": "fewer_false_alarms",
        "reward_low_FN_rate": "catch_everything",
    }
    assert presets["standard"]["score"] == frozen["daemon_alerts"]["standard"]["score"]
    low_fn, low_fp = presets["reward_low_FN_rate"], presets["reward_low_FP_rate"]
    assert low_fn["severity_threshold"] < 1.0 < low_fp["severity_threshold"]
    assert "alerts at sensitivity" in done.stdout and "catch_everything" in done.stdout
    # The commands that chose the likelihood window and the words read such a run back.
    printed = {}
    for module in (
        "benchmarks.choose_sensitivity",
        "benchmarks.choose_likelihood_window",
        "benchmarks.compare_on_development",
    ):
        chosen = subprocess.run(
            [sys.executable, "-m", module, "--data", str(tmp_path / "corpus"), "--runs", str(out),
             "--categories", "synthetic"],
            capture_output=True, text=True, cwd=ROOT,
        )  # fmt: skip
        assert chosen.returncode == 0, chosen.stderr
        printed[module] = chosen.stdout
    assert "2 development files, 1 seed(s)" in printed["benchmarks.choose_sensitivity"]
    assert "reward_low_FN_rate   catch_everything: risk" in printed["benchmarks.choose_sensitivity"]
    # A run's own alerts on the development files: here every file, so its daemon alerts.
    compared = printed["benchmarks.compare_on_development"].splitlines()[1]
    assert compared.startswith(str(out))
    assert f"{continual['daemon_alerts']['standard']['score']:.1f} ± 0.0 (1)" in compared
    window = printed["benchmarks.choose_likelihood_window"]
    assert window.count("short_window") == 12 and "2 development files, 1 seed(s)" in window
    rows = (out / "frozen" / "results" / "synthetic__s0.csv").read_text().splitlines()
    assert rows[0] == "timestamp,value,anomaly_score,label,raw_score,alert,model_version"
    assert len(rows) == 701  # a header and every row
    # The protocol's sweep applies the daemon's own rule: at the configured threshold (1)
    # and the cooldown (50 rows of 5 minutes) it gives exactly the alerts the daemon sent.
    cells = [row.split(",") for row in rows[1:]]
    severity = np.array([float(c[2]) for c in cells])
    alerts = np.array([c[5] == "1" for c in cells])
    seconds = np.arange(len(cells)) * 300.0
    assert alerts.any()
    assert (cooldown_detections(severity, seconds, 1.0, 50 * 300.0) == alerts).all()
    assert (out / "continual" / "results" / "synthetic__s1.csv").is_file()
    assert (out / "continual" / "plots" / "synthetic__s0.png").stat().st_size > 1000


def test_the_nab_report_reads_each_stored_ensembles_member_weights(tmp_path):
    """What ``evaluate nab`` reports per file as ``member_weights``: each stored version's
    learnt weights, read back from the version a real ensemble saved (others skipped)."""
    from streamdet.detectors.ensemble import EnsembleDetector
    from streamdet.detectors.pca import PCADetector
    from streamdet.evaluation.nab_run import member_weights_of

    rows = np.random.default_rng(0).normal(size=(300, 24))
    members = [{"name": "pca", "params": {"n_components": 23}}, {"name": "pca"}]
    ensemble = EnsembleDetector(members=members, trust="held_out")
    ensemble.fit(rows)
    ensemble.save(tmp_path / "versions" / "v000002")
    single = PCADetector()
    single.fit(rows)
    single.save(tmp_path / "versions" / "v000001")
    assert member_weights_of(tmp_path / "versions") == {
        "v000002": ensemble.weights.round(4).tolist()
    }
