"""Evaluation commands on the shared benchmark data, with tiny training budgets."""

from __future__ import annotations

import json

import numpy as np

from streamdet.evaluation.data import data_root
from streamdet.evaluation.vae_lstm_nab import (
    SERIES,
    load_raw_series,
    load_series,
    sequence_labels,
)
from streamdet.thresholds import rule_names
from tests.helpers import run_cli


def test_vae_lstm_nab_reads_split_segments_and_labels_like_the_notebook():
    training, tests, anomalies = load_series(data_root() / "vae_lstm_nab" / "machine_temp.npz")
    assert training.shape == (10500,)
    assert [len(t) for t in tests] == [5000, 7195]
    labels = sequence_labels(len(tests[0]), anomalies[0], 48 * 12)
    assert len(labels) == 4425  # the notebook's 4,425 LSTM sequences


def test_raw_nab_csvs_rebuild_the_notebooks_five_series_exactly():
    """--raw builds what the pre-processed files hold: the same z-normalised training part,
    test segments and anomaly indices, from NAB's CSVs and labels."""
    for name in SERIES:
        training, tests, anomalies = load_series(data_root() / "vae_lstm_nab" / f"{name}.npz")
        raw_training, raw_tests, raw_anomalies = load_raw_series(data_root() / "nab", name)
        np.testing.assert_allclose(raw_training, training, atol=1e-5, err_msg=name)
        assert [len(t) for t in raw_tests] == [len(t) for t in tests], name
        for raw_test, test in zip(raw_tests, tests, strict=True):
            np.testing.assert_allclose(raw_test, test, atol=1e-5, err_msg=name)
        assert [a.tolist() for a in raw_anomalies] == [a.tolist() for a in anomalies], name


def test_evaluate_vae_lstm_nab_command_writes_json_plots_and_table(tmp_path):
    done = run_cli(
        "evaluate",
        "vae-lstm-nab",
        "--seeds",
        "1",
        "--series",
        "ec2_request",
        "--epochs-vae",
        "1",
        "--epochs-lstm",
        "1",
        "--raw",
        str(data_root() / "nab"),
        "--window",
        "24",
        "--n-windows",
        "4",
        "--code-size",
        "4",
        "--threshold-policy",
        "dspot",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    assert "vae_lstm VAE epoch 1/1" in done.stderr
    assert "ec2_request/1" in done.stdout
    summary = json.loads((tmp_path / "vae_lstm_nab.json").read_text())
    assert summary["detector"]["code_size"] == 4
    assert summary["detector"]["data"].startswith("raw NAB CSVs")
    segment = summary["series"]["ec2_request"]["segments"][0]
    assert segment["sequences"] == 2032 - 24 * 4 + 1
    assert (tmp_path / "ec2_request_score_histogram.png").stat().st_size > 1000
    assert 0.0 <= segment["threshold_without_labels"]["point_adjusted"]["f1"] <= 1.0
    assert set(segment["policies"]) == {"protocol", *rule_names()}
    assert segment["headline"] == {"policy": "dspot", **segment["policies"]["dspot"]}
    assert segment["policies"]["protocol"]["f1"] == segment["threshold_without_labels"]["raw"]["f1"]
    assert np.isfinite(segment["auc"])
    assert (tmp_path / "ec2_request_segment1_roc_pr.png").exists()
    assert (tmp_path / "ec2_request_segment1_scores.png").exists()


def test_evaluate_ecg5000_keeps_the_best_epoch_on_held_out_normal_beats(tmp_path):
    done = run_cli(
        "evaluate",
        "ecg5000",
        "--seeds",
        "1",
        "--epochs",
        "2",
        "--patience",
        "1",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    assert "seq2seq: kept epoch" in done.stderr
    result = json.loads((tmp_path / "ecg5000.json").read_text())
    training = result["training"]
    # 10 % of the 2,627 normal beats are held out (the command's default) and never trained on.
    assert (training["training_windows"], training["validation_windows"]) == (2364, 263)
    val = [epoch["val_loss"] for epoch in training["history"]]
    assert training["best_epoch"] == int(np.argmin(val)) + 1
    assert result["detector"]["params"]["validation_fraction"] == 0.1
    assert 0.5 <= result["metrics"]["auc"] <= 1.0
    assert set(result["policies"]) == {"protocol", *rule_names()}
    for picture in ("ecg5000_roc_pr.png", "ecg5000_training.png", "ecg5000_scores.png"):
        assert (tmp_path / picture).stat().st_size > 1000, picture
    assert "streamdet seq2seq (protocol)" in done.stdout
