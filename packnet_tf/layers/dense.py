"""`PackedDense`: a `keras.layers.Dense` whose kernel is shared by tasks."""

import keras
from keras import activations, constraints, initializers, ops, regularizers

from packnet_tf.layers.base import PackedLayer


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
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ValueError(
                "Expected `units` to be a positive int. "
                f"Received: units={units!r}"
            )
        self.units = units
        self.activation = activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)
        self.supports_masking = True

    def build(self, input_shape):
        input_dim = input_shape[-1]
        self._add_packed_kernel(
            "kernel",
            (input_dim, self.units),
            self.kernel_initializer,
            self.kernel_regularizer,
            self.kernel_constraint,
        )
        if self.use_bias:
            self._add_per_task(
                "bias",
                (self.units,),
                self.bias_initializer,
                self.bias_regularizer,
                self.bias_constraint,
            )
        self._add_active_task()
        self.input_spec = keras.layers.InputSpec(
            min_ndim=2, axes={-1: input_dim}
        )

    def call(self, inputs):
        x = ops.matmul(inputs, self.visible("kernel"))
        if self.use_bias:
            x = ops.add(x, self.task_row("bias"))
        return self.activation(x) if self.activation is not None else x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "activation": activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": initializers.serialize(
                    self.bias_initializer
                ),
                "kernel_regularizer": regularizers.serialize(
                    self.kernel_regularizer
                ),
                "bias_regularizer": regularizers.serialize(
                    self.bias_regularizer
                ),
                "activity_regularizer": regularizers.serialize(
                    self.activity_regularizer
                ),
                "kernel_constraint": constraints.serialize(
                    self.kernel_constraint
                ),
                "bias_constraint": constraints.serialize(self.bias_constraint),
            }
        )
        return config
