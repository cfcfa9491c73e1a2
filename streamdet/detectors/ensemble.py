"""An ensemble: several registered detectors score the same instances on one scale.

Each member is fitted on the same normal instances and then scores them; those scores are
its calibration. A member's new score becomes a **tail probability** against its own
calibration: the share of calibration scores at least as high (with one added, so it is
never 0), and beyond the ``tail_fraction`` quantile an exponential tail fitted to the
calibration's excesses, so a score far beyond anything seen keeps getting less probable
instead of stopping at 1/(n+1). The ensemble's score is the strongest surprise among the
members, corrected for how many looked (Bonferroni, ``combine: min_p``, the default):
``-log10(min(1, k * min_i p_i))``; or, with ``combine: fisher``, Fisher's combination
``-log10 P[chi2(2k) >= -2 sum_i ln p_i]``, which needs the members to agree more than one to
be very surprised. So a deep member that sees a shape it cannot rebuild
and a classical one that sees a level it has never seen both raise the same score, and
neither's scale (squared errors, energies, residuals) dominates the other.

``feature_score`` and the expected values an alert shows come from the first member that
gives them. Members are saved whole in ``member-<k>/`` beside the ensemble's own metadata
(their files checked as any detector's), the calibration in ``arrays.npz``.

>>> rng = np.random.default_rng(0)
>>> t = np.arange(1200) / 5.0
>>> windows = sliding_windows(np.sin(t)[:, None] + 0.05 * rng.normal(size=(1200, 1)), 16)
>>> ensemble = EnsembleDetector(members=[{"name": "pca"}, {"name": "pca",
...                                       "params": {"n_components": 1}}])
>>> _ = ensemble.fit(windows[:1000])
>>> normal = ensemble.score(windows[1000:]).instance_score
>>> bent = windows[1100:1101].copy(); bent[0, 8] += 2.0
>>> bool(np.median(normal) < 1.0 < ensemble.score(bent).instance_score[0])
True
"""

from __future__ import annotations

import inspect
import math
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from streamdet.core.errors import InvalidInputError
from streamdet.core.progress import ProgressFn, silent
from streamdet.core.windows import sliding_windows
from streamdet.detectors.base import (
    ContractCase,
    Detector,
    Scores,
    model_version,
    register,
)

DEFAULT_MEMBERS: tuple[dict[str, Any], ...] = ({"name": "seq2seq"}, {"name": "pca"})
COMBINATIONS = ("min_p", "fisher")


def fisher_surprise(probabilities: np.ndarray) -> np.ndarray:
    """``-log10`` of Fisher's combined p-value of the k x n member ``probabilities``: the
    chi-square law with 2k degrees of freedom has the closed-form tail
    ``exp(-x/2) * sum_{j<k} (x/2)^j / j!``, computed in logs so it never underflows.

    >>> float(fisher_surprise(np.array([[1.0], [1.0]]))[0])
    0.0
    >>> agree, alone = fisher_surprise(np.array([[1e-3, 1e-3], [1e-3, 1.0]]))
    >>> bool(agree > alone > 0)
    True
    """
    k = len(probabilities)
    half = -np.log(np.maximum(probabilities, 1e-300)).sum(axis=0)  # x / 2
    j = np.arange(k, dtype=np.float64)[:, None]
    log_terms = (
        j * np.log(np.maximum(half, 1e-300))[None, :]
        - np.array([math.lgamma(v + 1.0) for v in range(k)])[:, None]
    )
    top = log_terms.max(axis=0)
    log_tail = -half + top + np.log(np.exp(log_terms - top).sum(axis=0))
    return np.maximum(-log_tail / math.log(10.0), 0.0)


def _member_specs(members: Any) -> list[dict[str, Any]]:
    specs = []
    for k, member in enumerate(members or DEFAULT_MEMBERS):
        if not isinstance(member, dict) or not isinstance(member.get("name"), str):
            raise InvalidInputError(
                f"ensemble: members[{k}] must be {{name: <detector>, params: {{...}}}}; "
                f"got {member!r}"
            )
        if member["name"] == "ensemble":
            raise InvalidInputError("ensemble: a member cannot be an ensemble")
        unknown = set(member) - {"name", "params"}
        if unknown:
            raise InvalidInputError(f"ensemble: members[{k}] has unknown keys {sorted(unknown)}")
        specs.append({"name": member["name"], "params": dict(member.get("params") or {})})
    if len(specs) < 2:
        raise InvalidInputError("ensemble: give at least two members")
    return specs


def tail_probability(
    calibration: np.ndarray, scores: np.ndarray, tail_fraction: float
) -> np.ndarray:
    """Per score, the probability of a calibration score at least as high (see the module's
    docstring); element-wise, so a score's probability never depends on its batch."""
    n = len(calibration)
    values = np.asarray(scores, np.float64)
    at_least = n - np.searchsorted(calibration, values, side="left")
    empirical = (1.0 + at_least) / (n + 1.0)
    start = math.floor((1.0 - tail_fraction) * (n - 1))
    threshold = calibration[start]
    excess = calibration[start:] - threshold
    scale = float(excess.mean()) if excess.size and excess.mean() > 0 else 1e-12
    share = (n - start) / (n + 1.0)
    beyond = share * np.exp(-(values - threshold) / scale)
    return np.where(values > threshold, np.minimum(empirical, beyond), empirical)


