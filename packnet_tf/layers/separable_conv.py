"""`PackedSeparableConv2D`: `keras.layers.SeparableConv2D` packed for tasks."""

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
        self.filters = positive_int(filters, "filters")
        self.depth_multiplier = positive_int(depth_multiplier,
                                             "depth_multiplier")
        set_window(self, 2, kernel_size, strides, padding, data_format,
                   dilation_rate)
        self._set_arguments(
            activation, use_bias,
            depthwise_initializer=depthwise_initializer,
            pointwise_initializer=pointwise_initializer,
            bias_initializer=bias_initializer,
            depthwise_regularizer=depthwise_regularizer,
            pointwise_regularizer=pointwise_regularizer,
            bias_regularizer=bias_regularizer,
            depthwise_constraint=depthwise_constraint,
            pointwise_constraint=pointwise_constraint,
            bias_constraint=bias_constraint)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        in_channels = input_shape[channel_axis(self.data_format)]
        self._add_kernel(
            "depthwise_kernel",
            self.kernel_size + (in_channels, self.depth_multiplier))
        self._add_kernel(
            "pointwise_kernel",
            (1, 1, in_channels * self.depth_multiplier, self.filters))
        self._add_bias(self.filters)
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
        return self._bias_and_activation(
            x, channel_bias_adder(self.data_format))

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters,
                      depth_multiplier=self.depth_multiplier,
                      **window_config(self), **self._arguments_config())
        return config
