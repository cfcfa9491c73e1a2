"""A user's own Keras layer and feature function, registered the way Keras documents, for
the bring-your-own-network tests (a fresh process imports this module before loading)."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="streamdet_tests")
class LearnedScale(keras.layers.Layer):
    """x * s with one learned scale per feature."""

    def build(self, input_shape: tuple[int, ...]) -> None:
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return inputs * self.scale


@keras.saving.register_keras_serializable(package="streamdet_tests")
def mean_abs_error(x: tf.Tensor, x_recon: tf.Tensor) -> tf.Tensor:
    """One reconstruction feature: mean absolute error per row."""
    return tf.reduce_mean(tf.abs(x - x_recon), axis=1, keepdims=True)
