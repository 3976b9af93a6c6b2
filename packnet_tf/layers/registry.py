"""The one table of packed layers: what each replaces, holds and exports to.

Every packed layer has one `PackedLayerSpec` here, and everything that needs
to know which layers exist reads this registry instead of keeping a list:
`trunk.check_trunk` (which layers a trunk may hold), `convert` (which Keras
layer becomes which packed layer, and how the weights move over),
`export.plain` (which Keras layer a packed layer becomes, with which
weights) and `export.folding` (which layers a following batch norm folds
into). README's list of layers is checked against it by a test.

Adding a packed layer is its class plus one `register(PackedLayerSpec(...))`;
the tests parametrized over `specs()` then convert, train and export it.

Example:

>>> register(PackedLayerSpec(
...     keras_class=keras.layers.Conv3D,
...     packed_class=PackedConv3D,
...     weights={"kernel": "kernel", "bias": "bias"},
...     example=lambda: (keras.layers.Conv3D(2, 2), (3, 3, 3, 1)),
...     fold_kernel="kernel",
... ))
"""

import contextlib
import dataclasses
import types
from collections.abc import Callable, Mapping

import keras

from packnet_tf.errors import UnsupportedLayerError
from packnet_tf.layers.base import PackedLayer
from packnet_tf.layers.batch_norm import TaskBatchNormalization
from packnet_tf.layers.conv import PackedConv1D, PackedConv2D
from packnet_tf.layers.dense import PackedDense
from packnet_tf.layers.depthwise_conv import PackedDepthwiseConv2D
from packnet_tf.layers.separable_conv import PackedSeparableConv2D


@dataclasses.dataclass(frozen=True, eq=False)
class PackedLayerSpec:
    """One packed layer: its Keras class, weights, batch-norm fold and export.

    Args:
        keras_class: the Keras layer class it packs. `convert` replaces
            layers of exactly this class (a subclass may compute
            differently); `export.plain` turns the packed layer back into
            one, built from the packed layer's config without `max_tasks`.
        packed_class: the `PackedLayer` subclass. Lookups by packed layer
            also find subclasses of it that have no entry of their own.
        weights: `{Keras weight attribute: packed weight attribute}` for
            every weight the Keras layer can hold (e.g. `{"kernel":
            "depthwise_kernel", "bias": "bias"}` for DepthwiseConv2D). A
            packed kernel is copied whole by `convert` and exported with the
            task's mask applied; a per-task variable is copied to task slot
            0 and exported as the task's slot.
        example: a callable with no arguments returning `(layer,
            input_shape)`: a tiny `keras_class` layer with a linear
            activation and an input shape (without the batch axis) it
            accepts. The shared tests convert, train, prune and export it.
        fold_kernel: the Keras weight a directly following batch norm folds
            into (scaled per output channel, its shift going to the bias),
            or None if batch norm does not fold into this layer.
        fold_axes: how many trailing axes of `fold_kernel` index the output
            channels (2 for DepthwiseConv2D: channel c * multiplier + m is
            `kernel[..., c, m]`; 1 otherwise).
        config_from_keras: None, or a callable `(keras_layer, config) ->
            config` rewriting Keras arguments the packed class takes in
            another form; it raises `UnsupportedLayerError` for a value the
            packed class cannot honour.

    Raises:
        TypeError: for a class that is not a Keras layer (`keras_class`) or
            not a `PackedLayer` (`packed_class`), or a callable that is not
            one.
        ValueError: for an empty or malformed `weights`, a `fold_kernel`
            that is not one of its Keras weights, or a bad `fold_axes`.
    """

    keras_class: type
    packed_class: type
    weights: Mapping[str, str]
    example: Callable
    fold_kernel: str | None = None
    fold_axes: int = 1
    config_from_keras: Callable | None = None

    def __post_init__(self):
        _check_class("keras_class", self.keras_class, keras.layers.Layer,
                     "a Keras layer class, e.g. keras.layers.Conv3D")
        _check_class("packed_class", self.packed_class, PackedLayer,
                     "a subclass of packnet_tf.layers.PackedLayer")
        _check_weights(self.weights)
        object.__setattr__(self, "weights",
                           types.MappingProxyType(dict(self.weights)))
        if not callable(self.example):
            raise TypeError(
                "Expected `example` to be a callable returning "
                "`(keras_layer, input_shape)`. Received: "
                f"{type(self.example).__name__}. Pass e.g. `lambda: "
                "(keras.layers.Dense(3), (4,))`."
            )
        if self.fold_kernel is not None and (
                self.fold_kernel not in self.weights):
            raise ValueError(
                "Expected `fold_kernel` to be one of the Keras weights in "
                f"`weights` ({', '.join(self.weights)}) or None. Received: "
                f"fold_kernel={self.fold_kernel!r}."
            )
        if isinstance(self.fold_axes, bool) or not isinstance(
                self.fold_axes, int) or self.fold_axes < 1:
            raise ValueError(
                "Expected `fold_axes` to be a positive int (the trailing "
                "kernel axes that index output channels). Received: "
                f"fold_axes={self.fold_axes!r}."
            )
        if self.config_from_keras is not None and not callable(
                self.config_from_keras):
            raise TypeError(
                "Expected `config_from_keras` to be None or a callable "
                "`(keras_layer, config) -> config`. Received: "
                f"{type(self.config_from_keras).__name__}."
            )

    @property
    def name(self):
        """The packed class's name, e.g. `"PackedDense"`."""
        return self.packed_class.__name__

    @property
    def folds_batch_norm(self):
        """Whether a directly following batch norm folds into this layer."""
        return self.fold_kernel is not None

    def keras_weight(self, packed_name):
        """The Keras weight name of packed weight `packed_name`.

        Args:
            packed_name: a packed attribute, a value of `weights`.

        Returns:
            The Keras attribute (also the Keras variable's name).

        Raises:
            KeyError: if `packed_name` is not in `weights`.
        """
        for keras_name, name in self.weights.items():
            if name == packed_name:
                return keras_name
        raise KeyError(
            f"{self.name} declares no weight {packed_name!r}; its weights "
            f"are {', '.join(self.weights.values())}."
        )


