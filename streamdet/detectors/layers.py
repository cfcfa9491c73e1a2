"""Network pieces the VAE detectors share: user networks wrapped into VAE encoders/decoders.

alibi-detect lets users pass their own ``encoder_net`` (input -> features) and
``decoder_net`` (code -> reconstruction). A VAE needs a mean and a log-variance per code
dimension, so :func:`vae_encoder` puts two linear heads on the encoder's output (flattened),
whatever the user's network is.

>>> enc = vae_encoder((3,), 2, dense_stack([4]), "demo")
>>> [tuple(t.shape) for t in enc.outputs]
[(None, 2), (None, 2)]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streamdet.core.errors import InvalidInputError
from streamdet.core.tensorflow import load_tensorflow

keras, _ = load_tensorflow()


def dense_stack(
    units: Sequence[int], activation: str = "tanh", output: int | None = None
) -> keras.Sequential:
    """Dense layers of ``units`` (``activation``), then a linear layer of ``output`` units."""
    layers: list[Any] = [keras.layers.Dense(u, activation=activation) for u in units]
    if output is not None:
        layers.append(keras.layers.Dense(output))
    return keras.Sequential(layers)


# TensorFlow activations whose Keras namesake computes the same function with the same
# defaults (not gelu: Keras approximates it by default, TensorFlow does not).
SAME_AS_KERAS = frozenset(
    (
        "softmax",
        "log_softmax",
        "relu",
        "relu6",
        "elu",
        "selu",
        "leaky_relu",
        "tanh",
        "sigmoid",
        "swish",
        "silu",
        "softplus",
        "softsign",
    )
)


def check_network(net: Any, what: str) -> None:
    """Refuse anything but a Keras layer or model, naming the argument; make its TensorFlow
    activations savable (:func:`portable`)."""
    if net is not None and not isinstance(net, keras.Layer):
        raise InvalidInputError(f"{what} must be a Keras model or layer; got {type(net).__name__}")
    if net is not None:
        portable(net)


def portable(net: keras.Layer) -> keras.Layer:
    """Swap TensorFlow activation functions (``tf.nn.softmax``, ``tf.nn.relu``...: what
    alibi-detect's examples use) for Keras's own, in place.

    Keras saves an activation by name and, in ``safe_mode``, loads only names it knows:
    ``tf.nn.softmax`` is saved as ``softmax_v2`` and could never be loaded again. The Keras
    function of the same name computes the same thing.
    """
    for layer in _all_layers(net):
        activation = getattr(layer, "activation", None)
        module = getattr(activation, "__module__", "") or ""
        if activation is None or not module.startswith("tensorflow"):
            continue
        name = activation.__name__.removesuffix("_v2")
        if name in SAME_AS_KERAS:
            layer.activation = keras.activations.get(name)
        else:
            raise InvalidInputError(
                f"layer {layer.name!r} uses the TensorFlow function {activation.__name__} as its "
                "activation, which Keras cannot save; use a Keras activation"
            )
    return net


def _all_layers(net: keras.Layer) -> list[keras.Layer]:
    found = [net]
    for child in getattr(net, "layers", []) or []:
        found += _all_layers(child)
    return found


def apply_network(net: Any, inputs: Any, what: str) -> Any:
    """``net(inputs)`` on symbolic Keras inputs; a shape mismatch (Keras raises several
    types for it) becomes an :class:`InvalidInputError` that starts with ``what``."""
    try:
        return net(inputs)
    except Exception as exc:
        raise InvalidInputError(f"{what}: {exc}") from exc


def vae_encoder(
    input_shape: tuple[int, ...], latent_dim: int, encoder_net: Any, prefix: str
) -> keras.Model:
    """input -> (z_mean, z_log_var): ``encoder_net``, flattened, then two linear heads."""
    x = keras.Input(input_shape, name="input")
    h = apply_network(
        encoder_net, x, f"{prefix}: encoder_net does not accept instances of shape {input_shape}"
    )
    if len(h.shape) > 2:
        h = keras.layers.Flatten()(h)
    mean = keras.layers.Dense(latent_dim, name="z_mean")(h)
    log_var = keras.layers.Dense(latent_dim, name="z_log_var")(h)
    return keras.Model(x, [mean, log_var], name=f"{prefix}_encoder")


def vae_decoder(
    latent_dim: int, output_shape: tuple[int, ...], decoder_net: Any, prefix: str
) -> keras.Model:
    """code -> reconstruction, checked to have the input's shape."""
    z = keras.Input((latent_dim,), name="code")
    out = apply_network(
        decoder_net, z, f"{prefix}: decoder_net does not accept codes of shape ({latent_dim},)"
    )
    if tuple(out.shape[1:]) != tuple(output_shape):
        raise InvalidInputError(
            f"{prefix}: decoder_net outputs shape {tuple(out.shape[1:])}; it must reconstruct "
            f"the input's shape {tuple(output_shape)}"
        )
    return keras.Model(z, out, name=f"{prefix}_decoder")


def part(model: Any, name: str, what: str) -> keras.Model:
    """A named sub-model of a whole model passed by the user (e.g. ``vaegmm=``)."""
    if not isinstance(model, keras.Model):
        raise InvalidInputError(f"{what} must be a Keras model; got {type(model).__name__}")
    try:
        return model.get_layer(name)
    except ValueError:
        names = [layer.name for layer in model.layers]
        raise InvalidInputError(
            f"{what}: the model has no part named {name!r} (it has {names}); pass another "
            f"detector's .{what} or the separate networks"
        ) from None
