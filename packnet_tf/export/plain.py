"""One task of a `PackNetModel` as a plain Keras network.

Every packed layer becomes its Keras twin, the `keras_class` of its entry
in the packed-layer registry (`PackedConv2D` -> `Conv2D`, ...), holding the
task's *effective* weights: kernel entries owned by tasks 1..t,
zeros elsewhere, and task t's own bias. A `TaskBatchNormalization` that
directly follows a linear layer whose entry has a `fold_kernel` is folded
into it (`packnet_tf.export.folding`); any other one becomes a `BatchNormalization`
with task t's statistics.

The graph is rebuilt with `keras.models.clone_model` rather than traced by
hand: Keras' own cloning already handles Sequential and functional trunks
with branches (residual `Add`s, concatenations) and nested models, so only
the packed layers need a rule; layers without weights are reused as they are.
"""

import keras
import numpy as np
import tensorflow as tf

from packnet_tf.export.checks import select_tasks
from packnet_tf.export.folding import (batch_norm_affine, fold_into, fold_plan,
                                       task_row)
from packnet_tf.export.precision import (float32_config, float32_layer,
                                         float32_policy)
from packnet_tf.layers import PackedLayer, ownership, registry


def twin_spec(layer):
    """The registry entry of `layer` (a `PackedLayer`), for its export.

    Args:
        layer: a `PackedLayer`; a subclass without an entry of its own
            exports as its nearest registered base class.

    Returns:
        A `PackedLayerSpec`.

    Raises:
        TypeError: if no class of `layer`'s has an entry.
    """
    spec = registry.spec_for_packed_class(type(layer))
    if spec is None:
        raise TypeError(
            f"No plain Keras twin for {type(layer).__name__}: its class has "
            "no entry in the packed-layer registry. Register one with "
            "`packnet_tf.layers.registry.register(PackedLayerSpec(...))`."
        )
    return spec


def twin_class(layer):
    """The Keras class that `layer` (a `PackedLayer`) becomes."""
    return twin_spec(layer).keras_class


def twin_variable_name(layer, packed_name):
    """Name of packed variable `packed_name` in `layer`'s Keras twin.

    E.g. `PackedDepthwiseConv2D`'s `depthwise_kernel` is `kernel` in
    `keras.layers.DepthwiseConv2D` (the entry's `weights` says so).
    """
    return twin_spec(layer).keras_weight(packed_name)


def groups_of(layer):
    """The `groups` of a grouped convolution, else 1."""
    return getattr(layer, "groups", 1)


def expand_groups(kernel, groups):
    """A grouped convolution's kernel as the equivalent ungrouped one.

    Keras' TensorFlow backend runs grouped convolutions through an XLA
    (`jit_compile`) function, which TF Serving does not run unless started
    with `--xla_cpu_compilation_enabled`. The twin is an ungrouped
    convolution instead: input group j meets output group j's weights and
    zeros elsewhere (exact; `groups` times the multiply-adds).

    Args:
        kernel: a `(..., in_channels // groups, filters)` tensor.
        groups: the number of groups.

    Returns:
        A `(..., in_channels, filters)` tensor.
    """
    if groups == 1:
        return kernel
    filters = kernel.shape[-1]
    per_group = filters // groups
    blocks = []
    for group in range(groups):
        mask = np.zeros([filters], tf.as_dtype(kernel.dtype).as_numpy_dtype)
        mask[group * per_group:(group + 1) * per_group] = 1
        blocks.append(kernel * mask)
    return tf.concat(blocks, axis=-2)


def make_twin(layer, with_bias=False):
    """An unbuilt Keras twin of `layer` with the same arguments.

    The twin computes in float32 where `layer` computes in half precision
    (`packnet_tf.export.precision`).

    Args:
        layer: a `PackedLayer`.
        with_bias: force a bias (a folded batch norm needs one).
    """
    config = float32_config(layer)
    config.pop("max_tasks", None)
    if with_bias:
        config["use_bias"] = True
    if groups_of(layer) > 1:
        config["groups"] = 1  # see `expand_groups`
    return twin_class(layer).from_config(config)