def _check_class(argument, value, base, expected):
    if not isinstance(value, type) or not issubclass(value, base):
        received = value.__name__ if isinstance(value, type) else repr(value)
        raise TypeError(
            f"Expected `{argument}` to be {expected}. Received: {received}."
        )


def _check_weights(weights):
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError(
            "Expected `weights` to be a non-empty mapping {Keras weight "
            "name: packed weight name}, e.g. {'kernel': 'kernel', 'bias': "
            f"'bias'}}. Received: weights={weights!r}."
        )
    bad = [f"{k!r}: {v!r}" for k, v in weights.items()
           if not (isinstance(k, str) and k and isinstance(v, str) and v)]
    if bad:
        raise ValueError(
            "Expected every entry of `weights` to map a Keras weight name to "
            f"a packed weight name (non-empty strings). Received: "
            f"{', '.join(bad)}."
        )
    packed = list(weights.values())
    twice = sorted({name for name in packed if packed.count(name) > 1})
    if twice:
        raise ValueError(
            "Expected each packed weight to receive one Keras weight. "
            f"Received several for {', '.join(repr(n) for n in twice)}: "
            f"weights={dict(weights)!r}."
        )


_SPECS = []


def specs():
    """Every registered entry, in registration order (built-ins first).

    Returns:
        A tuple of `PackedLayerSpec`.
    """
    return tuple(_SPECS)


def register(spec):
    """Adds `spec` to the registry.

    Args:
        spec: a `PackedLayerSpec`.

    Returns:
        `spec`.

    Raises:
        TypeError: if `spec` is not a `PackedLayerSpec`.
        ValueError: if its Keras class or its packed class has an entry
            already.
    """
    if not isinstance(spec, PackedLayerSpec):
        raise TypeError(
            "Expected a `PackedLayerSpec`. Received: "
            f"{type(spec).__name__}. Build one with "
            "`PackedLayerSpec(keras_class=..., packed_class=..., "
            "weights=..., example=...)`."
        )
    for other in _SPECS:
        for attribute in ("keras_class", "packed_class"):
            cls = getattr(spec, attribute)
            if getattr(other, attribute) is cls:
                raise ValueError(
                    f"Expected one entry per {attribute}. Received a second "
                    f"entry for {cls.__name__}, which the entry of "
                    f"{other.name} (Keras {other.keras_class.__name__}) "
                    "already has. Call `unregister(...)` on that entry "
                    "first to replace it."
                )
    _SPECS.append(spec)
    return spec


