from __future__ import annotations

import json

import pytest

from streamdet.core.errors import ModelLoadError
from streamdet.detectors import VAELSTMDetector, load_detector


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


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda meta: meta["normalisation"].update(mean=[float("nan")] * 2), "NaN or inf"),
        (lambda meta: meta["normalisation"].update(std=[0.0, 1.0]), "zero or negative std"),
        (lambda meta: meta["params"].update(latent_dims=4), "params do not fit"),
        (lambda meta: meta.update(threshold=[float("inf"), 1.0]), "threshold is not finite"),
    ],
)
def test_a_model_with_broken_metadata_is_refused_not_half_loaded(
    saved_models, tmp_path, change, message
):
    source, _ = saved_models["seq2seq"]
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in source.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    meta = json.loads((broken / "metadata.json").read_text())
    change(meta)
    (broken / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match=message):
        load_detector(broken)


def test_a_library_saved_model_is_served_and_its_series_learn_their_rule(saved_models, tmp_path):
    """A detector saved with ``save()`` (no serving bundle, no calibration scores) put in a
    topic's store is served: its threshold is the topic's rule's, and each series learns it
    from its first scores. A corrupt bundle beside a model is refused and counted."""
    from streamdet.config import TopicConfig
    from streamdet.serving.lifecycle import ModelLifecycle

    source, _ = saved_models["seq2seq"]
    store = tmp_path / "store" / "t"
    store.mkdir(parents=True)
    for f in source.iterdir():
        (store / f.name).write_bytes(f.read_bytes())
    topic = TopicConfig.model_validate(
        {"name": "t", "window": {"seq_len": 12}, "detector": {"name": "seq2seq"},
         "format": {"value_fields": ["a", "b"]}}
    )  # fmt: skip
    said: list[str] = []
    model = ModelLifecycle(topic, tmp_path / "store", 2, progress=said.append)
    assert model.ready and model.version == "legacy" and model.bundle.calibration.empty
    (store / "bundle.json").write_text("{}")
    (store / "calibration.npz").write_bytes(b"not an archive")
    refused = ModelLifecycle(topic, tmp_path / "store", 2, progress=said.append)
    assert refused.state == "warming" and refused.detector is None
    assert refused.load_refusals == 1
    assert "stored model legacy refused" in said[-1] and "serving bundle" in said[-1]
