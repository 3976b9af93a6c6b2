"""`PackedSeparableConv2D`: `keras.layers.SeparableConv2D` packed for tasks."""

import keras
from keras import activations, constraints, initializers, ops, regularizers

from packnet_tf.layers.base import PackedLayer
from packnet_tf.layers.conv import (
    add_channel_bias,
    channel_axis,
    normalize_data_format,
    normalize_padding,
    normalize_tuple,
)

_SERIALIZERS = {
    "initializer": initializers.serialize,
    "regularizer": regularizers.serialize,
    "constraint": constraints.serialize,
}


@keras.saving.register_keras_serializable(package="packnet_tf")
class PackedSeparableConv2D(PackedLayer):
    """Depthwise-separable 2D convolution packed for tasks.

    A drop-in for `keras.layers.SeparableConv2D` (same arguments) plus
    `max_tasks`. Both the depthwise and the pointwise kernel carry owners.

    Args:
        filters: output channels of the pointwise step.
        kernel_size, strides, padding ("valid"/"same"), data_format,
        dilation_rate, depth_multiplier, activation, use_bias, and the
        depthwise/pointwise/bias initializers, regularizers and
        constraints: as in `keras.layers.SeparableConv2D`.
        max_tasks: task slots for the biases (see `PackedLayer`).
        **kwargs: base layer arguments.

    Raises:
        ValueError: on an argument outside its domain.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        data_format=None,
        dilation_rate=(1, 1),
        depth_multiplier=1,
        activation=None,
        use_bias=True,
        depthwise_initializer="glorot_uniform",
        pointwise_initializer="glorot_uniform",
        bias_initializer="zeros",
        depthwise_regularizer=None,
        pointwise_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        depthwise_constraint=None,
        pointwise_constraint=None,
        bias_constraint=None,
        max_tasks=None,
        **kwargs,
    ):
        super().__init__(
            max_tasks=max_tasks,
            activity_regularizer=activity_regularizer,
            **kwargs,
        )
        for key, value in (("filters", filters),
                           ("depth_multiplier", depth_multiplier)):
            if isinstance(value, bool) or not isinstance(value, int) or (
                    value < 1):
                raise ValueError(
                    f"Expected `{key}` to be a positive int. "
                    f"Received: {key}={value!r}"
                )
        self.filters = filters
        self.depth_multiplier = depth_multiplier
        self.kernel_size = normalize_tuple(kernel_size, 2, "kernel_size")
        self.strides = normalize_tuple(strides, 2, "strides")
        self.dilation_rate = normalize_tuple(dilation_rate, 2, "dilation_rate")
        self.padding = normalize_padding(padding, ("valid", "same"))
        self.data_format = normalize_data_format(data_format)
        self.activation = activations.get(activation)
        self.use_bias = use_bias
        self.depthwise_initializer = initializers.get(depthwise_initializer)
        self.pointwise_initializer = initializers.get(pointwise_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.depthwise_regularizer = regularizers.get(depthwise_regularizer)
        self.pointwise_regularizer = regularizers.get(pointwise_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.depthwise_constraint = constraints.get(depthwise_constraint)
        self.pointwise_constraint = constraints.get(pointwise_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        in_channels = input_shape[channel_axis(self.data_format)]
        self._add_packed_kernel(
            "depthwise_kernel",
            self.kernel_size + (in_channels, self.depth_multiplier),
            self.depthwise_initializer,
            self.depthwise_regularizer,
            self.depthwise_constraint,
        )
        self._add_packed_kernel(
            "pointwise_kernel",
            (1, 1, in_channels * self.depth_multiplier, self.filters),
            self.pointwise_initializer,
            self.pointwise_regularizer,
            self.pointwise_constraint,
        )
        if self.use_bias:
            self._add_per_task(
                "bias", (self.filters,), self.bias_initializer,
                self.bias_regularizer, self.bias_constraint,
            )
        self._add_active_task()
        self.input_spec = keras.layers.InputSpec(
            ndim=4, axes={channel_axis(self.data_format): in_channels}
        )

    def call(self, inputs):
        x = ops.separable_conv(
            inputs,
            self.visible("depthwise_kernel"),
            self.visible("pointwise_kernel"),
            strides=self.strides,
            padding=self.padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
        )
        if self.use_bias:
            x = add_channel_bias(x, self.task_row("bias"), self.data_format)
        return self.activation(x) if self.activation is not None else x

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "data_format": self.data_format,
                "dilation_rate": self.dilation_rate,
                "depth_multiplier": self.depth_multiplier,
                "activation": activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "activity_regularizer": regularizers.serialize(
                    self.activity_regularizer
                ),
            }
        )
        for part in ("depthwise", "pointwise", "bias"):
            for kind, serialize in _SERIALIZERS.items():
                key = f"{part}_{kind}"
                config[key] = serialize(getattr(self, key))
        return config
