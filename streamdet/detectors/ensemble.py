"""An ensemble: several registered detectors score the same instances on one scale.

Each member's new score becomes a **tail probability** against its own calibration scores:
the share of calibration scores at least as high (with one added, so it is never 0), and
beyond the ``tail_fraction`` quantile an exponential tail fitted to the calibration's
excesses, so a score far beyond anything seen keeps getting less probable instead of
stopping at 1/(n+1). The ensemble's score is the strongest surprise among the members,
weighted by how far each is trusted (weighted Bonferroni, ``combine: min_p``, the default):
``-log10(min(1, min_i p_i / w_i))`` with the weights summing to 1 (equal weights give
``k * min_i p_i``); or, with ``combine: fisher``, Fisher's combination
``-log10 P[chi2(2k) >= -2 sum_i ln p_i]``, which needs the members to agree more than one to
be very surprised. So a deep member that sees a shape it cannot rebuild and a classical one
that sees a level it has never seen both raise the same score, and neither's scale (squared
errors, energies, residuals) dominates the other.

**Which member to trust can be learnt per model, without labels** (``trust: held_out``), in
a rehearsal before the fit. A fresh copy of each member is fitted on the
training instances less some blocks spread over all of them (every
``1/holdout_fraction``-th block, so every season and the newest data are in both parts;
windows that share events with a held-out block are left out) and calibrated on its own
training scores, as the member itself will be. The share of the held-out windows — normal,
and never seen by it — that the copy calls surprising at ``trust_level`` is its false-alarm
rate on unseen data, against the ``trust_level`` it promises. A member that rebuilds its
training windows much better than new ones, or whose scores wander, would page too readily
on live data; it gets a weight falling with its excess false alarms, and members that keep
their promise share the weight equally. Then every member is fitted on all the instances
and calibrated on its training scores, exactly as without the rehearsal (which costs one
more fit of each member, on about 70 % of the data). With too few instances to hold out, or
with ``trust: equal`` (the default: on NAB's development files the learnt weights alerted no
better, see docs/BENCHMARKS.md), every member is trusted alike.

**Members may look at the window at their own scale** (multi-scale windows): a member
spec's ``last: L`` gives it only the window's newest L steps (fast anomalies), ``pool: k``
averages every k consecutive steps (slow ones, over a longer topic window at the members'
cost of a shorter one).

``feature_score`` and the expected values an alert shows come from the first member that
gives them at the window's own scale. Members are saved whole in ``member-<k>/`` beside the
ensemble's own metadata (their files checked as any detector's), the calibration in
``arrays.npz``, the weights and what they were learnt from in the training metadata.

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
import tempfile
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
TRUST = ("held_out", "equal")
# Fewer held-out instances than this: too few to learn trust from.
MIN_HELD_OUT = 20
# Held-out blocks are this many window lengths long (20 instances for rows).
BLOCK_WINDOWS = 4


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
        unknown = set(member) - {"name", "params", "last", "pool"}
        if unknown:
            raise InvalidInputError(
                f"ensemble: members[{k}] has unknown keys {sorted(unknown)}; a member takes "
                "name, params, last, pool"
            )
        spec: dict[str, Any] = {"name": member["name"], "params": dict(member.get("params") or {})}
        for key, least in (("last", 2), ("pool", 1)):
            if key in member:
                value = member[key]
                if not isinstance(value, int) or isinstance(value, bool) or value < least:
                    raise InvalidInputError(
                        f"ensemble: members[{k}].{key} must be an integer >= {least}; got {value!r}"
                    )
                spec[key] = value
        specs.append(spec)
    if len(specs) < 2:
        raise InvalidInputError("ensemble: give at least two members")
    return specs


def member_view(spec: dict[str, Any], X: np.ndarray) -> np.ndarray:
    """The instances as ``spec``'s member sees them: the newest ``last`` steps of each
    window, then the means of ``pool`` consecutive steps (the oldest steps that do not fill
    a pool are left out). Whole instances when the spec sets neither."""
    last, pool = spec.get("last"), spec.get("pool", 1)
    if last is None and pool == 1:
        return X
    if X.ndim != 3:
        raise InvalidInputError(
            f"ensemble: a member's last/pool need time windows (batch, steps, features); "
            f"got instances of shape {X.shape[1:]}"
        )
    steps = X.shape[1] if last is None else last
    steps -= steps % pool
    if steps < 2 * pool or steps > X.shape[1]:
        raise InvalidInputError(
            f"ensemble: a member with last={last}, pool={pool} needs windows of at least "
            f"{max(steps, 2 * pool)} steps; got {X.shape[1]}"
        )
    view = X[:, X.shape[1] - steps :, :]
    if pool > 1:
        view = view.reshape(len(X), steps // pool, pool, X.shape[2]).mean(axis=2)
    return np.ascontiguousarray(view, dtype=np.float32)


def on_window_steps(spec: dict[str, Any], feature_score: np.ndarray, steps: int) -> np.ndarray:
    """A member's feature scores of its view laid back on the window's ``steps``: a pooled
    step's score shared by the steps it averaged, steps older than the view scored 0."""
    if _whole(spec):
        return feature_score
    pool = spec.get("pool", 1)
    spread = np.repeat(feature_score, pool, axis=1) / pool
    out = np.zeros((len(feature_score), steps, *feature_score.shape[2:]), spread.dtype)
    out[:, steps - spread.shape[1] :] = spread
    return out


