"""Keras layers whose weights are shared between tasks by owner masks.

`registry` is the one table of them (see `PackedLayerSpec`); `ownership`
holds the pure owner math they use.

Layer 2: may import `compat` and `errors`.
"""

from packnet_tf.layers import registry
from packnet_tf.layers.base import PackedLayer
from packnet_tf.layers.batch_norm import TaskBatchNormalization
from packnet_tf.layers.conv import PackedConv1D, PackedConv2D
from packnet_tf.layers.dense import PackedDense
from packnet_tf.layers.depthwise_conv import PackedDepthwiseConv2D
from packnet_tf.layers.registry import PackedLayerSpec
from packnet_tf.layers.separable_conv import PackedSeparableConv2D

__all__ = [
    "PackedConv1D",
    "PackedConv2D",
    "PackedDense",
    "PackedDepthwiseConv2D",
    "PackedLayer",
    "PackedLayerSpec",
    "PackedSeparableConv2D",
    "TaskBatchNormalization",
    "registry",
]
