"""The generic checks every registered detector passes, whatever its model (river's
``check_estimator`` is the model): each detector's ``contract_cases()`` (for the
alibi-compatible detectors also one built the alibi-detect way, from user networks) go
through fit -> infer_threshold -> predict -> save -> load in a fresh process -> identical
scores, bad inputs, batch invariance, and a topic that trains, serves and retrains it
through the daemon's own lifecycle and threshold rule."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamdet.core.errors import InvalidInputError, NotFittedError
from streamdet.detectors import (
    DETECTORS,
    AdversarialVAE,
    OutlierSeq2Seq,
    OutlierVAEGMM,
    load_detector,
)
from streamdet.detectors.base import Detector
from streamdet.detectors.catalog import catalog

CASES = [(name, case) for name in sorted(DETECTORS) for case in DETECTORS[name].contract_cases()]
IDS = [f"{name}-{case.label}" for name, case in CASES]

FRESH_PROCESS_SCORER = """
import json, sys, numpy as np
from streamdet.detectors import load_detector
out = {}
for directory, data in json.loads(sys.argv[1]).items():
    detector = load_detector(directory)
    scores = detector.score(np.load(data)).instance_score
    np.save(directory + "/fresh_scores.npy", scores)
    out[directory] = detector.name
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Detector, Path]]:
    """Every case fitted, thresholded and saved; then every saved model scored once more in
    one fresh Python process (one TensorFlow start for all of them)."""
    root = tmp_path_factory.mktemp("contract")
    result = {}
    jobs = {}
    for (_name, case), case_id in zip(CASES, IDS, strict=True):
        detector = case.build()
        summary = detector.fit(case.instances, progress=lambda line: None)
        assert isinstance(summary, dict), f"{case_id}: fit returns its training summary"
        detector.infer_threshold(case.instances, threshold_perc=90)
        directory = detector.save(root / case_id)
        np.save(directory / "instances.npy", case.instances)
        jobs[str(directory)] = str(directory / "instances.npy")
        result[case_id] = (detector, directory)
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_SCORER, json.dumps(jobs)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert set(json.loads(done.stdout.strip().splitlines()[-1])) == set(jobs)
    return result


def test_every_registered_detector_has_a_contract_case_and_the_alibi_names_are_the_classes():
    assert {name for name, _ in CASES} == set(DETECTORS)
    # The light catalog (config, CLI, schema: no TensorFlow) names exactly the registry.
    assert {n: e.kinds for n, e in catalog().items()} == {n: c.kinds for n, c in DETECTORS.items()}
    assert OutlierSeq2Seq is DETECTORS["seq2seq"]
    assert OutlierVAEGMM is DETECTORS["vaegmm"]
    assert AdversarialVAE is DETECTORS["adversarial_vae"]
    labels = {(name, case.label) for name, case in CASES}
    assert {("seq2seq", "alibi"), ("vaegmm", "alibi"), ("adversarial_vae", "alibi")} <= labels
    for cls in DETECTORS.values():
        assert cls.kinds, f"{cls.__name__} declares the topic kinds it scores"


@pytest.mark.parametrize(("name", "case"), CASES, ids=IDS)
def test_unfitted_detector_refuses_to_score(name, case):
    with pytest.raises(NotFittedError, match="call fit"):
        case.build().score(case.instances)


@pytest.mark.parametrize(("name", "case"), CASES, ids=IDS)
def test_predict_gives_meta_and_data_with_the_documented_keys(fitted, name, case):
    detector, _ = fitted[f"{name}-{case.label}"]
    n = len(case.instances)
    out = detector.predict(case.instances)
    assert set(out) == {"meta", "data"}
    assert out["meta"]["name"] == name
    assert out["meta"]["detector_type"] in ("outlier", "adversarial")
    flags = out["data"][detector.outcome_key]
    scores = out["data"]["instance_score"]
    assert flags.shape == scores.shape == (n,)
    assert np.all(np.isfinite(scores))
    # infer_threshold(threshold_perc=90) on the same instances: at most 10 % above it.
    assert flags.mean() <= 0.1 + 1.0 / n
    assert (
        detector.predict(case.instances, return_instance_score=False)["data"]["instance_score"]
        is None
    )


