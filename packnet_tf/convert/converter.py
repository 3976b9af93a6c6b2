"""`convert`: an existing Keras model -> a `PackNetModel`.

The model's graph is cloned with `keras.models.clone_model(recursive=True)`:
every layer whose class has an entry in the packed-layer registry
(`packnet_tf.layers.registry`: Dense, Conv2D, BatchNormalization, ...)
becomes its packed twin with the same arguments and weights (kernels whole,
biases and batch-norm values in task slot 0);
layers without weights pass through unchanged; an adapted `Normalization`
(fixed input statistics, as EfficientNet has) becomes the same layer with
its statistics as constants. Any other layer with weights is rejected with
`UnsupportedLayerError`, before anything is built.

The final classifier (a Dense, or a 1x1 Conv2D as in MobileNet/MobileNetV3,
with the layers without weights after it, e.g. its softmax) is cut off the
trunk. It becomes task 1's head when `first_task` names the task, or is
dropped. A 1x1 Conv2D classifier on a 1x1 map leaves `(batch, 1, 1, C)`
features: the trunk then ends in a Flatten, so that new tasks' Dense heads
read vectors, and task 1's head reshapes them back.
"""

import inspect
import math

import keras

from packnet_tf.compat import keras_internals
from packnet_tf.convert.twins import (check_convertible, copy_weights,
                                      describe, frozen_normalization,
                                      is_frozen_statistics, is_graph_model,
                                      twin_config, twin_spec)
from packnet_tf.core.model import PackNetModel
from packnet_tf.core.planning import DEFAULT_FREE_INIT, check_free_init
from packnet_tf.core.task import validate_task_name
from packnet_tf.core.trunk import iter_layers
from packnet_tf.errors import UnsupportedLayerError
from packnet_tf.layers.base import validate_max_tasks


def _call_layer(layer, *args, **kwargs):
    """Replays a recorded call on a clone, minus a `mask=None` it lacks.

    Sequential models record `mask=None` for layers that accept a mask
    (BatchNormalization); the packed twins take none.
    """
    if "mask" in kwargs and "mask" not in inspect.signature(
            layer.call).parameters:
        if kwargs["mask"] is not None:
            raise UnsupportedLayerError(
                f"Layer {describe(layer)} receives a mask, which packed "
                "layers do not apply. Remove the masking before converting."
            )
        kwargs.pop("mask")
    return layer(*args, **kwargs)


def _is_classifier(layer):
    if type(layer) is keras.layers.Dense:
        return True
    return type(layer) is keras.layers.Conv2D and tuple(
        layer.kernel_size) == (1, 1)


def _reads_a_vector(classifier, features):
    """Whether `classifier` is a 1x1 Conv2D on a 1x1 map (MobileNet's).

    Such a trunk ends in `(batch, 1, 1, channels)` features; it is given a
    Flatten so that new tasks' Dense heads read plain vectors, and the head
    reshapes them back.
    """
    shape = tuple(features.shape[1:])
    return type(classifier) is keras.layers.Conv2D and None not in shape and (
        math.prod(shape) == max(shape))


def find_classifier(model):
    """Walks back from `model`'s output to its final classifier.

    Args:
        model: a Functional or Sequential model with one output.

    Returns:
        `(classifier, node, chain, stop)`: the classifier layer and its
        call node, the `(operation, node)` pairs without weights after it
        (in call order), and None; or `(None, None, [], stop)` where `stop`
        is the operation that ended the walk.
    """
    tensor = model.outputs[0]
    chain = []
    while True:
        operation, node_index, _ = keras_internals.keras_history(tensor)
        if operation is None or isinstance(operation, keras.layers.InputLayer):
            return None, None, [], operation
        node = keras_internals.inbound_node(operation, node_index)
        if _is_classifier(operation) and len(node.input_tensors) == 1:
            return operation, node, chain[::-1], None
        if (
            getattr(operation, "weights", None)
            or isinstance(operation, keras.Model)
            or len(node.input_tensors) != 1
        ):
            return None, None, [], operation
        chain.append((operation, node))
        tensor = node.input_tensors[0]


def _build_head(classifier, node, chain, name):
    """A copy of the classifier plus the layers after it, as one layer."""
    features = node.input_tensors[0]
    config = classifier.get_config()
    flat = _reads_a_vector(classifier, features)
    if not chain and not flat:
        config["name"] = f"head_{name}"
    dense = type(classifier).from_config(config)
    if flat:
        head_input = keras.Input(
            shape=(math.prod(features.shape[1:]),), dtype=features.dtype)
        x = keras.layers.Reshape(tuple(features.shape[1:]))(head_input)
    else:
        head_input = keras.Input(
            batch_shape=tuple(features.shape), dtype=features.dtype)
        x = head_input
    x = dense(x)
    dense.set_weights(classifier.get_weights())
    if not chain and not flat:
        return dense
    previous = node.outputs[0]
    for operation, op_node in chain:
        args, kwargs = op_node.arguments.fill_in({id(previous): x})
        x = operation(*args, **kwargs)
        previous = op_node.outputs[0]
    return keras.Model(head_input, x, name=f"head_{name}")


