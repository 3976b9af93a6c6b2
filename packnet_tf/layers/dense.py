"""`PackedDense`: a `keras.layers.Dense` whose kernel is shared by tasks."""

import keras
from keras import ops

from packnet_tf.layers.base import PackedKernelLayer, positive_int


@keras.saving.register_keras_serializable(package="packnet_tf")
class PackedDense(PackedKernelLayer):
    """Densely-connected layer packed for several tasks.

    Same arguments as `keras.layers.Dense` (without LoRA and quantization
    modes), plus `max_tasks`. For the active task t the layer computes
    `activation(inputs @ W_t + b_t)`, where `W_t` keeps the weights owned by
    tasks 1..t and zeroes the rest, and `b_t` is task t's own bias.

    Args:
        units: positive int, dimensionality of the output space.
        **kwargs: `activation`, `use_bias`, `kernel_initializer`,
            `bias_initializer`, `kernel_regularizer`, `bias_regularizer`,
            `activity_regularizer`, `kernel_constraint`, `bias_constraint`
            (as in `keras.layers.Dense`; see `PackedKernelLayer`),
            `max_tasks` (task slots for the biases; see `PackedLayer`) and
            base layer arguments (`name`, `dtype`, ...).

    Raises:
        ValueError: if `units` is not a positive int.

    Example:

    >>> layer = PackedDense(4, activation="relu", max_tasks=3)
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = positive_int(units, "units")
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
        config.update(units=self.units)
        return config
