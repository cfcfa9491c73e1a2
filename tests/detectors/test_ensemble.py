"""The ensemble's calibration and its refusals (the generic contract suite runs it through
fit, batch invariance, fresh-process load and a lifecycle retraining)."""

from __future__ import annotations

import numpy as np
import pytest

from streamdet.core.errors import InvalidInputError
from streamdet.core.windows import sliding_windows
from streamdet.detectors.ensemble import (
    EnsembleDetector,
    fisher_surprise,
    member_view,
    tail_probability,
)


def test_tail_probability_is_monotone_bounded_and_keeps_falling_beyond_the_calibration():
    calibration = np.sort(np.random.default_rng(0).exponential(size=1000))
    scores = np.linspace(-1.0, 30.0, 400)
    p = tail_probability(calibration, scores, 0.1)
    assert np.all((p > 0) & (p <= 1)) and np.all(np.diff(p) <= 0)
    assert p[0] == 1.0  # below everything seen
    inside = tail_probability(calibration, np.array([np.median(calibration)]), 0.1)[0]
    assert inside == pytest.approx(0.5, abs=0.01)
    beyond = tail_probability(
        calibration, np.array([calibration[-1] + 5, calibration[-1] + 10]), 0.1
    )
    assert beyond[0] < 1 / 1001 and beyond[1] < beyond[0] / 10  # not stuck at 1/(n+1)


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([{"name": "pca"}], "at least two"),
        ([{"name": "pca"}, {"name": "ensemble"}], "cannot be an ensemble"),
        ([{"name": "pca"}, {"name": "pca", "parms": {}}], "unknown keys"),
        ([{"name": "pca"}, "pca"], "members\\[1\\]"),
        ([{"name": "pca"}, {"name": "vae_lstm"}], "longer than the window"),
    ],
)
def test_members_that_cannot_work_are_refused_with_the_reason(members, why):
    with pytest.raises(InvalidInputError, match=why):
        EnsembleDetector(members=members)


def test_the_surprise_of_any_member_raises_the_score():
    """Two members see different things: PCA of the shape and PCA of the level (one
    component). A bent window surprises one of them, and the ensemble's score rises."""
    rng = np.random.default_rng(1)
    windows = np.sin(np.arange(16) / 3.0)[None, :, None] + 0.05 * rng.normal(size=(600, 16, 1))
    ensemble = EnsembleDetector(
        members=[{"name": "pca"}, {"name": "pca", "params": {"n_components": 1}}]
    )
    ensemble.fit(windows[:500])
    probabilities, _ = ensemble.member_probabilities(windows[500:])
    assert probabilities.shape == (2, 100) and probabilities.min() > 0
    bent = windows[500:501].copy()
    bent[0, 5] += 3.0
    assert ensemble.score(bent).instance_score[0] > np.quantile(
        ensemble.score(windows[500:]).instance_score, 0.99
    )


def test_fisher_matches_the_chi_square_tail_and_rewards_agreement():
    from scipy.stats import chi2

    rng = np.random.default_rng(3)
    probabilities = rng.uniform(1e-6, 1.0, size=(3, 50))
    statistic = -2 * np.log(probabilities).sum(axis=0)
    expected = -np.log10(chi2.sf(statistic, 6))
    np.testing.assert_allclose(fisher_surprise(probabilities), expected, rtol=1e-9)
    with pytest.raises(InvalidInputError, match="combine must be one of min_p, fisher"):
        EnsembleDetector(members=[{"name": "pca"}, {"name": "pca"}], combine="mean")