def _check_model(model):
    if not is_graph_model(model):
        raise TypeError(
            "Expected a Keras Functional or Sequential model (the graph is "
            "cloned layer by layer). Received: "
            f"{type(model).__name__}. Rebuild a subclassed model with the "
            "functional API first."
        )
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise ValueError(
            f"The model '{model.name}' is not built: start it with "
            "`keras.Input(shape=...)` or call `model.build(input_shape)`."
        )
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            "Expected a model with one input and one output. Received "
            f"{len(inputs)} inputs and {len(outputs)} outputs in "
            f"'{model.name}'."
        )


def convert(model, max_tasks, first_task=None, free_init=DEFAULT_FREE_INIT):
    """Turns a Keras Functional or Sequential model into a `PackNetModel`.

    The trunk is the model's graph from its input to the input of its final
    classifier, with every layer the packed-layer registry has an entry
    for (`packnet_tf.layers.registry.specs()`; README lists them) replaced
    by its packed twin (same arguments, weights copied; biases and
    batch-norm values go to task slot 0). Layers without weights pass through; an adapted
    Normalization keeps its statistics as constants. Trainable flags are
    kept: a layer with `trainable=False` will not train for later tasks
    either (set `model.trunk.trainable = True` to change that).

    The final classifier is the Dense (or 1x1 Conv2D) that produces the
    output, together with the layers without weights after it (Activation,
    Softmax, Flatten, Reshape, ...). Behind a 1x1 Conv2D on a 1x1 map the
    trunk gets a Flatten, so its features are vectors.

    - `first_task="name"`: the classifier, activation included, becomes the
      head of task 1, which owns every weight of the trunk and is active and
      still training (`prune`, `fit`, then `end_task`). Right after
      conversion the model gives the original's outputs (the original's
      probabilities if it ends in a softmax: fine-tune task 1 with a loss
      on probabilities, `from_logits=False`). A model without a classifier
      (`include_top=False`) makes task 1 a headless task
      (`PackNetModel.add_task(headless=True)`): the pretrained weights
      themselves, to prune without data and freeze for later tasks
      (`model.prune(0.5); model.end_task()`), the paper's ImageNet step.
    - `first_task=None`: the classifier is dropped and no task exists; the
      weights are free and the first `add_task` starts from them. If the
      output does not come from a classifier (e.g. `include_top=False`),
      the whole model is the trunk.

    Args:
        model: a built Keras Functional or Sequential model with one input
            and one output (nested Functional/Sequential models are
            converted too).
        max_tasks: the most tasks the network will hold, in [1, 255].
        first_task: name for the model's own task, or None.
        free_init: where later tasks start their free weights (see
            `PackNetModel`).

    Returns:
        A `PackNetModel`.

    Raises:
        UnsupportedLayerError: for a layer with weights that has no packed
            twin (Embedding, LayerNormalization, MultiHeadAttention,
            Conv2DTranspose, LSTM, subclassed layers, ...) or an argument a
            twin cannot honour; nothing is built then.
        TypeError, ValueError: for a subclassed or unbuilt model, or bad
            `max_tasks` or `first_task`.

    Example:

    >>> base = keras.applications.MobileNetV2(
    ...     input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10)
    >>> model = convert(base, max_tasks=4, first_task="cifar10")
    >>> model.prune(0.5)         # frees half of task 1's weights
    >>> model.end_task(recalibrate=False)  # no data: converted statistics
    >>> train_task(model, "svhn", (x, y), num_classes=10)
    """
    max_tasks = validate_max_tasks(max_tasks, allow_none=False)
    check_free_init(free_init)
    if first_task is not None:
        validate_task_name(first_task, [])
    _check_model(model)
    classifier, node, chain, stop = find_classifier(model)
    cut = model.outputs[0] if classifier is None else node.input_tensors[0]
    # One tensor, not a list of one: the trunk is called with a tensor.
    source = keras.Model(model.inputs[0], cut, name=f"{model.name}_trunk")
    if classifier is not None and any(
            l is classifier for l in iter_layers(source)):
        raise ValueError(
            f"The classifier {describe(classifier)} is also used inside "
            "the trunk; a head serves one task only. Give the trunk its "
            "own layer."
        )
    check_convertible(source, max_tasks)

    pairs = []

    def clone_layer(layer):
        if twin_spec(layer) is not None:
            twin_cls, config = twin_config(layer, max_tasks)
            twin = twin_cls.from_config(config)
            pairs.append((layer, twin))
            return twin
        if is_frozen_statistics(layer):
            return frozen_normalization(layer)
        return layer  # no weights: shared as is

    trunk = keras.models.clone_model(
        source, clone_function=clone_layer, call_function=_call_layer,
        recursive=True)
    for layer, twin in pairs:
        copy_weights(layer, twin)
    if classifier is not None and _reads_a_vector(classifier, cut):
        flat = keras.layers.Flatten(name=f"{classifier.name}_features")
        trunk = keras.Model(trunk.input, flat(trunk.output), name=trunk.name)
    packnet = PackNetModel(trunk, max_tasks=max_tasks, free_init=free_init,
                           name=model.name)
    if first_task is not None and classifier is None:
        # A backbone without a classifier: its weights become a task of
        # their own, without a head, for later tasks to read.
        packnet.add_task(first_task, headless=True)
    elif first_task is not None:
        head = _build_head(classifier, node, chain, first_task)
        packnet.add_task(first_task, head=head)
    return packnet
