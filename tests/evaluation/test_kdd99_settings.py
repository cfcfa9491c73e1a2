"""`evaluate kdd99 --example-settings`: alibi-detect's KDD Cup example, through the
drop-in OutlierVAEGMM, on a small table in the KDD layout (the full run is a benchmark)."""

from __future__ import annotations

import gzip
import json

import numpy as np

from streamdet.detectors import load_detector
from streamdet.evaluation import kdd99
from tests.helpers import run_cli


def write_kdd_layout(folder, rows: int = 3000) -> None:
    """``kddcup.names`` and ``kddcup.data_10_percent.gz`` with 41 columns: normal rows on
    one pattern of rates, attacks (a sixth of the rows) on another."""
    folder.mkdir()
    names = ["duration", "protocol_type", "service", "flag"]
    names += [f"filler_{k}" for k in range(41 - len(names) - len(kdd99.ALIBI_FEATURES))]
    names += list(kdd99.ALIBI_FEATURES)
    (folder / "kddcup.names").write_text(
        "normal,smurf.\n" + "".join(f"{n}: continuous.\n" for n in names)
    )
    rng = np.random.default_rng(0)
    lines = []
    for i in range(rows):
        attack = i % 6 == 0
        rates = rng.uniform(0.6, 1.0, 16) if attack else rng.uniform(0.0, 0.3, 16)
        counts = rng.integers(200, 500, 2) if attack else rng.integers(0, 100, 2)
        numbers = [0.0] * (41 - 4 - 18) + [float(counts[0])] + list(rates[:7])
        numbers += [float(counts[1]), *list(rates[7:])]
        label = "smurf." if attack else "normal."
        lines.append(",".join(["0", "tcp", "http", "SF", *map(str, numbers), label]))
    with gzip.open(folder / "kddcup.data_10_percent.gz", "wt") as handle:
        handle.write("\n".join(lines) + "\n")


def dense_widths(model) -> list[int]:
    """Units of every Dense layer, nested networks included, in order."""
    widths = []
    for layer in model.layers:
        if hasattr(layer, "layers"):
            widths += dense_widths(layer)
        elif hasattr(layer, "units"):
            widths.append(layer.units)
    return widths


def test_the_example_settings_train_the_notebooks_network_on_resampled_rows(tmp_path, monkeypatch):
    write_kdd_layout(tmp_path / "kdd", rows=6000)
    # The example draws 400,000 rows; a few batches' worth proves the same path.
    monkeypatch.setattr(kdd99, "EXAMPLE_TRAINING_ROWS", 2048)
    done = run_cli(
        "evaluate", "kdd99", "--protocol", "alibi", "--example-settings",
        "--data", str(tmp_path / "kdd"), "--out", str(tmp_path / "out"), "--seeds", "1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2048 rows drawn with replacement" in done.stderr
    assert "epoch 50/50" in done.stderr  # the example's 50 epochs
    (run,) = (tmp_path / "out").glob("**/kdd99_alibi.json")
    result = json.loads(run.read_text())
    assert result["example_settings"] is True and result["page_defaults"] is False
    assert 0.0 <= result["metrics"]["f1"] <= 1.0
    # Planted attacks this far from the normal rows: the notebook's network ranks them.
    assert result["metrics"]["auc"] > 0.9
    model = load_detector(run.parent / "model_alibi")
    assert model.params["latent_dim"] == 2 and model.params["n_gmm"] == 2
    assert model.params["sigma"] == 0.0025 and model.params["elbo_cov"] == "fixed"
    assert model.params["samples"] == 10
    assert dense_widths(model.encoder) == [20, 15, 7, 2, 2]  # then the code's mean, log-var

    both = run_cli(
        "evaluate", "kdd99", "--page-defaults", "--example-settings",
        "--data", str(tmp_path / "kdd"), "--out", str(tmp_path / "out2"),
    )  # fmt: skip
    assert both.returncode == 2 and "not allowed with" in both.stderr