def unregister(spec):
    """Removes `spec` (an entry returned by `register`) from the registry.

    Args:
        spec: a registered `PackedLayerSpec`.

    Raises:
        ValueError: if `spec` is not registered.
    """
    for index, entry in enumerate(_SPECS):
        if entry is spec:
            del _SPECS[index]
            return
    registered = ", ".join(entry.name for entry in _SPECS)
    raise ValueError(
        "Expected a registered entry. Received one for "
        f"{getattr(spec, 'name', repr(spec))}, which is not registered "
        f"(registered: {registered}). Pass the object `register` returned."
    )


@contextlib.contextmanager
def registered(spec):
    """Registers `spec` for the duration of a `with` block.

    Args:
        spec: a `PackedLayerSpec`.

    Yields:
        `spec`.

    Raises:
        TypeError, ValueError: as `register`.
    """
    register(spec)
    try:
        yield spec
    finally:
        unregister(spec)


def spec_for_keras_class(cls):
    """The entry whose `keras_class` is exactly `cls`, or None."""
    for spec in _SPECS:
        if spec.keras_class is cls:
            return spec
    return None


def spec_for_packed_class(cls):
    """The entry of `cls` or of its nearest registered base class, or None.

    Args:
        cls: a layer class (typically `type(layer)` of a `PackedLayer`).

    Returns:
        A `PackedLayerSpec`, or None if no class in `cls`'s MRO has one.
    """
    for klass in cls.__mro__:
        for spec in _SPECS:
            if spec.packed_class is klass:
                return spec
    return None


def _batch_norm_config(layer, config):
    """A BatchNormalization's config as TaskBatchNormalization takes it.

    One axis as an int; the renorm arguments, unused without renorm, are
    dropped (with renorm on they stay, and `convert` rejects them).
    """
    axis = config["axis"]
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise UnsupportedLayerError(
                f"Layer '{layer.name}' ({type(layer).__name__}) normalizes "
                f"over axes {axis}; TaskBatchNormalization normalizes over "
                "one axis."
            )
        axis = axis[0]
    config["axis"] = int(axis)
    if not config.get("renorm"):
        config.pop("renorm_clipping", None)
        config.pop("renorm_momentum", None)
    return config


_KERNEL_AND_BIAS = {"kernel": "kernel", "bias": "bias"}

for _spec in (
    PackedLayerSpec(
        keras.layers.Dense, PackedDense, _KERNEL_AND_BIAS,
        example=lambda: (keras.layers.Dense(3), (5,)),
        fold_kernel="kernel"),
    PackedLayerSpec(
        keras.layers.Conv1D, PackedConv1D, _KERNEL_AND_BIAS,
        example=lambda: (keras.layers.Conv1D(3, 2, padding="causal"),
                         (5, 2)),
        fold_kernel="kernel"),
    PackedLayerSpec(
        keras.layers.Conv2D, PackedConv2D, _KERNEL_AND_BIAS,
        example=lambda: (keras.layers.Conv2D(3, 2), (4, 4, 2)),
        fold_kernel="kernel"),
    PackedLayerSpec(
        keras.layers.DepthwiseConv2D, PackedDepthwiseConv2D,
        {"kernel": "depthwise_kernel", "bias": "bias"},
        example=lambda: (keras.layers.DepthwiseConv2D(
            2, depth_multiplier=2), (4, 4, 2)),
        fold_kernel="kernel", fold_axes=2),
    PackedLayerSpec(
        keras.layers.SeparableConv2D, PackedSeparableConv2D,
        {"depthwise_kernel": "depthwise_kernel",
         "pointwise_kernel": "pointwise_kernel", "bias": "bias"},
        example=lambda: (keras.layers.SeparableConv2D(3, 2), (4, 4, 2)),
        fold_kernel="pointwise_kernel"),
    PackedLayerSpec(
        keras.layers.BatchNormalization, TaskBatchNormalization,
        {"gamma": "gamma", "beta": "beta", "moving_mean": "moving_mean",
         "moving_variance": "moving_variance"},
        example=lambda: (keras.layers.BatchNormalization(), (3, 2)),
        config_from_keras=_batch_norm_config),
):
    register(_spec)
del _spec
