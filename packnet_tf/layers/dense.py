"""`PackedDense`: a `keras.layers.Dense` whose kernel is shared by tasks."""

import keras
from keras import ops

from packnet_tf.layers.base import PackedLayer, positive_int


@keras.saving.register_keras_serializable(package="packnet_tf")
class PackedDense(PackedLayer):
    """Densely-connected layer packed for several tasks.

    Same arguments as `keras.layers.Dense` (without LoRA and quantization
    modes), plus `max_tasks`. For the active task t the layer computes
    `activation(inputs @ W_t + b_t)`, where `W_t` keeps the weights owned by
    tasks 1..t and zeroes the rest, and `b_t` is task t's own bias.

    Args:
        units: positive int, dimensionality of the output space.
        activation: activation function (name or callable); None is linear.
        use_bias: whether the layer has a (per-task) bias.
        kernel_initializer: initializer of the kernel.
        bias_initializer: initializer of the biases.
        kernel_regularizer: regularizer of the kernel.
        bias_regularizer: regularizer of the biases.
        activity_regularizer: regularizer of the output.
        kernel_constraint: constraint of the kernel.
        bias_constraint: constraint of the biases.
        max_tasks: task slots for the biases (see `PackedLayer`).
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Raises:
        ValueError: if `units` is not a positive int.

    Example:

    >>> layer = PackedDense(4, activation="relu", max_tasks=3)
    """

    def __init__(
        self,
        units,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        max_tasks=None,
        **kwargs,
    ):
        super().__init__(
            max_tasks=max_tasks,
            activity_regularizer=activity_regularizer,
            **kwargs,
        )
        self.units = positive_int(units, "units")
        self._set_arguments(
            activation, use_bias, kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)
        self.supports_masking = True

    def build(self, input_shape):
        input_dim = input_shape[-1]
        self._add_kernel("kernel", (input_dim, self.units))
        self._add_bias(self.units)
        self._add_active_task()
        self.input_spec = keras.layers.InputSpec(
            min_ndim=2, axes={-1: input_dim}
        )

    def call(self, inputs):
        return self._bias_and_activation(
            ops.matmul(inputs, self.visible("kernel")))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, **self._arguments_config())
        return config