def test_a_member_that_pages_too_readily_on_unseen_normal_rows_is_trusted_less(tmp_path):
    """PCA keeping 23 of 24 directions rebuilds its own 240 training rows far better than
    new ones (its last direction's variance is underestimated); PCA keeping 2 does not. The
    held-out rehearsal counts each member's false alarms on rows it never saw and weights
    them; fresh normal rows then page less often than with equal trust, and the weights
    survive save and load."""
    from streamdet.detectors import load_detector

    rng = np.random.default_rng(0)
    rows, fresh = rng.normal(size=(300, 24)), rng.normal(size=(4000, 24))
    members = [
        {"name": "pca", "params": {"n_components": 23}},
        {"name": "pca", "params": {"n_components": 2}},
    ]
    learnt = EnsembleDetector(members=members, trust="held_out")
    summary = learnt.fit(rows)
    assert (
        summary["trust"]
        == "held_out: rehearsed fitted on 240, held out 60 (expected 3.0 false alarms each)"
    )
    overfit, plain = summary["members"]
    assert overfit["held_out_false_alarms"] > 3 * 3.0 and plain["held_out_false_alarms"] <= 2 * 3.0
    assert learnt.weights[0] < 0.3 < 0.7 < learnt.weights[1]
    assert [m["weight"] for m in summary["members"]] == learnt.weights.round(4).tolist()

    equal = EnsembleDetector(members=members)  # the default
    assert equal.fit(rows)["trust"] == "equal" and equal.weights.tolist() == [0.5, 0.5]
    pages = {
        name: int((detector.score(fresh).instance_score >= 2.0).sum())  # combined p < 0.01
        for name, detector in (("learnt", learnt), ("equal", equal))
    }
    assert pages["learnt"] < pages["equal"], pages

    loaded = load_detector(learnt.save(tmp_path / "ensemble"))
    np.testing.assert_array_equal(loaded.weights, learnt.weights)
    np.testing.assert_array_equal(
        loaded.score(fresh[:50]).instance_score, learnt.score(fresh[:50]).instance_score
    )


def test_a_member_sees_its_own_scale_and_its_feature_scores_land_on_the_window_steps():
    t = np.arange(400, dtype=np.float32)[:, None]
    windows = sliding_windows(
        np.sin(t / 5) + 0.05 * np.random.default_rng(3).normal(size=t.shape), 12
    )
    spec = {"name": "pca", "last": 10, "pool": 4}
    view = member_view(spec, windows)
    assert view.shape == (len(windows), 2, 1)  # the newest 8 of the last 10 steps, in pools
    np.testing.assert_allclose(view[:, 1, 0], windows[:, -4:, 0].mean(axis=1), rtol=1e-6)
    ensemble = EnsembleDetector(members=[spec, {"name": "pca", "last": 4}], trust="equal")
    ensemble.fit(windows)
    scores = ensemble.score(windows[:5])
    assert scores.feature_score.shape == (5, 12, 1)
    assert np.all(scores.feature_score[:, :4] == 0)  # steps no member of the first looked at
    for members, why in (
        ([{"name": "pca", "last": 13}, {"name": "pca"}], "needs windows of at least 13"),
        ([{"name": "pca", "pool": 7}, {"name": "pca"}], "needs windows of at least 14"),
    ):
        with pytest.raises(InvalidInputError, match=why):
            EnsembleDetector(members=members).fit(windows)
    with pytest.raises(InvalidInputError, match="need time windows"):
        EnsembleDetector(members=[{"name": "pca", "pool": 2}, {"name": "pca"}]).fit(
            np.random.default_rng(0).normal(size=(200, 5))
        )
    with pytest.raises(InvalidInputError, match=r"members\[0\].last must be an integer >= 2"):
        EnsembleDetector(members=[{"name": "pca", "last": 1}, {"name": "pca"}])


def test_refitting_rehearses_a_warm_start_member_from_a_copy_of_its_state():
    """A fitted Seq2Seq member trains on from its state when the ensemble is fitted again;
    its rehearsal stand-in is a saved-and-loaded copy of it (so it rehearses what the
    member will do), and the member itself is left to its own fit."""
    t = np.arange(260, dtype=np.float32)[:, None]
    windows = sliding_windows(
        np.sin(t / 4) + 0.05 * np.random.default_rng(4).normal(size=t.shape), 12
    )
    members = [
        {"name": "seq2seq", "params": {"latent_dim": 4, "epochs": 1, "batch_size": 64}},
        {"name": "pca"},
    ]
    ensemble = EnsembleDetector(members=members, trust="held_out", seed=0)
    ensemble.fit(windows)
    before = [w.copy() for w in ensemble.members[0].seq2seq.get_weights()]
    said: list[str] = []
    summary = ensemble.fit(windows, progress=said.append, epochs=1)
    assert "ensemble: rehearsing member 1 (seq2seq)" in said
    assert summary["trust"].startswith("held_out: rehearsed fitted on")
    after = ensemble.members[0].seq2seq.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(after, before, strict=True))