def task_values(layer, task_id, folded_bn=None):
    """The weights of `layer`'s Keras twin for task `task_id`.

    Args:
        layer: a `PackedLayer`.
        task_id: the task (1-based).
        folded_bn: a `TaskBatchNormalization` to fold into the result.

    Returns:
        A dict `{twin variable name: NumPy array}`.
    """
    spec = twin_spec(layer)
    values = {}
    kernels = set()
    for name, kernel, owner in layer.packed_kernels():
        visible = np.asarray(ownership.visible_mask(owner, task_id))
        visible = np.where(visible, kernel.numpy(), 0).astype(kernel.dtype)
        values[spec.keras_weight(name)] = np.asarray(
            expand_groups(visible, groups_of(layer)))
        kernels.add(name)
    for keras_name, name in spec.weights.items():
        if name not in kernels and getattr(layer, name, None) is not None:
            values[keras_name] = task_row(layer, name, task_id)
    if folded_bn is not None:
        values = fold_into(layer, values,
                           *batch_norm_affine(folded_bn, task_id))
    return values


def plain_trunk(trunk, task_id=None, fold_batch_norm=True):
    """Clones `trunk` with every packed layer swapped for its Keras twin.

    Args:
        trunk: a `PackNetModel`'s trunk.
        task_id: the task whose weights the twins get; None leaves them at
            their initial values (for callers that map the variables
            themselves, see `packnet_tf.export.modules`).
        fold_batch_norm: fold batch norms into the preceding layer where
            `fold_plan` allows; the folded batch norm becomes an `Identity`.

    Returns:
        `(clone, twins)`: the Keras model, and a list of
        `(packed layer, twin layer, folded batch norm or None)`.
    """
    plan = fold_plan(trunk) if fold_batch_norm else []
    folds_into = {id(p): bn for p, bn in plan}
    folded = {id(bn) for _, bn in plan}
    twins = []

    def clone_layer(layer):
        if not isinstance(layer, PackedLayer):
            return float32_layer(layer)  # no weights: reused where float32
        if id(layer) in folded:
            return keras.layers.Identity(name=layer.name)
        bn = folds_into.get(id(layer))
        twin = make_twin(layer, with_bias=bn is not None)
        twins.append((layer, twin, bn))
        return twin

    with float32_policy():  # the clone's own inputs and nested models
        clone = keras.models.clone_model(
            trunk, clone_function=clone_layer, recursive=True)
    if task_id is not None:
        for layer, twin, bn in twins:
            values = task_values(layer, task_id, bn)
            for variable in twin.weights:
                variable.assign(values[variable.name])
    return clone, twins


def call_head_copy(head, features):
    """Calls a copy of a task head, with its own weights, on `features`.

    Heads are arbitrary Keras layers: a model is cloned, a layer rebuilt
    from its config. A layer that cannot be rebuilt is used as it is (it
    belongs to a finished task, so its weights no longer change).

    Args:
        head: the task's head layer.
        features: a symbolic Keras tensor of the trunk's output.

    Returns:
        The symbolic output.
    """
    try:
        if isinstance(head, keras.Model):
            copy = keras.models.clone_model(
                head, clone_function=lambda layer: layer.__class__.from_config(
                    float32_config(layer)))
        else:
            copy = head.__class__.from_config(float32_config(head))
        outputs = copy(features, training=False)
        copy.set_weights(head.get_weights())
    except Exception:  # noqa: BLE001 - arbitrary user layers fail in many ways
        return head(features, training=False)
    return outputs


def plain_model(model, task, fold_batch_norm=True):
    """Task `task` of `model` as a plain Keras model.

    Args:
        model: a `PackNetModel`.
        task: the name of a finished task.
        fold_batch_norm: fold batch norms into the layer before them.

    Returns:
        A functional `keras.Model` from the trunk's input (named `inputs`)
        to the task head's output, made of Keras' own layers; it computes
        what `model` computes for `task` (up to float rounding).

    Raises:
        ValueError: for an unknown task.
        TaskStateError: for a task that has not finished.

    Example:

    >>> keras_model = plain_model(model, "cars")
    >>> keras_model.save("cars.keras")   # loads without packnet_tf
    """
    info = select_tasks(model, [task])[0]
    trunk, _ = plain_trunk(model.trunk, info.task_id, fold_batch_norm)
    spec = model.trunk.inputs[0]
    with float32_policy():
        inputs = keras.Input(shape=tuple(spec.shape[1:]), dtype=spec.dtype,
                             name="inputs")
        outputs = call_head_copy(model.heads[info.task_id - 1],
                                 trunk(inputs, training=False))
        return keras.Model(inputs, outputs, name=info.name)