@pytest.mark.parametrize(("name", "case"), CASES, ids=IDS)
def test_a_fresh_process_loads_the_saved_model_and_scores_identically(fitted, name, case):
    detector, directory = fitted[f"{name}-{case.label}"]
    in_process = detector.score(case.instances).instance_score
    np.testing.assert_array_equal(np.load(directory / "fresh_scores.npy"), in_process)
    reloaded = load_detector(directory)
    np.testing.assert_array_equal(np.asarray(reloaded.threshold), np.asarray(detector.threshold))
    assert not list(directory.glob("*.pkl")) and not list(directory.glob("*.pickle"))


@pytest.mark.parametrize(("name", "case"), CASES, ids=IDS)
def test_bad_inputs_raise_errors_naming_what_was_expected(fitted, name, case):
    detector, _ = fitted[f"{name}-{case.label}"]
    instances = case.instances
    wider = np.concatenate([instances, instances[..., :1]], axis=-1)
    with pytest.raises(InvalidInputError, match="expected"):
        detector.score(wider)
    poisoned = instances.copy()
    poisoned.flat[7] = np.nan
    with pytest.raises(InvalidInputError, match="NaN or inf"):
        detector.score(poisoned)
    with pytest.raises(InvalidInputError, match="expected"):
        detector.score(instances[..., 0, None, None])


@pytest.mark.parametrize(("name", "case"), CASES, ids=IDS)
def test_scores_are_batch_invariant(fitted, name, case):
    """The same instance gets the bit-identical score alone, in any batch, at any position:
    replays, alert ids and a threshold set on a training score rely on it."""
    detector, _ = fitted[f"{name}-{case.label}"]
    instances = np.ascontiguousarray(case.instances[:70])
    whole = detector.score(instances).instance_score
    rng = np.random.default_rng(0)
    order = rng.permutation(len(instances))
    np.testing.assert_array_equal(detector.score(instances[order]).instance_score, whole[order])
    for size in (1, 3, 17, 64, 65):
        picked = rng.choice(len(instances), min(size, len(instances)), replace=False)
        np.testing.assert_array_equal(
            detector.score(instances[picked]).instance_score, whole[picked], err_msg=f"{size=}"
        )


def test_a_detector_without_contract_cases_cannot_register():
    import pytest as _pytest

    from streamdet.detectors.base import REGISTRY, register

    class Untested(REGISTRY["seq2seq"]):  # type: ignore[misc, valid-type]
        name = "untested"

    with _pytest.raises(ValueError, match="Untested must define contract_cases"):
        register(Untested)
    assert "untested" not in REGISTRY


@pytest.mark.parametrize(("name", "case"), CASES, ids=IDS)
def test_expected_values_have_the_instances_shape_and_explain_the_score(fitted, name, case):
    """What an alert shows as expected: the instances' shape and units, and (for detectors
    that reconstruct) closer to a normal instance than to the same instance with a spike."""
    detector, _ = fitted[f"{name}-{case.label}"]
    instances = np.ascontiguousarray(case.instances[:4])
    expected = detector.expected(instances)
    if expected is None:
        return
    assert expected.shape == instances.shape
    known = np.isfinite(expected)
    assert known.mean() > 0.5
    spiked = instances.copy()
    if instances.min() >= 0 and instances.max() <= 1:  # images: the pixels' range is fixed
        spiked[..., -1, -1] = 1 - spiked[..., -1, -1]
    else:
        spiked[..., -1, -1] += 10 * (np.abs(instances).max() + 1)
    spiked_expected = detector.expected(spiked)
    normal_gap = np.abs(instances - expected)[known].mean()
    spiked_gap = np.abs(spiked - spiked_expected)[np.isfinite(spiked_expected)].mean()
    assert spiked_gap > normal_gap
