"""Checks a trunk, finds its packed layers, and sizes it for `max_tasks`."""

import keras
import numpy as np

from packnet_tf.errors import UnsupportedLayerError
from packnet_tf.layers import registry
from packnet_tf.layers.base import PackedLayer


def supported_layers():
    """Names of the packed classes a trunk may hold weights in (registry)."""
    return tuple(spec.name for spec in registry.specs())


def iter_layers(model):
    """Yields every layer of `model`, descending into nested models.

    Args:
        model: a Keras model.

    Yields:
        Layers in the model's order; a nested model is followed by its layers.
    """
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)


def packed_layers(model):
    """Returns the `PackedLayer`s of `model`, in order."""
    return [l for l in iter_layers(model) if isinstance(l, PackedLayer)]


def check_trunk(trunk):
    """Checks that `trunk` can be shared by tasks.

    Args:
        trunk: the candidate trunk.

    Raises:
        TypeError: if it is not a built Keras functional or Sequential model.
        UnsupportedLayerError: if a layer holds weights but is not packed.
        ValueError: if it has more than one input or output.
    """
    if not isinstance(trunk, keras.Model):
        raise TypeError(
            "Expected `trunk` to be a Keras functional or Sequential model "
            f"made of packed layers. Received: {type(trunk).__name__}"
        )
    try:
        inputs, outputs = trunk.inputs, trunk.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise ValueError(
            "Expected a trunk with a known input shape. Received a model "
            f"'{trunk.name}' that is not built: start it with "
            "`keras.Input(shape=...)`."
        )
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            "Expected a trunk with one input and one output (the features "
            f"the task heads read). Received: {len(inputs)} inputs and "
            f"{len(outputs)} outputs in '{trunk.name}'."
        )
    bad = [
        f"'{layer.name}' ({type(layer).__name__})"
        for layer in iter_layers(trunk)
        if layer.weights
        and not isinstance(layer, (PackedLayer, keras.Model))
    ]
    if bad:
        raise UnsupportedLayerError(
            "Every layer with weights in a trunk must be packed so that "
            f"tasks can share it. Unsupported: {', '.join(bad)}. Use "
            f"{', '.join(supported_layers())} (from `packnet_tf.layers`) or "
            "layers without weights."
        )
    if not packed_layers(trunk):
        raise ValueError(
            f"The trunk '{trunk.name}' has no packed layer: there would be "
            "nothing to share between tasks. Build it from "
            f"{', '.join(supported_layers())}."
        )


def _copy_weights(source, target):
    """Copies `source`'s variables into `target`'s, slot by slot."""
    for src, dst in zip(source.variables, target.variables):
        value = np.asarray(src.numpy())
        if tuple(src.shape) == tuple(dst.shape):
            dst.assign(value)
            continue
        rows = min(src.shape[0], dst.shape[0])
        merged = np.asarray(dst.numpy()).copy()
        merged[:rows] = value[:rows]
        dst.assign(merged)


def sized_trunk(trunk, max_tasks):
    """Returns `trunk` with every packed layer holding `max_tasks` slots.

    If every packed layer already has `max_tasks` slots, `trunk` itself is
    returned. Otherwise the trunk is cloned with `max_tasks` set on its
    packed layers, and the weights, owners and existing task slots are
    copied over; new slots keep their initial values.

    Args:
        trunk: a checked trunk (see `check_trunk`).
        max_tasks: the model's task capacity.

    Returns:
        A Keras model.
    """
    if all(l.max_tasks == max_tasks for l in packed_layers(trunk)):
        return trunk

    def clone_layer(layer):
        config = layer.get_config()
        if isinstance(layer, PackedLayer):
            config["max_tasks"] = max_tasks
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(
        trunk, clone_function=clone_layer, recursive=True
    )
    for source, target in zip(packed_layers(trunk), packed_layers(clone)):
        _copy_weights(source, target)
    return clone