def trust_weights(false_alarms: np.ndarray, expected: float) -> np.ndarray:
    """Weights summing to 1 from each member's false alarms on held-out normal instances
    (``expected`` of them would keep its promise): inversely to the excess, so members
    within their promise share alike and one that misfires 5x as often counts 5x less.
    Counts get one added (a rare event in a short rehearsal is not a verdict).

    >>> trust_weights(np.array([2, 3]), 3.0).tolist()
    [0.5, 0.5]
    >>> [round(float(w), 3) for w in trust_weights(np.array([3, 19]), 3.0)]
    [0.833, 0.167]
    """
    excess = np.maximum((np.asarray(false_alarms, np.float64) + 1.0) / (expected + 1.0), 1.0)
    weights = 1.0 / excess
    return weights / weights.sum()


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
        ``min_p`` (the strongest surprise, weighted Bonferroni) or ``fisher``.
    trust
        ``equal`` or ``held_out`` (weights learnt from each member's false alarms on
        held-out instances, see the module's docstring).
    holdout_fraction
        About this share of the training instances is held out from the members' fit, in
        blocks, when ``trust`` is ``held_out``.
    trust_level
        The tail probability below which the rehearsal counts a member's false alarm.
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
        trust: str = "equal",
        holdout_fraction: float = 0.2,
        trust_level: float = 0.05,
        score_batch_size: int = 4096,
        seed: int | None = None,
    ) -> None:
        specs = _member_specs(members)
        if combine not in COMBINATIONS:
            raise InvalidInputError(
                f"ensemble: combine must be one of {', '.join(COMBINATIONS)}; got {combine!r}"
            )
        if trust not in TRUST:
            raise InvalidInputError(
                f"ensemble: trust must be one of {', '.join(TRUST)}; got {trust!r}"
            )
        for key, value, top in (
            ("tail_fraction", tail_fraction, 0.5),
            ("holdout_fraction", holdout_fraction, 0.5),
            ("trust_level", trust_level, 0.5),
        ):
            if not 0.0 < value <= top:
                raise InvalidInputError(f"ensemble: {key} must be within (0, {top}]; got {value}")
        super().__init__(
            members=specs, tail_fraction=tail_fraction, combine=combine, trust=trust,
            holdout_fraction=holdout_fraction, trust_level=trust_level,
            score_batch_size=score_batch_size, seed=seed,
        )  # fmt: skip
        self.weights = np.full(len(specs), 1.0 / len(specs))
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
        scales = [{"name": "pca", "last": 6}, {"name": "iforest", "pool": 3}]
        return [
            ContractCase(
                "seq2seq+pca", lambda: cls(members=members, seed=0), sliding_windows(series, 12)
            ),
            ContractCase(
                "pca+iforest, two scales, learnt trust",
                lambda: cls(members=scales, trust="held_out", seed=0),
                sliding_windows(series, 12),
            ),
        ]

    # ---- fit and score ------------------------------------------------------------------
    def fit(
        self, X: np.ndarray, progress: ProgressFn | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Fit every member, calibrate it and learn how far to trust it (see the module's
        docstring; ``epochs``, given by a retraining, goes to every member)."""
        started = time.perf_counter()
        array = np.asarray(X, dtype=np.float32)
        if array.ndim < 2 or len(array) < 10:
            raise InvalidInputError(
                f"ensemble: fit needs at least 10 instances; got shape {array.shape}"
            )
        specs = self.params["members"]
        level = float(self.params["trust_level"])
        for spec in specs:
            member_view(spec, array[:1])  # a view the windows cannot give fails before a fit
        fitted, rehearse = self._split(array)
        say = progress or silent
        false_alarms = None
        self.weights = np.full(len(specs), 1.0 / len(specs))
        if rehearse is not None:
            false_alarms = np.array(
                [
                    self._rehearse(k, spec, fitted, rehearse, progress, **kwargs)
                    for k, spec in enumerate(specs)
                ]
            )
            self.weights = trust_weights(false_alarms, level * len(rehearse))
        summaries = []
        arrays = {}
        for k, (member, spec) in enumerate(zip(self.members, specs, strict=True)):
            say(f"ensemble: member {k + 1}/{len(self.members)} ({member.name})")
            summaries.append(member.fit(member_view(spec, array), progress=progress, **kwargs))
            arrays[f"calibration_{k}"] = _sorted_scores(member, spec, array)
        arrays["weights"] = self.weights.copy()
        self.arrays = arrays
        self.input_shape = tuple(array.shape[1:])
        self.mean = np.zeros(array.shape[-1], np.float32)
        self.std = np.ones(array.shape[-1], np.float32)
        members = []
        for k, (member, summary) in enumerate(zip(self.members, summaries, strict=True)):
            entry = {"name": member.name, "model_version": summary.get("model_version")}
            entry["weight"] = round(float(self.weights[k]), 4)
            if false_alarms is not None:
                entry["held_out_false_alarms"] = int(false_alarms[k])
            members.append(entry)
        self.training = {
            "model_version": model_version(self.name),
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "training_instances": len(array),
            "members": members,
            "trust": (
                "equal"
                if rehearse is None
                else f"held_out: rehearsed fitted on {len(fitted)}, held out {len(rehearse)} "
                f"(expected {level * len(rehearse):.1f} false alarms each)"
            ),
            "seconds": round(time.perf_counter() - started, 3),
        }
        return self.training

    def _rehearse(
        self,
        k: int,
        spec: dict[str, Any],
        fitted: np.ndarray,
        held_out: np.ndarray,
        progress: ProgressFn | None,
        **kwargs: Any,
    ) -> int:
        """A fresh copy of member ``k`` fitted on ``fitted`` and calibrated on its own
        training scores: how many ``held_out`` instances it calls surprising at
        ``trust_level`` (the member itself is then fitted on everything, untouched by this)."""
        (progress or silent)(f"ensemble: rehearsing member {k + 1} ({spec['name']})")
        member = self.members[k]
        if member.fitted and type(member).warm_start:
            # The member will train on from its state: so does its stand-in, from a copy.
            from streamdet.detectors import load_detector

            with tempfile.TemporaryDirectory(prefix="streamdet-rehearsal-") as folder:
                stand_in = load_detector(member.save(Path(folder) / "member"))
        else:
            stand_in = self._build(spec, self.params.get("seed"))
        stand_in.fit(member_view(spec, fitted), progress=progress, **kwargs)
        own = _sorted_scores(stand_in, spec, fitted)
        unseen = stand_in.score(member_view(spec, held_out)).instance_score
        probability = tail_probability(own, unseen, float(self.params["tail_fraction"]))
        return int((probability < float(self.params["trust_level"])).sum())

    def _split(self, array: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(fit, rehearse): every ``1/holdout_fraction``-th block held out, and the windows
        that share events with a held-out block left out of the fit. With ``trust: equal``,
        or too few instances, everything is fitted and nothing rehearsed."""
        if self.params["trust"] == "equal":
            return array, None
        gap = array.shape[1] - 1 if array.ndim == 3 else 0
        block = max(BLOCK_WINDOWS * gap, MIN_HELD_OUT)
        every = max(2, round(1.0 / float(self.params["holdout_fraction"])))
        position = np.arange(len(array))
        held = (position // block) % every == every - 1
        starts = np.flatnonzero(held & ~np.roll(held, 1))
        ends = np.flatnonzero(held & ~np.roll(held, -1))
        near = np.zeros(len(array), bool)
        for start, end in zip(starts, ends, strict=True):
            near[max(0, start - gap) : end + gap + 1] = True
        fit = ~near
        if held.sum() < MIN_HELD_OUT or fit.sum() < 10:
            return array, None
        return array[fit], array[held]

    def member_probabilities(self, X: np.ndarray) -> tuple[np.ndarray, list[Scores]]:
        """(k x n tail probabilities, each member's scores) of the instances ``X``."""
        self._require_fitted("score()")
        assert self.input_shape is not None
        array = self._check_instances(X, self.input_shape)
        fraction = float(self.params["tail_fraction"])
        scored = [
            member.score(member_view(spec, array))
            for member, spec in zip(self.members, self.params["members"], strict=True)
        ]
        probabilities = np.stack(
            [
                tail_probability(self.arrays[f"calibration_{k}"], s.instance_score, fraction)
                for k, s in enumerate(scored)
            ]
        )
        return probabilities, scored

    def score(self, X: np.ndarray, batch_size: int | None = None) -> Scores:
        """The members' combined surprise per instance; the first member's feature scores
        (laid on the window's steps)."""
        probabilities, scored = self.member_probabilities(X)
        assert self.input_shape is not None
        if self.params["combine"] == "fisher":
            surprise = fisher_surprise(probabilities)
        else:
            weighted = probabilities / self.weights[:, None]
            surprise = -np.log10(np.maximum(np.minimum(1.0, weighted.min(axis=0)), 1e-300))
        first = on_window_steps(
            self.params["members"][0], scored[0].feature_score, self.input_shape[0]
        )
        return Scores(surprise, first)

    def expected(self, X: np.ndarray) -> np.ndarray | None:
        for member, spec in zip(self.members, self.params["members"], strict=True):
            guess = member.expected(X) if _whole(spec) else None
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
        # Saved before trust was learnt: every member alike, as it was scored then.
        weights = self.arrays.get("weights", np.full(len(specs), 1.0 / len(specs)))
        if len(weights) != len(specs) or not np.all(weights > 0):
            raise InvalidInputError(
                f"{directory}: member weights {weights!r} do not fit {len(specs)} members"
            )
        self.weights = np.asarray(weights, np.float64)


def _whole(spec: dict[str, Any]) -> bool:
    """Whether a member sees whole windows (its feature scores and expected values line up
    with the window's steps)."""
    return spec.get("last") is None and spec.get("pool", 1) == 1


def _sorted_scores(member: Detector, spec: dict[str, Any], X: np.ndarray) -> np.ndarray:
    """A member's scores of the instances ``X`` (through its view), sorted: a calibration."""
    return np.sort(member.score(member_view(spec, X)).instance_score.astype(np.float64))
