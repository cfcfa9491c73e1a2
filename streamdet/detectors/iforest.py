"""Isolation forest: scikit-learn's trees, saved as arrays, scored without pickle.

scikit-learn grows the forest (``IsolationForest``); the fitted trees are then kept as a few
flat arrays (each node's feature, threshold, children, and each leaf's path length), so the
model is ``arrays.npz`` plus ``metadata.json`` like every classical detector here, and a
loaded model needs neither pickle nor scikit-learn's estimator. The score is scikit-learn's
anomaly score, ``2 ** (-mean path length / c(max_samples))`` in (0, 1] — higher is more
anomalous, about 0.5 for ordinary instances — computed node by node in NumPy, so an instance
gets the bit-identical score alone or in any batch. ``feature_score`` says, per feature, how
far that feature's splits narrowed the instance down on its way to a leaf (the log of the
training points before over after each split, averaged over the trees): the features that
set it apart.

Isolation scores are the usual reference on tabular outlier benchmarks (ADBench), and a
fast member beside a deep model in an ensemble.

>>> rng = np.random.default_rng(0)
>>> rows = rng.normal(size=(500, 3)).astype(np.float32)
>>> forest = IsolationForestDetector(seed=0)
>>> forest.fit(rows)["trees"]
100
>>> far = np.array([[5.0, 5.0, 5.0]], np.float32)
>>> bool(forest.score(far).instance_score[0] > forest.score(rows).instance_score.max())
True
>>> odd = np.array([[0.0, 6.0, 0.0]], np.float32)
>>> int(np.argmax(forest.score(odd).feature_score[0]))  # the second feature sets it apart
1
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np

from streamdet.core.errors import InvalidInputError
from streamdet.core.progress import ProgressFn, silent
from streamdet.core.windows import sliding_windows
from streamdet.detectors.base import ContractCase, Detector, Scores, model_version, register

EULER_GAMMA = 0.5772156649015329
# Rows scored at once: bounds the (rows, trees) node table walked in each step.
_ROWS_PER_CHUNK = 2048


def average_path_length(n: np.ndarray) -> np.ndarray:
    """c(n): the mean path length of an unsuccessful search in a binary search tree of ``n``
    points (Liu et al., 2008), what a leaf still holding ``n`` training points adds."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + EULER_GAMMA) - 2.0 * (n[big] - 1.0) / n[big]
    return out


