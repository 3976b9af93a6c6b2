"""`PackedDepthwiseConv2D`: `keras.layers.DepthwiseConv2D` packed for tasks."""

import keras
from keras import ops

from packnet_tf.layers.base import positive_int
from packnet_tf.layers.conv import PackedWindowLayer


@keras.saving.register_keras_serializable(package="packnet_tf")
class PackedDepthwiseConv2D(PackedWindowLayer):
    """Depthwise 2D convolution packed for tasks.

    A drop-in for `keras.layers.DepthwiseConv2D` (same arguments) plus
    `max_tasks`.

    Args:
        kernel_size: int or tuple of 2 ints.
        depth_multiplier: output channels per input channel.
        **kwargs: `strides`, `padding` ("valid" or "same"), `data_format`,
            `dilation_rate`, `activation`, `use_bias`,
            `depthwise_initializer`, `bias_initializer`,
            `depthwise_regularizer`, `bias_regularizer`,
            `activity_regularizer`, `depthwise_constraint`,
            `bias_constraint` (as in `keras.layers.DepthwiseConv2D`),
            `max_tasks` (task slots for the biases; see `PackedLayer`) and
            base layer arguments.

    Raises:
        ValueError: on an argument outside its domain.
    """

    KERNELS = ("depthwise",)

    def __init__(self, kernel_size, depth_multiplier=1, **kwargs):
        super().__init__(2, kernel_size, **kwargs)
        self.depth_multiplier = positive_int(depth_multiplier,
                                             "depth_multiplier")

    def build(self, input_shape):
        in_channels = self._input_channels(input_shape)
        self._add_kernel(
            "depthwise_kernel",
            self.kernel_size + (in_channels, self.depth_multiplier))
        self._add_bias(in_channels * self.depth_multiplier)
        self._add_active_task()

    def call(self, inputs):
        return self._add_channel_bias_and_activation(ops.depthwise_conv(
            inputs, self.visible("depthwise_kernel"), **self._window()))

    def get_config(self):
        config = super().get_config()
        config.update(depth_multiplier=self.depth_multiplier)
        return config
