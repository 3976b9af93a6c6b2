"""`PackedDepthwiseConv2D`: `keras.layers.DepthwiseConv2D` packed for tasks."""

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


@keras.saving.register_keras_serializable(package="packnet_tf")
class PackedDepthwiseConv2D(PackedLayer):
    """Depthwise 2D convolution packed for tasks.

    A drop-in for `keras.layers.DepthwiseConv2D` (same arguments) plus
    `max_tasks`.

    Args:
        kernel_size: int or tuple of 2 ints.
        strides: int or tuple of 2 ints.
        padding: "valid" or "same".
        depth_multiplier: output channels per input channel.
        data_format: "channels_last" or "channels_first".
        dilation_rate: int or tuple of 2 ints.
        activation: activation function; None is linear.
        use_bias: whether the layer has a (per-task) bias.
        depthwise_initializer, bias_initializer, depthwise_regularizer,
        bias_regularizer, activity_regularizer, depthwise_constraint,
        bias_constraint: as in `keras.layers.DepthwiseConv2D`.
        max_tasks: task slots for the biases (see `PackedLayer`).
        **kwargs: base layer arguments.

    Raises:
        ValueError: on an argument outside its domain.
    """

    def __init__(
        self,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        depth_multiplier=1,
        data_format=None,
        dilation_rate=(1, 1),
        activation=None,
        use_bias=True,
        depthwise_initializer="glorot_uniform",
        bias_initializer="zeros",
        depthwise_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        depthwise_constraint=None,
        bias_constraint=None,
        max_tasks=None,
        **kwargs,
    ):
        super().__init__(
            max_tasks=max_tasks,
            activity_regularizer=activity_regularizer,
            **kwargs,
        )
        self.kernel_size = normalize_tuple(kernel_size, 2, "kernel_size")
        self.strides = normalize_tuple(strides, 2, "strides")
        self.dilation_rate = normalize_tuple(dilation_rate, 2, "dilation_rate")
        self.padding = normalize_padding(padding, ("valid", "same"))
        if (
            isinstance(depth_multiplier, bool)
            or not isinstance(depth_multiplier, int)
            or depth_multiplier < 1
        ):
            raise ValueError(
                "Expected `depth_multiplier` to be a positive int. "
                f"Received: depth_multiplier={depth_multiplier!r}"
            )
        self.depth_multiplier = depth_multiplier
        self.data_format = normalize_data_format(data_format)
        self.activation = activations.get(activation)
        self.use_bias = use_bias
        self.depthwise_initializer = initializers.get(depthwise_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.depthwise_regularizer = regularizers.get(depthwise_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.depthwise_constraint = constraints.get(depthwise_constraint)
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
        if self.use_bias:
            self._add_per_task(
                "bias",
                (in_channels * self.depth_multiplier,),
                self.bias_initializer,
                self.bias_regularizer,
                self.bias_constraint,
            )
        self._add_active_task()
        self.input_spec = keras.layers.InputSpec(
            ndim=4, axes={channel_axis(self.data_format): in_channels}
        )

    def call(self, inputs):
        x = ops.depthwise_conv(
            inputs,
            self.visible("depthwise_kernel"),
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
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "depth_multiplier": self.depth_multiplier,
                "data_format": self.data_format,
                "dilation_rate": self.dilation_rate,
                "activation": activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "depthwise_initializer": initializers.serialize(
                    self.depthwise_initializer
                ),
                "bias_initializer": initializers.serialize(
                    self.bias_initializer
                ),
                "depthwise_regularizer": regularizers.serialize(
                    self.depthwise_regularizer
                ),
                "bias_regularizer": regularizers.serialize(
                    self.bias_regularizer
                ),
                "activity_regularizer": regularizers.serialize(
                    self.activity_regularizer
                ),
                "depthwise_constraint": constraints.serialize(
                    self.depthwise_constraint
                ),
                "bias_constraint": constraints.serialize(self.bias_constraint),
            }
        )
        return config
