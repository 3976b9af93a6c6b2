"""Every private Keras API packnet_tf relies on, in one place.

Keras 3 has no public way to do a few things PackNet needs: add a task head
to a built model, walk a functional graph from its outputs, tell when the
model was compiled again, update the loss Keras reports, and work around
its multi-worker `fit` (keras-team/keras#20585). Each such use is one
function, class or constant here, named for what it does, and
`tests/test_keras_compat.py` pins each one with a test that fails when a
Keras release removes or changes it. When one fails, change the function
here (and its callers, if the meaning changed), not the callers alone.

Seen working on Keras 3.15.1 with the TensorFlow backend.
"""

from keras.src.models.functional import Functional  # no public alias

#: The `class_name` Keras gives a tensor reference inside a saved model
#: config (`{"class_name": ..., "config": {"keras_history": [...]}}`).
CONFIG_TENSOR_CLASS = "__keras_tensor__"


class OpenStateMixin:
    """Keeps a model's state open after `build()`: sub-layers can be added.

    Keras 3 locks a layer's state when `build()` ends, so a built subclassed
    model cannot gain a sub-layer or variable (a new task head) any more.
    Keras' own `Functional` overrides the private `Layer._lock_state` hook
    with a no-op for the same reason; this mixin does the same. Mix it in
    before `keras.Model`. Used by `packnet_tf.core.model.PackNetModel`.
    """

    def _lock_state(self):
        pass


def is_functional(obj):
    """Whether `obj` is a Keras functional model (`keras.Model(inputs, outputs)`).

    Keras exports no public alias of its `Functional` class. Used by
    `packnet_tf.convert.twins` (with `keras.Sequential`: a model whose graph is
    known).

    Args:
        obj: any object.

    Returns:
        True for a functional model (not for Sequential or subclassed ones).
    """
    return isinstance(obj, Functional)


def keras_history(tensor):
    """Where a symbolic Keras tensor comes from.

    Used by `packnet_tf.convert.converter` to walk a model back from its output.

    Args:
        tensor: a `keras.KerasTensor` of a functional or Sequential graph.

    Returns:
        `(operation, node_index, tensor_index)`: the layer (or op) that
        produced it, which of its calls, and which of that call's outputs.
    """
    operation, node_index, tensor_index = tensor._keras_history
    return operation, node_index, tensor_index


def inbound_node(operation, index):
    """Call number `index` of a layer in a graph (a Keras `Node`).

    The node's `input_tensors` are that call's inputs. Used by
    `packnet_tf.convert.converter` with the `node_index` of `keras_history`.

    Args:
        operation: a layer or op of a functional or Sequential graph.
        index: which of its calls, from `keras_history`.

    Returns:
        The `Node` of that call.
    """
    return operation._inbound_nodes[index]


def config_keras_histories(structure):
    """Every tensor reference in (part of) a functional model's config.

    A layer entry of `model.get_config()["layers"]` lists its inputs under
    `"inbound_nodes"`, each input as a `CONFIG_TENSOR_CLASS` dict with its
    `keras_history`. (The model's outputs are not in that form: see
    `config_output_histories`.) Used by `packnet_tf.export.folding` to find
    which layer feeds which.

    Args:
        structure: a config value (dicts and lists nest freely).

    Returns:
        A list of `(layer_name, node_index, tensor_index)` tuples, in the
        order they appear.
    """
    if isinstance(structure, dict):
        if structure.get("class_name") == CONFIG_TENSOR_CLASS:
            return [tuple(structure["config"]["keras_history"])]
        return [h for v in structure.values()
                for h in config_keras_histories(v)]
    if isinstance(structure, (list, tuple)):
        return [h for v in structure for h in config_keras_histories(v)]
    return []


def config_output_histories(config):
    """The outputs of a functional model's config, as tensor references.

    `config["output_layers"]` holds bare `[layer, node, tensor]` triples,
    not `CONFIG_TENSOR_CLASS` dicts: one triple for a single output, a
    list of them for several.

    Args:
        config: `model.get_config()` of a functional model.

    Returns:
        A list of `(layer_name, node_index, tensor_index)` tuples.
    """
    outputs = config.get("output_layers", [])
    if outputs and isinstance(outputs[0], str):
        outputs = [outputs]
    return [tuple(output) for output in outputs]


def compile_state(model):
    """An object Keras makes anew on every `compile()` of `model`.

    Traced functions (`predict_function` ...) belong to one compile; a
    cached one is reusable while this object is the same (compare with
    `is` or `id`). Used by `packnet_tf.core.model` to keep one traced predict
    function per task.

    Args:
        model: a `keras.Model`.

    Returns:
        The model's compile configuration, or None before `compile()`.
    """
    return getattr(model, "_compile_config", None)


def loss_tracker(model):
    """The metric Keras reports as `"loss"` in `fit` and `evaluate`.

    Keras' own train and test steps update it with the (unscaled) loss,
    weighted by the batch size; a model that overrides those steps must do
    the same for the reported loss to be right. Used by
    `packnet_tf.core.masked_training`.

    Args:
        model: a `keras.Model`.

    Returns:
        A `keras.metrics.Mean` named "loss", or None before `compile()`.
    """
    return getattr(model, "_loss_tracker", None)


def model_strategy(model):
    """The `tf.distribute` strategy `model` was created under, or None.

    Unlike the public `model.distribute_strategy`, this is None for a model
    made outside any strategy scope; Keras' `_maybe_symbolic_build` builds
    nothing then. Used by `packnet_tf.compat.distribute.MultiWorkerFitMixin`.

    Args:
        model: a `keras.Model`.

    Returns:
        A `tf.distribute.Strategy` or None.
    """
    return model._distribute_strategy


def first_batch(epoch_iterator):
    """The first batch of the epoch iterator Keras' `fit` builds from.

    Keras' TensorFlow trainer calls the private hook
    `Model._maybe_symbolic_build(iterator=..., data_batch=None)` from `fit`
    and `evaluate`; its iterator yields `(begin_step, end_step, iterator)`
    triples. Takes the first batch, as Keras does. Used by
    `packnet_tf.compat.distribute.MultiWorkerFitMixin`, which overrides that hook.

    Args:
        epoch_iterator: the `iterator` `_maybe_symbolic_build` received.

    Returns:
        The batch (a structure of distributed values under a strategy), or
        None when the iterator is empty.
    """
    for _, _, iterator in epoch_iterator:
        return next(iterator)
    return None



def traced_predict_function(model):
    """The predict function Keras traced for `model`, or None.

    Keras' trainer keeps its traced functions in the attributes
    `train_function`, `test_function` and `predict_function` and traces one
    anew when it is None. Used by `packnet_tf.core.model` to keep one traced
    predict function per task (with `compile_state`).

    Args:
        model: a `keras.Model`.

    Returns:
        The traced function, or None when none is traced.
    """
    return getattr(model, "predict_function", None)


def retrace(model, predict_function=None):
    """Makes Keras trace `model`'s train and test steps again on next use.

    A model whose `call` branches in Python (PackNet's active task picks
    the head) needs new traced functions when the branch changes. Used by
    `packnet_tf.core.model` and `packnet_tf.evaluation.baselines`.

    Args:
        model: a `keras.Model`.
        predict_function: the traced predict function to use from now on
            (one kept from an earlier `traced_predict_function`), or None
            to trace predict again too.
    """
    model.train_function = None
    model.test_function = None
    model.predict_function = predict_function
