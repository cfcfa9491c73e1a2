from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from streamdet.detectors import DETECTORS, VAELSTMDetector, load_detector
from streamdet.errors import ModelLoadError

FRESH_PROCESS_SCORER = """
import sys, numpy as np
from streamdet.detectors import load_detector
detector = load_detector(sys.argv[1])
data = np.load(sys.argv[2])
np.save(sys.argv[3], detector.score(data).instance_score)
print(detector.name, detector.input_shape, detector.threshold)
"""


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_load_in_a_fresh_process_gives_identical_scores(saved_models, name, tmp_path):
    directory, series = saved_models[name]
    in_process = load_detector(directory).score(series).instance_score
    np.save(tmp_path / "data.npy", series)
    subprocess.run(
        [
            sys.executable,
            "-c",
            FRESH_PROCESS_SCORER,
            str(directory),
            str(tmp_path / "data.npy"),
            str(tmp_path / "scores.npy"),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    np.testing.assert_array_equal(np.load(tmp_path / "scores.npy"), in_process)


def test_metadata_describes_the_model(saved_models):
    directory, _ = saved_models["seq2seq"]
    meta = json.loads((directory / "metadata.json").read_text())
    assert meta["detector"] == "seq2seq"
    assert meta["input_shape"] == [12, 2]
    assert len(meta["threshold"]) == 2  # feature-wise
    assert set(meta["normalisation"]) == {"mean", "std"}
    assert meta["training"]["training_windows"] == (400 - 12) // 4 + 1
    assert set(meta["models"]) == {"seq2seq.keras"}
    assert not list(directory.glob("*.pkl"))


def test_load_rejects_another_detector_shape_or_a_corrupt_file(saved_models, tmp_path):
    seq_dir, _ = saved_models["seq2seq"]
    with pytest.raises(ModelLoadError, match="holds a 'seq2seq' model, not a 'vae_lstm'"):
        VAELSTMDetector.load(seq_dir)
    with pytest.raises(ModelLoadError, match="expects instances of shape"):
        load_detector(seq_dir, expected_input_shape=(50, 2))
    with pytest.raises(ModelLoadError, match="not a saved streamdet model"):
        load_detector(tmp_path)

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for f in seq_dir.iterdir():
        (corrupt / f.name).write_bytes(f.read_bytes())
    model_file = corrupt / "seq2seq.keras"
    blob = bytearray(model_file.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    model_file.write_bytes(bytes(blob))
    with pytest.raises(ModelLoadError, match="corrupt"):
        load_detector(corrupt)

    (corrupt / "metadata.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_detector(corrupt)
