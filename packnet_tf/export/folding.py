"""Batch-norm folding: which batch norms fold, and the folded weights.

A `TaskBatchNormalization` right after a linear convolution or dense layer
is, for one task, an affine map per output channel; it folds into that
layer's kernel and bias, so the exported network has no batch norm left.
Which layers it folds into, and into which of their kernels, is declared by
their entries in the packed-layer registry (`fold_kernel`, `fold_axes`).
"""

import itertools

import keras
import numpy as np

from packnet_tf.compat import keras_internals
from packnet_tf.layers import TaskBatchNormalization, registry


def task_row(layer, name, task_id):
    """Task `task_id`'s slot of per-task variable `name` (NumPy)."""
    return np.asarray(getattr(layer, name).numpy()[task_id - 1])


def _is_linear(layer):
    activation = getattr(layer, "activation", None)
    return activation is None or activation is keras.activations.linear


def _channel_axis(layer, rank):
    # Layers without a data_format (Dense) put channels last.
    data_format = getattr(layer, "data_format", "channels_last")
    return 1 if data_format == "channels_first" else rank - 1


def _fold_spec(layer):
    """`layer`'s registry entry if batch norm folds into it, else None."""
    spec = registry.spec_for_packed_class(type(layer))
    return spec if spec is not None and spec.folds_batch_norm else None


def _can_fold(producer, bn):
    if _fold_spec(producer) is None or not isinstance(
            bn, TaskBatchNormalization) or not _is_linear(producer):
        return False
    rank = len(producer.output.shape)
    return bn.axis % rank == _channel_axis(producer, rank)


def _functional_pairs(model):
    """`(producer, bn)` pairs of a functional model's graph.

    Read from the model's config, the format Keras saves graphs in: a layer
    config lists its inbound nodes with the (layer, node, tensor) each
    argument comes from.
    """
    config = model.get_config()
    nodes = {entry["name"]: entry.get("inbound_nodes", [])
             for entry in config["layers"]}
    readers = {}
    for name, inbound in nodes.items():
        for history in keras_internals.config_keras_histories(inbound):
            readers[history[0]] = readers.get(history[0], 0) + 1
    for history in keras_internals.config_output_histories(config):
        readers[history[0]] = readers.get(history[0], 0) + 1
    pairs = []
    for name, inbound in nodes.items():
        sources = keras_internals.config_keras_histories(inbound)
        if len(inbound) != 1 or len(sources) != 1:
            continue
        producer = sources[0][0]
        if len(nodes.get(producer, [])) == 1 and readers[producer] == 1:
            pairs.append((model.get_layer(producer), model.get_layer(name)))
    return pairs


def fold_plan(model):
    """The batch norms that fold into the layer right before them.

    A `TaskBatchNormalization` folds when its only input is the output of a
    packed layer whose registry entry has a `fold_kernel`, with a linear
    activation, that output
    feeds nothing else, both are called once, and the batch norm normalizes
    the channel axis. Nested models are searched too (folds never cross a
    model boundary).

    Args:
        model: a Sequential or functional Keras model.

    Returns:
        A list of `(producer, batch_norm)` layer pairs.
    """
    if isinstance(model, keras.Sequential):
        layers = model.layers
        pairs = list(itertools.pairwise(layers))
    else:
        pairs = _functional_pairs(model)
    plan = [(p, bn) for p, bn in pairs if _can_fold(p, bn)]
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            plan.extend(fold_plan(layer))
    return plan


def batch_norm_affine(bn, task_id):
    """Task `task_id`'s batch norm as `y = x * scale + shift` (float64).

    Args:
        bn: a `TaskBatchNormalization`.
        task_id: the task.

    Returns:
        `(scale, shift)` NumPy vectors over the channels.
    """
    mean = task_row(bn, "moving_mean", task_id).astype("float64")
    variance = task_row(bn, "moving_variance", task_id).astype("float64")
    scale = 1.0 / np.sqrt(variance + bn.epsilon)
    if bn.scale:
        scale = scale * task_row(bn, "gamma", task_id)
    shift = -mean * scale
    if bn.center:
        shift = shift + task_row(bn, "beta", task_id)
    return scale, shift


def fold_into(layer, values, scale, shift):
    """Folds `y = x * scale + shift` into a linear layer's weights.

    Args:
        layer: a packed layer whose registry entry has a `fold_kernel`.
        values: its Keras twin's weights for one task (see
            `export.plain.task_values`).
        scale, shift: the batch norm's affine map over output channels.

    Returns:
        A new dict: `fold_kernel` scaled per output channel (over its last
        `fold_axes` axes, e.g. channel c * multiplier + m of a depthwise
        kernel is `kernel[..., c, m]`), and the bias shifted.
    """
    spec = _fold_spec(layer)
    name = spec.fold_kernel
    per_output = scale.reshape(values[name].shape[-spec.fold_axes:])
    dtype = values[name].dtype
    folded = dict(values)
    folded[name] = (values[name].astype("float64") * per_output).astype(dtype)
    bias = values.get("bias", np.zeros_like(scale))
    folded["bias"] = (bias.astype("float64") * scale + shift).astype(dtype)
    return folded