@register
class IsolationForestDetector(Detector):
    """Isolation forest over rows or flattened windows.

    Parameters
    ----------
    trees
        Trees in the forest.
    max_samples
        Training instances drawn for each tree (at most the training set).
    max_training
        At most this many training instances (the newest) are used for the fit.
    seed
        Seed of the trees' draws.
    """

    name: ClassVar[str] = "iforest"
    kinds: ClassVar[tuple[str, ...]] = ("timeseries", "tabular")
    data_type: ClassVar[str] = "tabular"

    def __init__(
        self,
        trees: int = 100,
        max_samples: int = 256,
        max_training: int = 100_000,
        seed: int | None = None,
    ) -> None:
        if trees < 1:
            raise InvalidInputError(f"iforest: trees must be at least 1; got {trees}")
        if max_samples < 2:
            raise InvalidInputError(f"iforest: max_samples must be at least 2; got {max_samples}")
        if max_training < 2:
            raise InvalidInputError(f"iforest: max_training must be at least 2; got {max_training}")
        super().__init__(trees=trees, max_samples=max_samples, max_training=max_training, seed=seed)

    @classmethod
    def contract_cases(cls) -> list[ContractCase]:
        rng = np.random.default_rng(0)
        t = np.arange(400, dtype=np.float32)[:, None]
        series = np.hstack([np.sin(t / 5), np.cos(t / 7)]) + 0.05 * rng.normal(size=(400, 2))
        rows = rng.normal(size=(300, 4)).astype(np.float32)
        return [
            ContractCase("windows", lambda: cls(trees=20, seed=0), sliding_windows(series, 12)),
            ContractCase("rows", lambda: cls(trees=20, seed=0), rows),
        ]

    def fit(
        self,
        X: np.ndarray,
        progress: ProgressFn | None = None,
        epochs: int | None = None,
        verbose: bool = False,
    ) -> dict[str, Any]:
        """Grow the forest on (mostly) normal instances (``epochs`` is accepted and ignored:
        a retraining passes it to every detector)."""
        from sklearn.ensemble import IsolationForest

        started = time.perf_counter()
        array = self._training_instances(X, "rows or windows")
        self._fit_normalisation(array, normalise=False)
        data = array.reshape(len(array), -1)
        samples = min(self.params["max_samples"], len(data))
        forest = IsolationForest(
            n_estimators=self.params["trees"],
            max_samples=samples,
            random_state=self.params["seed"],
        ).fit(data)
        self.arrays = _flatten(forest.estimators_, forest.estimators_features_, data.shape[1])
        self.extra_state = {"max_samples": samples}
        (progress or silent)(
            f"iforest: {self.params['trees']} trees of {samples} instances each, "
            f"{len(self.arrays['feature'])} nodes"
        )
        self.training = {
            "model_version": model_version(self.name),
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "training_instances": len(data),
            "trees": self.params["trees"],
            "max_samples": samples,
            "seconds": round(time.perf_counter() - started, 3),
        }
        return self.training

    def score(self, X: np.ndarray, batch_size: int | None = None) -> Scores:
        """The anomaly score per instance, and per feature how far its splits narrowed the
        instance down (``feature_score``, the instance's shape)."""
        self._require_fitted("score()")
        assert self.input_shape is not None
        array = self._check_instances(X, self.input_shape)
        data = array.reshape(len(array), -1)
        instance = np.empty(len(data), np.float64)
        isolating = np.zeros(data.shape, np.float64)
        c_max = float(average_path_length(np.array([self.extra_state["max_samples"]]))[0])
        for start in range(0, len(data), _ROWS_PER_CHUNK):
            chunk = data[start : start + _ROWS_PER_CHUNK]
            depth, narrowed = self._walk(chunk)
            instance[start : start + len(chunk)] = 2.0 ** (-depth.mean(axis=1) / c_max)
            isolating[start : start + len(chunk)] = narrowed
        return Scores(instance, isolating.reshape(len(array), *self.input_shape))

    def _walk(self, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row down each tree: its path length (rows, trees), the leaf's c(n)
        included, and per feature how far that feature's splits narrowed it down
        (log of the training points before over after each split), averaged over trees."""
        feature = np.asarray(self.arrays["feature"])
        threshold = np.asarray(self.arrays["threshold"])
        left, right = np.asarray(self.arrays["left"]), np.asarray(self.arrays["right"])
        log_points = np.log(np.asarray(self.arrays["points"], np.float64))
        roots = np.asarray(self.arrays["roots"])
        nodes = np.tile(roots, (len(data), 1))
        narrowed = np.zeros(data.shape, np.float64)
        rows = np.arange(len(data))[:, None]
        inner = feature[nodes] >= 0
        while inner.any():
            split_on = np.where(inner, feature[nodes], 0)
            go_left = data[rows, split_on] <= threshold[nodes]
            after = np.where(inner, np.where(go_left, left[nodes], right[nodes]), nodes)
            gain = np.where(inner, log_points[nodes] - log_points[after], 0.0)
            np.add.at(narrowed, (np.broadcast_to(rows, split_on.shape), split_on), gain)
            nodes = after
            inner = feature[nodes] >= 0
        return np.asarray(self.arrays["path_length"])[nodes], narrowed / len(roots)


def _flatten(
    trees: list[Any], features: list[np.ndarray], n_features: int
) -> dict[str, np.ndarray]:
    """scikit-learn's fitted trees as one node table: per node the (original) feature it
    splits on (-1 at a leaf), its threshold, its children's indices in the table, and at a
    leaf its path length (depth plus c(training points left in it)). A tree sees a subset of
    the features only when it was given fewer than all of them (as scikit-learn indexes)."""
    feature, threshold, left, right, path, points, roots = [], [], [], [], [], [], []
    base = 0
    for estimator, used in zip(trees, features, strict=True):
        tree = estimator.tree_
        count = tree.node_count
        depth = np.zeros(count, np.float64)
        for node in range(count):  # children always come after their parent
            for child in (tree.children_left[node], tree.children_right[node]):
                if child >= 0:
                    depth[child] = depth[node] + 1
        leaf = tree.children_left < 0
        columns = np.asarray(used) if len(used) < n_features else np.arange(n_features)
        feature.append(np.where(leaf, -1, columns[np.maximum(tree.feature, 0)]))
        threshold.append(np.where(leaf, 0.0, tree.threshold))
        left.append(np.where(leaf, -1, tree.children_left + base))
        right.append(np.where(leaf, -1, tree.children_right + base))
        path.append(np.where(leaf, depth + average_path_length(tree.n_node_samples), 0.0))
        points.append(tree.n_node_samples)
        roots.append(base)
        base += count
    return {
        "feature": np.concatenate(feature).astype(np.int64),
        "threshold": np.concatenate(threshold).astype(np.float64),
        "left": np.concatenate(left).astype(np.int64),
        "right": np.concatenate(right).astype(np.int64),
        "path_length": np.concatenate(path),
        "points": np.concatenate(points).astype(np.float64),
        "roots": np.asarray(roots, np.int64),
    }
