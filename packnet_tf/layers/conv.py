"""`PackedConv1D` and `PackedConv2D`: Keras convolutions packed for tasks."""

import keras
from keras import ops

from packnet_tf.layers.base import PackedLayer, positive_int


def normalize_tuple(value, rank, name):
    """Returns `value` as a tuple of `rank` positive ints.

    Args:
        value: an int or a sequence of `rank` ints.
        rank: the expected length.
        name: the argument's name, for the error message.

    Raises:
        ValueError: if `value` is neither.
    """
    values = (value,) * rank if isinstance(value, int) else tuple(value)
    if len(values) != rank or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0
        for v in values
    ):
        raise ValueError(
            f"Expected `{name}` to be a positive int or a tuple of {rank} "
            f"positive ints. Received: {name}={value!r}"
        )
    return values


def normalize_padding(padding, allowed):
    """Lower-cases `padding` and checks it is one of `allowed`."""
    padding = str(padding).lower()
    if padding not in allowed:
        raise ValueError(
            f"Expected `padding` to be one of {allowed}. "
            f"Received: padding={padding!r}"
        )
    return padding


def normalize_data_format(data_format):
    """`data_format`, or Keras' configured image data format when None."""
    if data_format is None:
        data_format = keras.config.image_data_format()
    data_format = str(data_format).lower()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            "Expected `data_format` to be 'channels_last' or "
            f"'channels_first'. Received: data_format={data_format!r}"
        )
    return data_format


def channel_axis(data_format):
    """Axis of the channels for `data_format`."""
    return -1 if data_format == "channels_last" else 1


def add_channel_bias(x, bias, data_format):
    """Adds a per-channel `bias` to `x` on its channel axis."""
    if data_format == "channels_last":
        return ops.add(x, bias)
    shape = (1, -1) + (1,) * (len(x.shape) - 2)
    return ops.add(x, ops.reshape(bias, shape))


def set_window(layer, rank, kernel_size, strides, padding, data_format,
               dilation_rate, paddings=("valid", "same")):
    """Checks and sets a convolution's window arguments on `layer`.

    Raises:
        ValueError: naming the argument outside its domain.
    """
    layer.kernel_size = normalize_tuple(kernel_size, rank, "kernel_size")
    layer.strides = normalize_tuple(strides, rank, "strides")
    layer.dilation_rate = normalize_tuple(dilation_rate, rank,
                                          "dilation_rate")
    layer.padding = normalize_padding(padding, paddings)
    layer.data_format = normalize_data_format(data_format)


def window_config(layer):
    """`set_window`'s arguments, as a layer config holds them."""
    return {"kernel_size": layer.kernel_size, "strides": layer.strides,
            "padding": layer.padding, "data_format": layer.data_format,
            "dilation_rate": layer.dilation_rate}


def channel_bias_adder(data_format):
    """`add_bias(x, bias)` on the channel axis of `data_format`."""
    return lambda x, bias: add_channel_bias(x, bias, data_format)


class PackedConv(PackedLayer):
    """N-D convolution packed for tasks; base of `PackedConv1D/2D`.

    Arguments are those of `keras.layers.Conv1D`/`Conv2D`, plus `rank`
    (set by the subclasses) and `max_tasks`.
    """

    def __init__(
        self,
        rank,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        groups=1,
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
        self.rank = rank
        self.filters = positive_int(filters, "filters")
        self.groups = groups
        if filters % groups:
            raise ValueError(
                "Expected `filters` to be divisible by `groups`. "
                f"Received: filters={filters}, groups={groups}"
            )
        set_window(self, rank, kernel_size, strides, padding, data_format,
                   dilation_rate, ("valid", "same", "causal") if rank == 1
                   else ("valid", "same"))
        self._set_arguments(
            activation, use_bias, kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint)
        self.input_spec = keras.layers.InputSpec(min_ndim=rank + 2)

    def build(self, input_shape):
        in_channels = input_shape[channel_axis(self.data_format)]
        if in_channels is None or in_channels % self.groups:
            raise ValueError(
                f"Layer '{self.name}' expects a known number of input "
                f"channels divisible by groups={self.groups}. "
                f"Received: input_shape={input_shape}"
            )
        self._add_kernel(
            "kernel",
            self.kernel_size + (in_channels // self.groups, self.filters))
        self._add_bias(self.filters)
        self._add_active_task()
        self.input_spec = keras.layers.InputSpec(
            min_ndim=self.rank + 2,
            axes={channel_axis(self.data_format): in_channels},
        )

    def call(self, inputs):
        padding = self.padding
        if padding == "causal":
            left = self.dilation_rate[0] * (self.kernel_size[0] - 1)
            pad = [[0, 0], [left, 0], [0, 0]]
            if self.data_format == "channels_first":
                pad = [[0, 0], [0, 0], [left, 0]]
            inputs = ops.pad(inputs, pad)
            padding = "valid"
        x = ops.conv(
            inputs,
            self.visible("kernel"),
            strides=self.strides,
            padding=padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
        )
        return self._bias_and_activation(
            x, channel_bias_adder(self.data_format))

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, groups=self.groups,
                      **window_config(self), **self._arguments_config())
        return config


@keras.saving.register_keras_serializable(package="packnet_tf")
class PackedConv1D(PackedConv):
    """1D convolution packed for tasks: a drop-in for `keras.layers.Conv1D`.

    Args:
        filters: number of output channels.
        kernel_size: int or tuple of 1 int.
        strides, padding ("valid", "same" or "causal"), data_format,
        dilation_rate, groups, activation, use_bias, the initializers,
        regularizers and constraints: as in `keras.layers.Conv1D`.
        max_tasks: task slots for the biases (see `PackedLayer`).
        **kwargs: base layer arguments.

    Raises:
        ValueError: on an argument outside its domain.
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid",
                 data_format=None, dilation_rate=1, groups=1, **kwargs):
        super().__init__(
            rank=1, filters=filters, kernel_size=kernel_size,
            strides=strides, padding=padding, data_format=data_format,
            dilation_rate=dilation_rate, groups=groups, **kwargs,
        )


@keras.saving.register_keras_serializable(package="packnet_tf")
class PackedConv2D(PackedConv):
    """2D convolution packed for tasks: a drop-in for `keras.layers.Conv2D`.

    For the active task t the layer convolves with the kernel weights owned by
    tasks 1..t (the rest zeroed) and adds task t's own bias.

    Args:
        filters: number of output channels.
        kernel_size: int or tuple of 2 ints.
        strides, padding ("valid" or "same"), data_format, dilation_rate,
        groups, activation, use_bias, the initializers, regularizers and
        constraints: as in `keras.layers.Conv2D`.
        max_tasks: task slots for the biases (see `PackedLayer`).
        **kwargs: base layer arguments.

    Raises:
        ValueError: on an argument outside its domain.

    Example:

    >>> conv = PackedConv2D(8, 3, padding="same", activation="relu")
    """

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid",
                 data_format=None, dilation_rate=(1, 1), groups=1, **kwargs):
        super().__init__(
            rank=2, filters=filters, kernel_size=kernel_size,
            strides=strides, padding=padding, data_format=data_format,
            dilation_rate=dilation_rate, groups=groups, **kwargs,
        )
