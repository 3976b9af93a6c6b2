"""The `tf.Module`s the exporters save: the variables and one function per task.

A module holds plain `tf.Variable`s and `tf.function`s only, and is saved
with `tf.saved_model.save`: the result is an ordinary TensorFlow graph that
loads without Keras or packnet_tf, and every weight is stored once (Keras
3.15's `ExportArchive` stores each twice, keras-team/keras#23553).

Two kinds:

- `TaskModule`: one task, baked. Its variables are the weights of
  `plain_model(model, task)`: masks applied, batch norm folded.
- `SharedTasksModule`: several tasks sharing one copy of the packed kernels,
  with their uint8 owner masks, the per-task biases and batch-norm values
  and every task's head. Task t's function masks the kernels when it runs.
"""

import keras
import numpy as np
import tensorflow as tf

from packnet_tf import ownership
from packnet_tf.export.checks import signature_name
from packnet_tf.export.plain import (
    call_head_copy,
    expand_groups,
    groups_of,
    plain_model,
    plain_trunk,
    twin_variable_name,
)

#: Input and output names of every exported signature.
INPUT_NAME = "inputs"
OUTPUT_NAME = "outputs"


def input_spec(model):
    """The `tf.TensorSpec` of a batch of `model`'s inputs."""
    spec = model.trunk.inputs[0]
    return tf.TensorSpec(
        (None,) + tuple(spec.shape[1:]), tf.as_dtype(spec.dtype),
        name=INPUT_NAME)


class _Untracked:
    """Holds Keras objects out of the module's saved object graph.

    A `tf.Module` saves every trackable attribute; Keras layers are
    trackable, and saving them would store the Keras objects and their
    weights again. Only the tf.Variables listed on the module are saved.
    """

    def __init__(self, **items):
        self.__dict__.update(items)


def _variables(keras_model):
    # The tf.Variables under the Keras ones: tracking these (not the Keras
    # wrappers) stores each weight once.
    return [v.value for v in keras_model.weights]


class TaskModule(tf.Module):
    """One finished task as a plain network with baked weights.

    Args:
        model: a `PackNetModel`.
        task: the task's `TaskInfo` (finished).

    Attributes:
        predict: the `tf.function` from a batch of inputs to
            `{"outputs": head output}`.
    """

    def __init__(self, model, task):
        super().__init__(name=f"task_{task.task_id}")
        keras_model = plain_model(model, task.name)
        self.weights = _variables(keras_model)

        @tf.function(input_signature=[input_spec(model)])
        def serve(inputs):
            return {OUTPUT_NAME: keras_model(inputs, training=False)}

        self.predict = serve
        self.task_name = task.name

    def signatures(self):
        """`{key: concrete function}`: `serving_default` and `task_<name>`."""
        function = self.predict.get_concrete_function()
        return {"serving_default": function,
                signature_name(self.task_name): function}


# Neither module names its function `serve`: the TFLite converter takes a
# SavedModel with a `serve` attribute for a `keras.Model.export` artifact
# and converts only that endpoint.


