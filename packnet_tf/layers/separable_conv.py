"""`PackedSeparableConv2D`: `keras.layers.SeparableConv2D` packed for tasks."""

import keras
from keras import ops

from packnet_tf.layers.base import positive_int
from packnet_tf.layers.depthwise_conv import PackedDepthwiseConv2D


@keras.saving.register_keras_serializable(package="packnet_tf")
class PackedSeparableConv2D(PackedDepthwiseConv2D):
    """Depthwise-separable 2D convolution packed for tasks.

    A drop-in for `keras.layers.SeparableConv2D` (same arguments) plus
    `max_tasks`: the depthwise convolution of `PackedDepthwiseConv2D`
    followed by a pointwise one, without a bias in between. Both the
    depthwise and the pointwise kernel carry owners.

    Args:
        filters: output channels of the pointwise step.
        kernel_size: int or tuple of 2 ints.
        depth_multiplier: depthwise output channels per input channel.
        **kwargs: `strides`, `padding` ("valid"/"same"), `data_format`,
            `dilation_rate`, `activation`, `use_bias`, and the
            depthwise/pointwise/bias initializers, regularizers and
            constraints (as in `keras.layers.SeparableConv2D`),
            `max_tasks` (task slots for the biases; see `PackedLayer`) and
            base layer arguments.

    Raises:
        ValueError: on an argument outside its domain.
    """

    KERNELS = ("depthwise", "pointwise")

    def __init__(self, filters, kernel_size, depth_multiplier=1, **kwargs):
        super().__init__(kernel_size, depth_multiplier, **kwargs)
        self.filters = positive_int(filters, "filters")

    def build(self, input_shape):
        in_channels = self._input_channels(input_shape)
        self._add_kernel(
            "depthwise_kernel",
            self.kernel_size + (in_channels, self.depth_multiplier))
        self._add_kernel(
            "pointwise_kernel",
            (1, 1, in_channels * self.depth_multiplier, self.filters))
        self._add_bias(self.filters)
        self._add_active_task()

    def call(self, inputs):
        return self._add_channel_bias_and_activation(ops.separable_conv(
            inputs, self.visible("depthwise_kernel"),
            self.visible("pointwise_kernel"), **self._window()))

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters)
        return config
