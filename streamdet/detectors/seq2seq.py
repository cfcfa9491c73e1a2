"""Seq2Seq outlier detector: BiLSTM encoder, LSTM decoder and a threshold-estimator net.

The encoder's final states start the decoder. A threshold net on the decoder's hidden states
learns, end to end with the autoencoder, to predict the squared reconstruction error it
expects at each step. The feature score is

    squared error - estimated threshold - static threshold

so the threshold follows the state of the sequence: a spike in an already noisy stretch
counts for less than the same spike in a quiet one. ``is_outlier`` is ``score > 0``.

At inference the decoder runs autoregressively (each step consumes its own previous
prediction) inside one compiled ``tf.function``.

The class takes alibi-detect's ``OutlierSeq2Seq`` arguments (``OutlierSeq2Seq`` is this class):
``n_features, seq_len`` first, then ``threshold``, ``seq2seq``, ``threshold_net``,
``latent_dim``, ``output_activation``, ``beta``; ``fit`` takes ``loss_fn``, ``optimizer``,
``epochs``, ``batch_size``, ``verbose``, ``log_metric``. Input of shape
``(batch, seq_len, n_features)`` is scored per window; ``(batch, n_features)`` is one series
scored per row (time step), cut into consecutive windows of ``seq_len``.

>>> import numpy as np
>>> t = np.arange(600, dtype="float32")
>>> X = np.sin(t / 5)[:, None]
>>> od = OutlierSeq2Seq(1, 20, threshold=None, latent_dim=8, seed=0)
>>> history = od.fit(X, epochs=1, verbose=False)
>>> od.infer_threshold(X, threshold_perc=99)
>>> preds = od.predict(X[:40])
>>> preds["data"]["instance_score"].shape, preds["data"]["feature_score"].shape
((40,), (40, 1))
>>> od.predict(np.stack([X[:20], X[20:40]]))["data"]["instance_score"].shape
(2,)
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

import numpy as np

from streamdet.core.errors import InvalidInputError
from streamdet.core.progress import ProgressFn
from streamdet.core.windows import sliding_windows
from streamdet.detectors.base import ContractCase, Scores, holdout_split, register
from streamdet.detectors.keras_base import (
    EpochSelection,
    KerasDetector,
    call_loss,
    check_log_metric,
    fit_progress,
    keras,
    resolve_optimizer,
    score_at_verified_shapes,
    set_seed,
    tf,
    train_epochs,
)
from streamdet.detectors.layers import apply_network, check_network
from streamdet.thresholds import percentile_threshold, top_percent_mean

OutlierType = Literal["instance", "feature"]
# The parts of a Seq2Seq model the detector drives step by step; a model passed as
# ``seq2seq=`` (e.g. another detector's ``.seq2seq``) must have them.
MODEL_LAYERS = (
    "encoder",
    "encoder_h",
    "encoder_c",
    "decoder",
    "reconstruction",
    "threshold_net",
    "threshold_estimate",
)
DEFAULT_LATENT_DIM = 64


def default_threshold_net(seq_len: int, latent_dim: int, hidden: int) -> keras.Model:
    """One ReLU layer over the decoder's hidden states (seq_len, latent_dim)."""
    return keras.Sequential(
        [keras.Input((seq_len, latent_dim)), keras.layers.Dense(hidden, activation="relu")]
    )


