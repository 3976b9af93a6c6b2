"""`PackedConv1D` and `PackedConv2D`: Keras convolutions packed for tasks."""

import keras
from keras import ops

from packnet_tf.layers.base import PackedKernelLayer, positive_int


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


def channel_bias_adder(data_format):
    """`add_bias(x, bias)` on the channel axis of `data_format`."""
    return lambda x, bias: add_channel_bias(x, bias, data_format)


class PackedWindowLayer(PackedKernelLayer):
    """Base of the packed convolutions: their window arguments.

    Args:
        rank: the convolution's spatial rank (set by each layer).
        kernel_size: an int or a tuple of `rank` ints.
        strides: an int or a tuple of `rank` ints.
        padding: "valid" or "same" ("causal" too when `rank` is 1).
        data_format: "channels_last", "channels_first", or None for
            Keras' configured image data format.
        dilation_rate: an int or a tuple of `rank` ints.
        **kwargs: `PackedKernelLayer`'s arguments.

    Raises:
        ValueError: naming the argument outside its domain.
    """

    def __init__(self, rank, kernel_size, strides=1, padding="valid",
                 data_format=None, dilation_rate=1, **kwargs):
        super().__init__(**kwargs)
        self.rank = rank
        self.kernel_size = normalize_tuple(kernel_size, rank, "kernel_size")
        self.strides = normalize_tuple(strides, rank, "strides")
        self.dilation_rate = normalize_tuple(dilation_rate, rank,
                                             "dilation_rate")
        self.padding = normalize_padding(
            padding, ("valid", "same", "causal") if rank == 1
            else ("valid", "same"))
        self.data_format = normalize_data_format(data_format)
        self.input_spec = keras.layers.InputSpec(min_ndim=rank + 2)

    def _input_channels(self, input_shape):
        """The input's channel count, fixed in `input_spec` from now on."""
        axis = channel_axis(self.data_format)
        self.input_spec = keras.layers.InputSpec(
            min_ndim=self.rank + 2, axes={axis: input_shape[axis]})
        return input_shape[axis]

    def _window(self, padding=None):
        """The window arguments of Keras' convolution ops."""
        return {"strides": self.strides,
                "padding": padding or self.padding,
                "data_format": self.data_format,
                "dilation_rate": self.dilation_rate}

    def _add_channel_bias_and_activation(self, x):
        """`activation(x + the active task's bias)`, on the channel axis."""
        return self._bias_and_activation(
            x, channel_bias_adder(self.data_format))

    def get_config(self):
        config = super().get_config()
        config.update(kernel_size=self.kernel_size, strides=self.strides,
                      padding=self.padding, data_format=self.data_format,
                      dilation_rate=self.dilation_rate)
        return config


class PackedConv(PackedWindowLayer):
    """N-D convolution packed for tasks; base of `PackedConv1D/2D`.

    Arguments are those of `keras.layers.Conv1D`/`Conv2D`, plus `rank`
    (set by the subclasses) and `max_tasks`.

    Args:
        rank: the spatial rank.
        filters: number of output channels.
        kernel_size: an int or a tuple of `rank` ints.
        groups: the number of channel groups; `filters` and the input
            channels must be divisible by it.
        **kwargs: `PackedWindowLayer`'s and `PackedKernelLayer`'s
            arguments: `strides`, `padding`, `data_format`,
            `dilation_rate`, `activation`, `use_bias`, the kernel and bias
            initializers, regularizers and constraints,
            `activity_regularizer`, `max_tasks`, and base layer arguments.

    Raises:
        ValueError: on an argument outside its domain.
    """

    def __init__(self, rank, filters, kernel_size, groups=1, **kwargs):
        super().__init__(rank, kernel_size, **kwargs)
        self.filters = positive_int(filters, "filters")
        self.groups = groups
        if filters % groups:
            raise ValueError(
                "Expected `filters` to be divisible by `groups`. "
                f"Received: filters={filters}, groups={groups}"
            )

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
        self._input_channels(input_shape)

    def call(self, inputs):
        padding = self.padding
        if padding == "causal":
            left = self.dilation_rate[0] * (self.kernel_size[0] - 1)
            pad = [[0, 0], [left, 0], [0, 0]]
            if self.data_format == "channels_first":
                pad = [[0, 0], [0, 0], [left, 0]]
            inputs = ops.pad(inputs, pad)
            padding = "valid"
        return self._add_channel_bias_and_activation(ops.conv(
            inputs, self.visible("kernel"), **self._window(padding)))

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, groups=self.groups)
        return config


@keras.saving.register_keras_serializable(package="packnet_tf")
class PackedConv1D(PackedConv):
    """1D convolution packed for tasks: a drop-in for `keras.layers.Conv1D`.

    Args:
        filters: number of output channels.
        kernel_size: int or tuple of 1 int.
        **kwargs: `strides`, `padding` ("valid", "same" or "causal"),
            `data_format`, `dilation_rate`, `groups`, `activation`,
            `use_bias`, the initializers, regularizers and constraints (as
            in `keras.layers.Conv1D`), `max_tasks` (task slots for the
            biases; see `PackedLayer`) and base layer arguments.

    Raises:
        ValueError: on an argument outside its domain.
    """

    def __init__(self, filters, kernel_size, **kwargs):
        super().__init__(1, filters, kernel_size, **kwargs)


@keras.saving.register_keras_serializable(package="packnet_tf")
class PackedConv2D(PackedConv):
    """2D convolution packed for tasks: a drop-in for `keras.layers.Conv2D`.

    For the active task t the layer convolves with the kernel weights owned by
    tasks 1..t (the rest zeroed) and adds task t's own bias.

    Args:
        filters: number of output channels.
        kernel_size: int or tuple of 2 ints.
        **kwargs: `strides`, `padding` ("valid" or "same"), `data_format`,
            `dilation_rate`, `groups`, `activation`, `use_bias`, the
            initializers, regularizers and constraints (as in
            `keras.layers.Conv2D`), `max_tasks` (task slots for the biases;
            see `PackedLayer`) and base layer arguments.

    Raises:
        ValueError: on an argument outside its domain.

    Example:

    >>> conv = PackedConv2D(8, 3, padding="same", activation="relu")
    """

    def __init__(self, filters, kernel_size, **kwargs):
        super().__init__(2, filters, kernel_size, **kwargs)