class SharedTasksModule(tf.Module):
    """Several finished tasks sharing one copy of the packed weights.

    Stored: every packed kernel once (entries of later, unexported tasks
    zeroed), its uint8 owner mask, the first `max task` slots of every
    per-task variable, and the exported tasks' heads. Task t's function
    masks each kernel to the entries owned by tasks 1..t and runs an unfolded
    plain twin of the trunk on those values (`keras.StatelessScope` maps the
    twin's variables to them).

    Args:
        model: a `PackNetModel`.
        tasks: the `TaskInfo`s to export (finished).
        run_time_task: compute the task id from the input's (run-time)
            batch size, so that a converter cannot fold a masked copy of the
            kernels per task (see `packnet_tf.export.tflite`).
    """

    def __init__(self, model, tasks, run_time_task=False):
        super().__init__(name="tasks")
        self._run_time_task = run_time_task
        top = max(t.task_id for t in tasks)
        trunk, twins = plain_trunk(model.trunk, fold_batch_norm=False)
        self._keras = _Untracked(trunk=trunk, sources=[], heads={})
        self.kernels, self.owners, self.slots = [], [], []
        for layer, twin, _ in twins:
            source = {}
            for name, kernel, owner in layer.packed_kernels():
                owner = np.asarray(owner.numpy())
                kept = (owner > ownership.FREE) & (owner <= top)
                self.kernels.append(tf.Variable(
                    np.where(kept, kernel.numpy(), 0), trainable=False,
                    name=f"{layer.name}_{name}"))
                owner = np.where(kept, owner, ownership.FREE).astype(
                    owner.dtype)
                if run_time_task:
                    # One more row to slice the owners from: see `_visible`.
                    owner = np.concatenate(
                        [owner, np.zeros((1,) + owner.shape[1:], owner.dtype)])
                self.owners.append(tf.Variable(
                    owner, trainable=False, name=f"{layer.name}_{name}_owner"))
                source[twin_variable_name(layer, name)] = (
                    "kernel", len(self.kernels) - 1, groups_of(layer))
            for variable in layer.per_task_variables():
                self.slots.append(tf.Variable(
                    variable.numpy()[:top], trainable=False,
                    name=f"{layer.name}_{variable.name}"))
                source[variable.name] = ("slot", len(self.slots) - 1, 1)
            self._keras.sources.append((twin, source))
        self.head_weights = []
        for task in tasks:
            features = keras.Input(tuple(model.trunk.outputs[0].shape[1:]))
            head = keras.Model(
                features,
                call_head_copy(model.heads[task.task_id - 1], features))
            self._keras.heads[task.name] = head
            self.head_weights.extend(_variables(head))
        spec = input_spec(model)
        self.predict = {
            task.name: self._function(task, spec) for task in tasks}

    def _visible(self, index, task_id, zero):
        owner = self.owners[index]
        kernel = self.kernels[index]
        if self._run_time_task:
            # The owners are sliced from one row more, at a run-time start
            # (0): a converter can neither fold the slice (start unknown)
            # nor drop it (it is not the whole tensor), so the uint8 owners
            # stay stored as they are instead of as a folded int32 copy, and
            # the static shape TFLite needs is kept.
            owner = tf.slice(owner, tf.fill([len(owner.shape)], zero),
                             kernel.shape)
        # LiteRT's comparison builtins take int32 but not uint8: compare in
        # int32 (the stored owners stay uint8).
        owner = tf.cast(owner, tf.int32)
        # A scalar zero: `zeros_like` would be stored as a kernel-sized
        # constant in a TFLite file.
        return tf.where(ownership.visible_mask(owner, task_id), kernel,
                        tf.zeros([], kernel.dtype))

    def _state_mapping(self, task_id, zero):
        mapping = []
        for twin, source in self._keras.sources:
            for variable in twin.weights:
                kind, index, groups = source[variable.name]
                if kind == "kernel":
                    value = expand_groups(
                        self._visible(index, task_id, zero), groups)
                else:
                    value = tf.gather(self.slots[index], task_id - 1)
                mapping.append((variable, value))
        return mapping

    def _function(self, task, spec):
        head = self._keras.heads[task.name]

        @tf.function(input_signature=[spec])
        def serve(inputs):
            zero = tf.constant(0, tf.int32)
            if self._run_time_task:
                # 0 at run time, unknown to a converter: batch sizes are >= 0.
                zero = tf.minimum(tf.shape(inputs)[0], 0)
            task_id = tf.constant(task.task_id, tf.int32) + zero
            with keras.StatelessScope(
                    state_mapping=self._state_mapping(task_id, zero)):
                features = self._keras.trunk(inputs, training=False)
            return {OUTPUT_NAME: head(features, training=False)}

        return serve

    def signatures(self):
        """`{"task_<name>": concrete function}` for every task."""
        return {
            signature_name(name): function.get_concrete_function()
            for name, function in self.predict.items()}