def build_seq2seq(
    seq_len: int,
    n_features: int,
    latent_dim: int,
    output_activation: str,
    threshold_net: keras.Model,
) -> keras.Model:
    """The training graph: ([x, shifted x]) -> (reconstruction, estimated threshold).

    ``threshold_net`` maps the decoder's hidden states (batch, seq_len, latent_dim) to any
    width; a linear layer on top gives one threshold per feature.
    """
    if latent_dim < 2 or latent_dim % 2:
        raise InvalidInputError(f"latent_dim must be an even number >= 2; got {latent_dim}")
    series = keras.Input((seq_len, n_features), name="series")
    shifted = keras.Input((seq_len, n_features), name="decoder_input")
    _, fwd_h, fwd_c, bwd_h, bwd_c = keras.layers.Bidirectional(
        keras.layers.LSTM(latent_dim // 2, return_state=True), name="encoder"
    )(series)
    state_h = keras.layers.Concatenate(name="encoder_h")([fwd_h, bwd_h])
    state_c = keras.layers.Concatenate(name="encoder_c")([fwd_c, bwd_c])
    hidden, _, _ = keras.layers.LSTM(
        latent_dim, return_sequences=True, return_state=True, name="decoder"
    )(shifted, initial_state=[state_h, state_c])
    reconstruction = keras.layers.Dense(
        n_features, activation=output_activation, name="reconstruction"
    )(hidden)
    # The user's net is wrapped so the detector finds it by name, whatever it is called.
    named = keras.Sequential([threshold_net], name="threshold_net")
    estimated = apply_network(
        named,
        hidden,
        f"seq2seq: threshold_net must accept the decoder's hidden states of shape "
        f"(batch, {seq_len}, {latent_dim})",
    )
    threshold = keras.layers.Dense(n_features, name="threshold_estimate")(estimated)
    return keras.Model([series, shifted], [reconstruction, threshold], name="seq2seq")


def _shift_right(x: tf.Tensor) -> tf.Tensor:
    """Teacher forcing input: the series delayed by one step, starting from zeros."""
    return tf.concat([tf.zeros_like(x[:, :1]), x[:, :-1]], axis=1)


def _mse(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.square(y_true - y_pred))


@register
class Seq2SeqDetector(KerasDetector):
    """BiLSTM/LSTM sequence-to-sequence outlier detector with a learned threshold.

    Parameters
    ----------
    n_features
        Features per time step. Optional: taken from the data at ``fit``; when given, data
        with another number of features is refused.
    seq_len
        Window length. Needed to cut a series ``(T, n_features)`` into windows; taken from
        the data when ``fit`` gets windows ``(batch, seq_len, n_features)``.
    threshold
        Static threshold: a number or one per feature (``infer_threshold`` sets it).
    seq2seq
        A ready (e.g. pretrained) model: another detector's ``.seq2seq``, or any Keras model
        with the layers named in ``MODEL_LAYERS``. Its data scale is used as is (no
        normalisation).
    threshold_net
        Keras network over the decoder's hidden states ``(seq_len, latent_dim)``; a linear
        layer to ``n_features`` outputs is added on top. Default: one ReLU layer of
        ``threshold_hidden`` units.
    latent_dim
        Size of the encoder state (``latent_dim / 2`` per direction) and the decoder
        (default 64, or the ``threshold_net``'s input width).
    output_activation
        Activation of the reconstruction layer (default linear, for standardised data).
    beta
        Weight of the threshold net's loss next to the reconstruction loss.

    Keyword-only (streamdet):

    threshold_hidden
        Width of the default threshold net's layer (default ``latent_dim // 2``).
    epochs, batch_size, learning_rate
        Default training schedule (``fit`` may override each; Adam clipped at norm 1).
    stride
        Step between windows when ``fit`` cuts a long series.
    normalise
        Standardise each feature with the training mean and std (stored with the model).
    outlier_perc, outlier_type
        Defaults of ``predict``: an instance is scored by the mean of its top
        ``outlier_perc`` % feature scores; ``instance`` flags instances, ``feature`` cells.
    score_batch_size
        The reference scoring shape: every window's score is the one a forward pass of
        exactly this many rows gives it, whatever batch it came in (smaller and larger
        shapes are used only where they agree bit for bit; see ``VerifiedShapes``).
    jit_compile
        Compile the autoregressive decoder with XLA.
    teacher_forcing
        Train the decoder on the true previous value instead of its own prediction. Off by
        default: inference is autoregressive, and a decoder trained with teacher forcing
        learns one-step prediction, then drifts when it must feed on itself (on ECG5000
        this cost about 0.08 AUC).
    validation_fraction, patience
        Hold out the last ``validation_fraction`` of the training windows, measure the
        training loss on them after every epoch and keep the weights of the best epoch
        (``patience`` > 0: stop after that many epochs without a new best). Normal data
        only, so the number of epochs is chosen without labels. 0 (default): train every
        epoch on every window, keep the last weights.
    data_type
        Recorded in the prediction's ``meta`` (default ``time-series``).
    """

    name: ClassVar[str] = "seq2seq"
    kinds: ClassVar[tuple[str, ...]] = ("timeseries",)
    warm_start: ClassVar[bool] = True
    # A training that ends on a bad epoch (the loss of free-running decoding jumps by 2x
    # from one epoch to the next on ECG5000) would serve that epoch for a whole retrain
    # period; keeping the best epoch on the newest tenth of the windows avoids it.
    tuned_params: ClassVar[dict[str, Any]] = {"validation_fraction": 0.1}

    @classmethod
    def context_length(cls, params: dict[str, Any], window_seq_len: int) -> int:
        return int(params.get("seq_len") or window_seq_len)

    def __init__(
        self,
        n_features: int | None = None,
        seq_len: int | None = None,
        threshold: float | np.ndarray | None = None,
        seq2seq: keras.Model | None = None,
        threshold_net: keras.Model | None = None,
        latent_dim: int | None = None,
        output_activation: str | None = None,
        beta: float = 1.0,
        *,
        threshold_hidden: int | None = None,
        epochs: int = 20,
        batch_size: int = 64,
        learning_rate: float = 1e-3,
        stride: int = 1,
        normalise: bool = True,
        outlier_perc: float = 100.0,
        outlier_type: OutlierType = "instance",
        score_batch_size: int = 64,
        jit_compile: bool = True,
        teacher_forcing: bool = False,
        validation_fraction: float = 0.0,
        patience: int = 0,
        data_type: str | None = None,
        seed: int | None = None,
    ) -> None:
        if outlier_type not in ("instance", "feature"):
            raise InvalidInputError(
                f"outlier_type must be 'instance' or 'feature'; got {outlier_type!r}"
            )
        check_network(threshold_net, "threshold_net")
        if not 0.0 <= validation_fraction < 1.0:
            raise InvalidInputError(
                f"validation_fraction must be in [0, 1); got {validation_fraction}"
            )
        if patience < 0:
            raise InvalidInputError(f"patience must be >= 0; got {patience}")
        if seq2seq is not None:
            n_features, seq_len, latent_dim = self._check_model(seq2seq, n_features, seq_len)
            normalise = False
        if latent_dim is None and threshold_net is not None:
            latent_dim = _input_width(threshold_net)
        latent_dim = int(latent_dim or DEFAULT_LATENT_DIM)
        super().__init__(
            n_features=n_features,
            seq_len=seq_len,
            latent_dim=latent_dim,
            output_activation=output_activation or "linear",
            beta=beta,
            threshold_hidden=threshold_hidden or max(latent_dim // 2, 1),
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            stride=stride,
            normalise=normalise,
            outlier_perc=outlier_perc,
            outlier_type=outlier_type,
            score_batch_size=score_batch_size,
            jit_compile=jit_compile,
            teacher_forcing=teacher_forcing,
            validation_fraction=float(validation_fraction),
            patience=int(patience),
            data_type=data_type,
            seed=seed,
        )
        self._set_threshold(threshold)
        self.model: keras.Model | None = None
        self._threshold_net = threshold_net
        self._decode: Any = None
        self._free_running: Any = None
        if seq2seq is not None:
            self.model = seq2seq
            self.input_shape = (int(seq_len), int(n_features))  # type: ignore[arg-type]
            self.mean = np.zeros(int(n_features), np.float32)  # type: ignore[arg-type]
            self.std = np.ones(int(n_features), np.float32)  # type: ignore[arg-type]
            self._build_decoder()

    @classmethod
    def contract_cases(cls) -> list[ContractCase]:
        t = np.arange(160, dtype=np.float32)[:, None]
        series = np.hstack([np.sin(t / 4), np.cos(t / 7)]) + 0.05 * np.sin(3.7 * t)
        windows = sliding_windows(series, 8, 2)

        def alibi_way() -> Seq2SeqDetector:
            threshold_net = keras.Sequential(
                [keras.Input((8, 6)), keras.layers.Dense(4, activation=tf.nn.relu)]
            )
            return cls(
                2, 8, threshold=None, threshold_net=threshold_net, latent_dim=6, epochs=1, seed=0
            )

        return [
            ContractCase("native", lambda: cls(seq_len=8, latent_dim=4, epochs=1, seed=0), windows),
            ContractCase("alibi", alibi_way, windows, configurable=False),
        ]

    @property
    def seq2seq(self) -> keras.Model | None:
        """The Keras model (alibi-detect's attribute name); pass it as ``seq2seq=`` to reuse it."""
        return self.model

    @staticmethod
    def _check_model(
        model: Any, n_features: int | None, seq_len: int | None
    ) -> tuple[int, int, int]:
        if not isinstance(model, keras.Model):
            raise InvalidInputError(f"seq2seq must be a Keras model; got {type(model).__name__}")
        names = {layer.name for layer in model.layers}
        missing = [name for name in MODEL_LAYERS if name not in names]
        if missing:
            raise InvalidInputError(
                f"seq2seq: the model lacks the layers {missing}; pass a model made by this "
                "detector (its .seq2seq attribute) or leave seq2seq out"
            )
        _, model_len, model_features = model.inputs[0].shape
        for given, actual, what in (
            (n_features, model_features, "n_features"),
            (seq_len, model_len, "seq_len"),
        ):
            if given is not None and int(given) != int(actual):
                raise InvalidInputError(f"seq2seq: {what}={given}, but the model has {actual}")
        return int(model_features), int(model_len), int(model.get_layer("decoder").units)

    # ---- input ------------------------------------------------------------------------
    def _check_features(self, n: int) -> None:
        expected = self.input_shape[1] if self.input_shape else self.params["n_features"]
        if expected is not None and n != expected:
            raise InvalidInputError(
                f"seq2seq: expected {expected} feature(s) per time step (n_features); got {n}"
            )

    def _training_windows(self, X: np.ndarray, stride: int) -> np.ndarray:
        """Windows (batch, seq_len, F), or a long series (T, F) / (T,) cut with ``stride``."""
        array = np.asarray(X, dtype=np.float32)
        if array.ndim in (1, 2):
            series = array.reshape(len(array), -1)
            self._check_features(series.shape[1])
            array = sliding_windows(series, self._seq_len(), stride)
        return self._checked_windows(array)

    def _seq_len(self) -> int:
        seq_len = self.input_shape[0] if self.input_shape else self.params["seq_len"]
        if seq_len is None:
            raise InvalidInputError(
                "seq2seq: got a series but no seq_len to cut it into windows; pass "
                "seq_len=... or windows of shape (batch, seq_len, n_features)"
            )
        return int(seq_len)

    def _checked_windows(self, array: np.ndarray) -> np.ndarray:
        if array.ndim != 3:
            raise InvalidInputError(
                "seq2seq: expected windows (batch, seq_len, n_features) or a series "
                f"(batch, n_features); got shape {array.shape}"
            )
        self._check_features(array.shape[2])
        wanted = self.params["seq_len"]
        if self.input_shape is None and wanted is not None and array.shape[1] != wanted:
            raise InvalidInputError(
                f"seq2seq: expected windows of seq_len={wanted}; got shape {array.shape}"
            )
        expected = self.input_shape or array.shape[1:]
        return self._check_instances(array, tuple(expected))

    def _scoring_input(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Windows to decode, and for a series (T, F) the (window, step) each row is read
        from: consecutive windows of ``seq_len``, the last one ending at the last row."""
        array = np.asarray(X, dtype=np.float32)
        if array.ndim == 3:
            return self._checked_windows(array), None
        if array.ndim not in (1, 2):
            return self._checked_windows(array), None  # raises, naming the shapes
        rows = array.reshape(len(array), -1)
        self._check_features(rows.shape[1])
        if len(rows) == 0:
            raise InvalidInputError("seq2seq: got an empty batch")
        seq_len = self._seq_len()
        if len(rows) < seq_len:
            # Too short for one window: the first row repeated stands in for the past.
            pad = np.repeat(rows[:1], seq_len - len(rows), axis=0)
            windows = np.concatenate([pad, rows])[None]
            picks = np.stack([np.zeros(len(rows), int), np.arange(seq_len - len(rows), seq_len)])
            return self._checked_windows(windows), picks
        starts = list(range(0, len(rows) - seq_len + 1, seq_len))
        if starts[-1] + seq_len < len(rows):
            starts.append(len(rows) - seq_len)
        window_of = np.empty(len(rows), int)
        step_of = np.empty(len(rows), int)
        # Rows the last window shares with the one before keep their earlier reading: later
        # steps of a window have more of it behind them.
        for i, start in reversed(list(enumerate(starts))):
            window_of[start : start + seq_len] = i
            step_of[start : start + seq_len] = np.arange(seq_len)
        windows = np.stack([rows[s : s + seq_len] for s in starts])
        return self._checked_windows(windows), np.stack([window_of, step_of])

    # ---- training ---------------------------------------------------------------------
    def fit(
        self,
        X: np.ndarray,
        loss_fn: Any = None,
        optimizer: Any = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        verbose: bool = True,
        log_metric: tuple[str, Any] | None = None,
        *,
        progress: ProgressFn | None = None,
    ) -> dict[str, Any]:
        """Train the autoencoder and the threshold net together on normal data.

        ``X``: windows (batch, seq_len, n_features) or a series (T, n_features) cut into
        sliding windows (``stride``). ``loss_fn(y_true, y_pred)`` is the reconstruction loss
        (default MSE); ``beta`` times the threshold net's MSE is added. A fitted detector
        trains its model further. Returns the training summary saved with the model.
        """
        p = self.params
        progress = self.progress = fit_progress(verbose, progress)
        metric = check_log_metric(log_metric)
        set_seed(p["seed"])
        windows = self._training_windows(X, p["stride"])
        seq_len, n_features = (int(d) for d in windows.shape[1:])
        if self.model is None:
            self.input_shape = (seq_len, n_features)
            self.params["seq_len"] = seq_len
            self.params["n_features"] = n_features
            self._fit_normalisation(windows, p["normalise"])
            net = self._threshold_net or default_threshold_net(
                seq_len, p["latent_dim"], p["threshold_hidden"]
            )
            self.model = build_seq2seq(
                seq_len, n_features, p["latent_dim"], p["output_activation"], net
            )
            self._build_decoder()
        data, held_out = holdout_split(self._normalise(windows), p["validation_fraction"])
        model = self.model
        optimizer = resolve_optimizer(optimizer, p["learning_rate"])
        reconstruction_loss = loss_fn or _mse
        beta = float(p["beta"])
        free_running = self._free_running
        teacher_forcing = bool(p["teacher_forcing"])

        def losses(x: tf.Tensor, recon: tf.Tensor, thr: tf.Tensor) -> dict[str, tf.Tensor]:
            err = tf.square(x - recon)
            recon_loss = call_loss(reconstruction_loss, x, recon)
            # The target is the error itself: the net must learn to predict it, not to
            # pull the autoencoder's error towards its own guess.
            thr_loss = tf.reduce_mean(tf.square(thr - tf.stop_gradient(err)))
            return {
                "loss": recon_loss + beta * thr_loss,
                "recon_loss": recon_loss,
                "threshold_mse": thr_loss,
            }

        @tf.function
        def step(x: tf.Tensor) -> dict[str, tf.Tensor]:
            with tf.GradientTape() as tape:
                if teacher_forcing:
                    recon, thr = model([x, _shift_right(x)], training=True)
                else:
                    recon, thr = free_running(x)
                parts = losses(x, recon, thr)
            grads = tape.gradient(parts["loss"], model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            if metric is not None:
                metric[1].update_state(x, recon)
            return parts

        selection = None
        if held_out is not None:
            chunk = int(p["score_batch_size"])

            @tf.function
            def held_out_loss(x: tf.Tensor) -> tf.Tensor:
                return losses(x, *free_running(x))["loss"]

            def validation_loss() -> float:
                total = 0.0
                for start in range(0, len(held_out), chunk):
                    part = held_out[start : start + chunk]
                    total += len(part) * float(held_out_loss(part))
                return total / len(held_out)

            selection = EpochSelection(validation_loss, (model,), int(p["patience"]))

        started = time.perf_counter()
        history = train_epochs(
            step,
            (data,),
            epochs=epochs or p["epochs"],
            batch_size=batch_size or p["batch_size"],
            label="seq2seq",
            progress=progress,
            seed=p["seed"],
            log_metric=metric,
            selection=selection,
            optimizer=optimizer,
            variables=model.trainable_variables,
        )
        self.training = self._training_summary(
            history, started, training_windows=len(data), epochs=len(history)
        )
        if selection is not None:
            self.training.update(
                validation_windows=len(held_out),  # type: ignore[arg-type]
                best_epoch=selection.best_epoch,
                best_val_loss=selection.best_loss,
            )
        self.training["history"] = history
        return self.training

    # ---- inference --------------------------------------------------------------------
    def _build_decoder(self) -> None:
        """Build the autoregressive decoder (for training) and its compiled inference form."""
        model = self.model
        assert model is not None
        encoder = keras.Model(
            model.get_layer("encoder").input,
            [model.get_layer("encoder_h").output, model.get_layer("encoder_c").output],
        )
        cell = model.get_layer("decoder").cell
        to_output = model.get_layer("reconstruction")
        threshold_net = model.get_layer("threshold_net")
        thr_out = model.get_layer("threshold_estimate")
        seq_len, n_features = self.input_shape or (0, 0)

        def decode(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            h, c = encoder(x, training=False)
            previous = tf.zeros([tf.shape(x)[0], n_features], dtype=x.dtype)
            outputs = tf.TensorArray(x.dtype, size=seq_len)
            hiddens = tf.TensorArray(x.dtype, size=seq_len)
            for t in tf.range(seq_len):
                hidden, (h, c) = cell(previous, [h, c], training=False)
                previous = to_output(hidden)
                outputs = outputs.write(t, previous)
                hiddens = hiddens.write(t, hidden)
            hidden_seq = tf.transpose(hiddens.stack(), [1, 0, 2])
            return (
                tf.transpose(outputs.stack(), [1, 0, 2]),
                thr_out(threshold_net(hidden_seq)),
            )

        self._free_running = decode
        self._decode = tf.function(
            decode,
            input_signature=[tf.TensorSpec([None, seq_len, n_features], tf.float32)],
            jit_compile=bool(self.params["jit_compile"]),
        )

    def _run_decoder(
        self, data: np.ndarray, batch_size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Decode normalised windows at the verified scoring shapes (a handful of XLA
        compilations, each made once: a live stream's micro-batches of every size never
        stall scoring for a new one)."""
        recon, thr = score_at_verified_shapes(self._decode, data, self._score_shape, batch_size)
        return recon, thr

    def _raw_feature_scores(self, X: np.ndarray, batch_size: int | None) -> np.ndarray:
        """Squared error minus the estimated threshold, before the static threshold: per
        window (batch, seq_len, F), or per row (T, F) for a series."""
        windows, picks = self._scoring_input(X)
        data = self._normalise(windows)
        recon, thr = self._run_decoder(data, batch_size)
        raw = np.square(data - recon) - thr
        return raw if picks is None else raw[picks[0], picks[1]]

    def expected(self, X: np.ndarray) -> np.ndarray:
        """The autoregressive reconstruction (:meth:`reconstruct`)."""
        return self.reconstruct(X)

    def reconstruct(self, X: np.ndarray) -> np.ndarray:
        """Autoregressive reconstruction of windows (batch, seq_len, F), in the input's units."""
        self._require_fitted("reconstruct()")
        windows = self._checked_windows(np.asarray(X, dtype=np.float32))
        recon, _ = self._run_decoder(self._normalise(windows))
        return recon * self.std + self.mean

    def infer_threshold(
        self,
        X: np.ndarray,
        outlier_perc: float = 100.0,
        threshold_perc: float | np.ndarray = 95.0,
        batch_size: int | None = None,
        *,
        level: Literal["feature", "instance"] | None = None,
    ) -> None:
        """Set the static threshold from a percentile of the scores of ``X``.

        ``threshold_perc`` as one number per feature sets a threshold per feature (over all
        time steps). As one number, it is taken over all feature scores (``level='feature'``,
        the default when ``outlier_perc`` is 100) or over instance scores, each the mean of
        its top ``outlier_perc`` % feature scores (``level='instance'``, the default
        otherwise): then ``threshold_perc`` % of the instances of ``X`` score at or below 0.
        """
        self._require_fitted("infer_threshold()")
        raw = self._raw_feature_scores(X, batch_size)
        perc = np.asarray(threshold_perc, dtype=np.float64)
        level = level or ("feature" if outlier_perc == 100 else "instance")
        if level not in ("feature", "instance"):
            raise InvalidInputError(f"level must be 'feature' or 'instance'; got {level!r}")
        if perc.ndim == 1:
            if level == "instance" and outlier_perc != 100:
                raise InvalidInputError(
                    "one threshold_perc per feature sets feature thresholds; it cannot be "
                    "combined with instance-level outlier_perc"
                )
            self.threshold = percentile_threshold(raw, perc)
        elif level == "instance":
            self.threshold = percentile_threshold(top_percent_mean(raw, outlier_perc), perc)
        else:
            self.threshold = percentile_threshold(raw, perc)

    def score(
        self, X: np.ndarray, outlier_perc: float | None = None, batch_size: int | None = None
    ) -> Scores:
        """Feature scores (windows: (batch, seq_len, F); a series: (T, F)) and instance
        scores (batch,) or (T,)."""
        self._require_fitted("score()")
        raw = self._raw_feature_scores(X, batch_size)
        static = np.asarray(0.0 if self.threshold is None else self.threshold)
        feature_score = raw - static
        perc = self.params["outlier_perc"] if outlier_perc is None else outlier_perc
        if static.ndim == 0:
            # The same arithmetic infer_threshold used: a window whose score set the threshold
            # lands exactly on 0, never a rounding step above it.
            return Scores(top_percent_mean(raw, perc) - static, feature_score)
        return Scores(top_percent_mean(feature_score, perc), feature_score)

    def predict(  # type: ignore[override]
        self,
        X: np.ndarray,
        outlier_type: OutlierType | None = None,
        outlier_perc: float | None = None,
        batch_size: int | None = None,
        return_feature_score: bool = True,
        return_instance_score: bool = True,
    ) -> dict[str, dict[str, Any]]:
        """``data``: ``is_outlier`` per instance (``outlier_type='instance'``) or per feature
        score (``'feature'``), ``feature_score`` and ``instance_score`` (None unless asked)."""
        scores = self.score(X, outlier_perc, batch_size)
        kind = outlier_type or self.params["outlier_type"]
        if kind not in ("instance", "feature"):
            raise InvalidInputError(f"outlier_type must be 'instance' or 'feature'; got {kind!r}")
        flagged = scores.feature_score if kind == "feature" else scores.instance_score
        return {
            "meta": {**self._meta(), "outlier_type": kind},
            "data": {
                "is_outlier": (flagged > 0).astype(np.int8),
                "feature_score": scores.feature_score if return_feature_score else None,
                "instance_score": scores.instance_score if return_instance_score else None,
            },
        }

    # ---- persistence hooks ------------------------------------------------------------
    def _model_files(self) -> dict[str, keras.Model]:
        assert self.model is not None
        return {"seq2seq.keras": self.model}

    def _restore(self, models: dict[str, keras.Model]) -> None:
        self.model = models["seq2seq.keras"]
        self._build_decoder()


def _input_width(net: keras.Model) -> int | None:
    """The last input dimension a Keras network declares, if it declares one."""
    try:
        width = net.inputs[0].shape[-1]
    except (AttributeError, IndexError, ValueError):
        return None
    return None if width is None else int(width)


OutlierSeq2Seq = Seq2SeqDetector
