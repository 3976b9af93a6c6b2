"""Packed twins of Keras layers: their arguments, weights, and what cannot be packed.

`convert` replaces every layer that has an entry in the packed-layer
registry (`packnet_tf.layers.registry`) with its packed twin. This module
says, per layer, which twin (the entry's `packed_class`), with which
arguments (an argument a twin cannot honour is an error, never dropped),
and how the weights move over (the entry's `weights`): kernels whole,
biases and batch-norm values to task slot 0. An adapted `Normalization` has
fixed statistics, so it becomes the same layer with its statistics as
constants (no weights left to share).
"""

import inspect

import keras

from packnet_tf.compat import keras_internals
from packnet_tf.core.trunk import iter_layers
from packnet_tf.errors import UnsupportedLayerError
from packnet_tf.layers import registry

#: Keras arguments the twins lack, with the value that means "not used":
#: any other value is an error, never silently dropped.
INERT_ARGUMENTS = {
    "quantization_config": None,
    "lora_rank": None,
    "lora_alpha": None,
    "synchronized": False,
    "renorm": False,
}

#: Layer names listed per unsupported class in the error.
MAX_NAMES_SHOWN = 3



def supported_message():
    """The sentence naming the layers `convert` accepts (from the registry)."""
    names = ", ".join(
        spec.keras_class.__name__ for spec in registry.specs())
    return (
        f"Supported layers with weights: {names} (packed per task), "
        "Normalization (its statistics become constants), and "
        "Functional/Sequential models made of these; any layer without "
        "weights passes through."
    )


def accepted_arguments(cls):
    """Names every `__init__` along `cls`'s MRO takes (with the weight
    arguments a `PackedKernelLayer` reads from its `**kwargs`)."""
    names = set(getattr(cls, "weight_arguments", dict)())
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                names.add(p.name)
    names.discard("self")
    return names


def describe(layer):
    """`'name' (Class)`, for messages."""
    return f"'{layer.name}' ({type(layer).__name__})"


def is_graph_model(obj):
    """Whether `obj` is a Functional or Sequential model (a known graph)."""
    return keras_internals.is_functional(obj) or isinstance(
        obj, keras.Sequential)


def twin_spec(layer):
    """The registry entry that packs `layer` (matched by exact class), or None."""
    return registry.spec_for_keras_class(type(layer))


def is_frozen_statistics(layer):
    """Whether `layer` is an adapted `Normalization` (statistics as weights)."""
    return type(layer) is keras.layers.Normalization and bool(layer.weights)


def twin_config(layer, max_tasks):
    """The packed twin's config for a supported Keras `layer`.

    Args:
        layer: a layer whose exact class has a registry entry
            (`twin_spec(layer)` is not None).
        max_tasks: task slots of the twin.

    Returns:
        `(twin class, config)`.

    Raises:
        UnsupportedLayerError: for an argument the twin cannot honour
            (LoRA, quantization, batch renormalization, a multi-axis batch
            norm, or any argument the twin does not know).
    """
    spec = twin_spec(layer)
    twin_cls = spec.packed_class
    config = dict(layer.get_config())
    # Dense leaves activity_regularizer out of its config.
    config["activity_regularizer"] = keras.regularizers.serialize(
        layer.activity_regularizer)
    if getattr(layer.dtype_policy, "quantization_mode", None):
        raise UnsupportedLayerError(
            f"Layer {describe(layer)} is quantized "
            f"({layer.dtype_policy.name}); packed layers need float "
            "weights. Convert the float model before quantizing it."
        )
    if spec.config_from_keras is not None:
        config = spec.config_from_keras(layer, config)
    accepted = accepted_arguments(twin_cls)
    for key in list(config):
        if key in accepted:
            continue
        value = config.pop(key)
        if key in INERT_ARGUMENTS and value == INERT_ARGUMENTS[key]:
            continue
        fix = (f" (or with {key}={INERT_ARGUMENTS[key]!r})"
               if key in INERT_ARGUMENTS else "")
        raise UnsupportedLayerError(
            f"Layer {describe(layer)} has {key}={value!r}, which "
            f"{twin_cls.__name__} does not support. Rebuild the layer "
            f"without `{key}`{fix} before converting."
        )
    config["max_tasks"] = max_tasks
    return twin_cls, config


def check_weights_mapped(layer):
    """Raises if `layer` holds a weight the twin would not receive."""
    mapped = {
        id(getattr(layer, name)) for name in twin_spec(layer).weights
        if getattr(layer, name, None) is not None
    }
    left = [w.path for w in layer.weights if id(w) not in mapped]
    if left:
        raise UnsupportedLayerError(
            f"Layer {describe(layer)} holds weights {left} that its packed "
            "twin has no place for (LoRA or renorm state?). Remove them "
            "before converting."
        )


def check_convertible(model, max_tasks=1):
    """Raises if any layer of `model` cannot be converted.

    Args:
        model: a Keras model (nested models are checked layer by layer).
        max_tasks: used to validate the twins' arguments.

    Raises:
        UnsupportedLayerError: naming every layer with weights that has no
            packed twin, or the first argument a twin cannot honour.
    """
    bad = {}
    for layer in iter_layers(model):
        if is_graph_model(layer):
            continue  # its layers follow in iter_layers
        if twin_spec(layer) is not None:
            twin_config(layer, max_tasks)
            check_weights_mapped(layer)
        elif is_frozen_statistics(layer):
            continue
        elif layer.weights:
            bad.setdefault(type(layer).__name__, []).append(layer.name)
    if bad:
        found = "; ".join(
            f"{len(names)} {cls} ("
            + ", ".join(repr(n) for n in names[:MAX_NAMES_SHOWN])
            + (", ..." if len(names) > MAX_NAMES_SHOWN else "") + ")"
            for cls, names in bad.items()
        )
        raise UnsupportedLayerError(
            f"Cannot convert '{model.name}': it has layers with weights "
            f"that have no packed twin: {found}. A layer with weights must "
            f"be packed so that tasks can share it. {supported_message()} "
            "Layers are matched by exact class: a subclass may compute "
            "differently, so it is rejected too."
        )


def copy_weights(source, twin):
    """Copies `source`'s weights: kernels whole, per-task values to slot 0."""
    per_task = {id(v) for v in twin.per_task_variables()}
    for source_name, twin_name in twin_spec(source).weights.items():
        variable = getattr(source, source_name, None)
        if variable is None:
            continue
        value = keras.ops.convert_to_numpy(variable)
        target = getattr(twin, twin_name)
        if id(target) in per_task:
            slots = keras.ops.convert_to_numpy(target).copy()
            slots[0] = value
            value = slots
        target.assign(value)


def frozen_normalization(layer):
    """`layer` (an adapted Normalization) with its statistics as constants."""
    config = dict(layer.get_config())
    config["mean"] = keras.ops.convert_to_numpy(layer.adapt_mean).tolist()
    config["variance"] = keras.ops.convert_to_numpy(
        layer.adapt_variance).tolist()
    return keras.layers.Normalization.from_config(config)
