"""White-box evasion attacks on a Keras classifier, in TensorFlow: FGSM, PGD and C&W L2.

Every attack takes ``logits``, a callable from a batch of inputs in [0, 1] to the
classifier's logits, the inputs and their true labels, and returns adversarial inputs of the
same shape, still in [0, 1]. The attacks are untargeted: they push each input away from its
true class.

>>> import numpy as np, keras
>>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
>>> model.layers[0].set_weights([np.array([[1.0, -1.0], [0.0, 0.0]]), np.array([-0.3, 0.3])])
>>> x = np.array([[0.6, 0.5]], "float32")          # class 0: logits 0.3 vs -0.3
>>> adversarial = fgsm(model, x, np.array([0]), eps=0.7)
>>> adversarial.round(2).tolist(), int(model(adversarial).numpy().argmax())
([[0.0, 0.5]], 1)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from streamdet.core.tensorflow import load_tensorflow

_, tf = load_tensorflow()

Logits = Callable[[tf.Tensor], tf.Tensor]


def _batches(x: np.ndarray, y: np.ndarray, size: int) -> list[tuple[tf.Tensor, tf.Tensor]]:
    return [
        (tf.constant(x[i : i + size], tf.float32), tf.constant(y[i : i + size], tf.int64))
        for i in range(0, len(x), size)
    ]


def _loss_gradient(logits: Logits, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits(x))
    return tape.gradient(loss, x)


def fgsm(
    logits: Logits, x: np.ndarray, y: np.ndarray, eps: float, batch_size: int = 500
) -> np.ndarray:
    """Fast Gradient Sign Method (Goodfellow et al., 2015): one step of size ``eps``."""
    step = tf.function(
        lambda xb, yb: tf.clip_by_value(
            xb + eps * tf.sign(_loss_gradient(logits, xb, yb)), 0.0, 1.0
        )
    )
    return np.concatenate([step(xb, yb).numpy() for xb, yb in _batches(x, y, batch_size)])


def pgd(
    logits: Logits,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    step_size: float | None = None,
    iterations: int = 40,
    seed: int = 0,
    batch_size: int = 500,
) -> np.ndarray:
    """Projected Gradient Descent (Madry et al., 2018) in the L∞ ball of radius ``eps``,
    from a random start. The default step, 2.5 · eps / iterations, lets the walk cross the
    whole ball (Madry's MNIST setting: eps 0.3, 40 steps of 0.01 ≈ 0.019)."""
    if step_size is None:
        step_size = 2.5 * eps / iterations

    @tf.function
    def attack(xb: tf.Tensor, yb: tf.Tensor, start_seed: tf.Tensor) -> tf.Tensor:
        noise = tf.random.stateless_uniform(tf.shape(xb), [start_seed, 17], -eps, eps)
        adv = tf.clip_by_value(xb + noise, 0.0, 1.0)
        for _ in tf.range(iterations):
            adv = adv + step_size * tf.sign(_loss_gradient(logits, adv, yb))
            adv = tf.clip_by_value(tf.clip_by_value(adv, xb - eps, xb + eps), 0.0, 1.0)
        return adv

    parts = [
        attack(xb, yb, tf.constant(seed + i, tf.int64)).numpy()
        for i, (xb, yb) in enumerate(_batches(x, y, batch_size))
    ]
    return np.concatenate(parts)


def carlini_wagner_l2(
    logits: Logits,
    x: np.ndarray,
    y: np.ndarray,
    confidence: float = 0.0,
    initial_const: float = 1.0,
    binary_steps: int = 5,
    iterations: int = 100,
    learning_rate: float = 0.05,
    batch_size: int = 500,
) -> np.ndarray:
    """Carlini & Wagner's L2 attack (2017): the smallest L2 change that flips the class.

    Optimises in tanh space (so the image stays in [0, 1]) with Adam the objective
    ``‖x' - x‖² + c · max(Z_y - max_{i≠y} Z_i + confidence, 0)``, and binary-searches each
    input's constant ``c``. Inputs never flipped are returned unchanged.
    """
    epsilon = 1e-6

    @tf.function
    def run_step(
        w: tf.Tensor,
        m: tf.Tensor,
        v: tf.Tensor,
        t: tf.Tensor,
        xb: tf.Tensor,
        yb: tf.Tensor,
        const: tf.Tensor,
    ) -> tuple[tf.Tensor, ...]:
        axes = list(range(1, len(xb.shape)))
        with tf.GradientTape() as tape:
            tape.watch(w)
            adv = 0.5 * (tf.tanh(w) + 1.0)
            z = logits(adv)
            classes = tf.shape(z)[-1]
            true_mask = tf.one_hot(yb, classes)
            true_logit = tf.reduce_sum(z * true_mask, axis=-1)
            other_logit = tf.reduce_max(z - 1e9 * true_mask, axis=-1)
            margin = tf.maximum(true_logit - other_logit + confidence, 0.0)
            distance = tf.reduce_sum(tf.square(adv - xb), axis=axes)
            loss = tf.reduce_sum(distance + const * margin)
        grad = tape.gradient(loss, w)
        # Adam, written out so every input keeps its own state across iterations.
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * tf.square(grad)
        m_hat = m / (1.0 - 0.9**t)
        v_hat = v / (1.0 - 0.999**t)
        w = w - learning_rate * m_hat / (tf.sqrt(v_hat) + 1e-8)
        flipped = tf.argmax(z, axis=-1) != yb
        if confidence > 0:
            flipped = flipped & (other_logit - true_logit >= confidence)
        return w, m, v, adv, distance, flipped

    results = []
    for xb, yb in _batches(x, y, batch_size):
        n = int(xb.shape[0])
        lower = np.zeros(n)
        upper = np.full(n, np.inf)
        const = np.full(n, initial_const)
        best = xb.numpy().copy()
        best_distance = np.full(n, np.inf)
        w_start = tf.atanh(tf.clip_by_value(xb * 2.0 - 1.0, -1 + epsilon, 1 - epsilon))
        for _ in range(binary_steps):
            w, m, v = w_start, tf.zeros_like(xb), tf.zeros_like(xb)
            succeeded = np.zeros(n, bool)
            const_t = tf.constant(const, tf.float32)
            for t in range(1, iterations + 1):
                w, m, v, adv, distance, flipped = run_step(
                    w, m, v, tf.constant(float(t)), xb, yb, const_t
                )
                flipped_np = flipped.numpy()
                distance_np = distance.numpy()
                better = flipped_np & (distance_np < best_distance)
                if better.any():
                    best[better] = adv.numpy()[better]
                    best_distance[better] = distance_np[better]
                succeeded |= flipped_np
            # Binary search on c: smaller where the attack worked, larger where it did not.
            upper = np.where(succeeded, np.minimum(upper, const), upper)
            lower = np.where(succeeded, lower, np.maximum(lower, const))
            const = np.where(np.isfinite(upper), (lower + upper) / 2.0, const * 10.0)
        results.append(best)
    return np.concatenate(results)
