"""`PackedDepthwiseConv2D`: `keras.layers.DepthwiseConv2D` packed for tasks."""

import keras
from keras import ops

from packnet_tf.layers.base import PackedLayer, positive_int
from packnet_tf.layers.conv import (
    channel_axis,
    channel_bias_adder,
    set_window,
    window_config,
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
        set_window(self, 2, kernel_size, strides, padding, data_format,
                   dilation_rate)
        self.depth_multiplier = positive_int(depth_multiplier,
                                             "depth_multiplier")
        self._set_arguments(
            activation, use_bias,
            depthwise_initializer=depthwise_initializer,
            bias_initializer=bias_initializer,
            depthwise_regularizer=depthwise_regularizer,
            bias_regularizer=bias_regularizer,
            depthwise_constraint=depthwise_constraint,
            bias_constraint=bias_constraint)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        in_channels = input_shape[channel_axis(self.data_format)]
        self._add_kernel(
            "depthwise_kernel",
            self.kernel_size + (in_channels, self.depth_multiplier))
        self._add_bias(in_channels * self.depth_multiplier)
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
        return self._bias_and_activation(
            x, channel_bias_adder(self.data_format))

    def get_config(self):
        config = super().get_config()
        config.update(depth_multiplier=self.depth_multiplier,
                      **window_config(self), **self._arguments_config())
        return config