@register
class EnsembleDetector(Detector):
    """Members scoring side by side, combined as calibrated tail probabilities.

    Parameters
    ----------
    members
        ``[{name: <registered detector>, params: {...}}, ...]`` (at least two; each starts
        from its detector's tuned defaults). Default: seq2seq and pca. Members must score
        instances of the window's length (not VAE-LSTM, whose instances span several).
    tail_fraction
        Share of each member's calibration scores its exponential tail is fitted to.
    combine
        ``min_p`` (the strongest surprise, Bonferroni-corrected) or ``fisher``.
    seed
        Given to every member that takes a seed and was not given one.
    """

    name: ClassVar[str] = "ensemble"
    kinds: ClassVar[tuple[str, ...]] = ("timeseries", "tabular")
    data_type: ClassVar[str] = "time-series"

    def __init__(
        self,
        members: list[dict[str, Any]] | None = None,
        tail_fraction: float = 0.1,
        combine: str = "min_p",
        score_batch_size: int = 4096,
        seed: int | None = None,
    ) -> None:
        specs = _member_specs(members)
        if combine not in COMBINATIONS:
            raise InvalidInputError(
                f"ensemble: combine must be one of {', '.join(COMBINATIONS)}; got {combine!r}"
            )
        if not 0.0 < tail_fraction <= 0.5:
            raise InvalidInputError(
                f"ensemble: tail_fraction must be within (0, 0.5]; got {tail_fraction}"
            )
        super().__init__(
            members=specs, tail_fraction=tail_fraction, combine=combine,
            score_batch_size=score_batch_size, seed=seed,
        )  # fmt: skip
        self.members: list[Detector] = [self._build(spec, seed) for spec in specs]

    @staticmethod
    def _build(spec: dict[str, Any], seed: int | None) -> Detector:
        from streamdet.detectors import detector_class

        cls = detector_class(spec["name"])
        if cls.context_length({}, 2) != 2:
            raise InvalidInputError(
                f"ensemble: {spec['name']} scores instances longer than the window; it cannot "
                "be a member"
            )
        params = dict(spec["params"])
        if seed is not None and "seed" in inspect.signature(cls.__init__).parameters:
            params.setdefault("seed", seed)
        return cls.tuned(**params)

    @classmethod
    def contract_cases(cls) -> list[ContractCase]:
        rng = np.random.default_rng(0)
        t = np.arange(400, dtype=np.float32)[:, None]
        series = np.hstack([np.sin(t / 5), np.cos(t / 7)]) + 0.05 * rng.normal(size=(400, 2))
        members = [
            {"name": "seq2seq", "params": {"latent_dim": 8, "epochs": 2, "batch_size": 32}},
            {"name": "pca"},
        ]
        return [
            ContractCase(
                "seq2seq+pca", lambda: cls(members=members, seed=0), sliding_windows(series, 12)
            )
        ]

    # ---- fit and score ------------------------------------------------------------------
    def fit(
        self, X: np.ndarray, progress: ProgressFn | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Fit every member on ``X``, then keep each member's scores of ``X`` as its
        calibration (``epochs``, given by a retraining, goes to every member)."""
        started = time.perf_counter()
        array = np.asarray(X, dtype=np.float32)
        if array.ndim < 2 or len(array) < 10:
            raise InvalidInputError(
                f"ensemble: fit needs at least 10 instances; got shape {array.shape}"
            )
        say = progress or silent
        summaries = []
        arrays = {}
        for k, member in enumerate(self.members):
            say(f"ensemble: member {k + 1}/{len(self.members)} ({member.name})")
            summaries.append(member.fit(array, progress=progress, **kwargs))
            calibration = np.sort(member.score(array).instance_score.astype(np.float64))
            arrays[f"calibration_{k}"] = calibration
        self.arrays = arrays
        self.input_shape = tuple(array.shape[1:])
        self.mean = np.zeros(array.shape[-1], np.float32)
        self.std = np.ones(array.shape[-1], np.float32)
        self.training = {
            "model_version": model_version(self.name),
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "training_instances": len(array),
            "members": [
                {"name": m.name, "model_version": s.get("model_version")}
                for m, s in zip(self.members, summaries, strict=True)
            ],
            "seconds": round(time.perf_counter() - started, 3),
        }
        return self.training

    def member_probabilities(self, X: np.ndarray) -> tuple[np.ndarray, list[Scores]]:
        """(k x n tail probabilities, each member's scores) of the instances ``X``."""
        self._require_fitted("score()")
        assert self.input_shape is not None
        array = self._check_instances(X, self.input_shape)
        fraction = float(self.params["tail_fraction"])
        scored = [member.score(array) for member in self.members]
        probabilities = np.stack(
            [
                tail_probability(self.arrays[f"calibration_{k}"], s.instance_score, fraction)
                for k, s in enumerate(scored)
            ]
        )
        return probabilities, scored

    def score(self, X: np.ndarray, batch_size: int | None = None) -> Scores:
        """The members' combined surprise per instance; the first member's feature scores."""
        probabilities, scored = self.member_probabilities(X)
        if self.params["combine"] == "fisher":
            surprise = fisher_surprise(probabilities)
        else:
            combined = np.minimum(1.0, len(self.members) * probabilities.min(axis=0))
            surprise = -np.log10(np.maximum(combined, 1e-300))
        return Scores(surprise, scored[0].feature_score)

    def expected(self, X: np.ndarray) -> np.ndarray | None:
        for member in self.members:
            guess = member.expected(X)
            if guess is not None:
                return guess
        return None

    # ---- persistence --------------------------------------------------------------------
    def _write_state(self, target: Path) -> None:
        for k, member in enumerate(self.members):
            member.save(target / f"member-{k}")

    def _read_state(self, directory: Path) -> None:
        from streamdet.detectors import load_detector

        specs = self.params["members"]
        self.members = [
            load_detector(directory / f"member-{k}", expected_name=spec["name"])
            for k, spec in enumerate(specs)
        ]
        for k in range(len(specs)):
            if f"calibration_{k}" not in self.arrays:
                raise InvalidInputError(f"{directory}: no calibration for member {k}")
