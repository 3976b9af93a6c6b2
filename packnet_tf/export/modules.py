"""The `tf.Module`s the exporters save: the variables and one function per task.

A module holds plain `tf.Variable`s and `tf.function`s only, and is saved
with `tf.saved_model.save`: the result is an ordinary TensorFlow graph that
loads without Keras or packnet_tf, and every weight is stored once (Keras
3.15's `ExportArchive` stores each twice, keras-team/keras#23553).

Each module gives a `forward` function per task (a float batch -> the
head's outputs); `signatures()` wraps it in the SavedModel signatures of
`packnet_tf.export.signatures`, and the TFLite exporter in its own.

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

from packnet_tf.data import image_limits
from packnet_tf.export.any_task import (SCORE, any_task_functions, check_score,
                                        statistic_layer_names)
from packnet_tf.export.checks import signature_name
from packnet_tf.export.plain import (call_head_copy, expand_groups, groups_of,
                                     plain_model, plain_trunk,
                                     twin_variable_name)
from packnet_tf.export.signatures import INPUT_NAME, task_functions
from packnet_tf.layers import ownership


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
        limits: the `ImageLimits` its signatures check (default: the
            defaults).

    Attributes:
        task_name: the task's name.
        info: its `TaskInfo` (with its input contract).
        input_spec: the `tf.TensorSpec` of a float batch of its inputs.
    """

    def __init__(self, model, task, limits=None):
        super().__init__(name=f"task_{task.task_id}")
        self.limits = image_limits.check_limits(limits)
        keras_model = plain_model(model, task.name)
        self.weights = _variables(keras_model)
        self._keras = _Untracked(model=keras_model, info=task)
        self.task_name = task.name
        self.input_spec = input_spec(model)

    @property
    def info(self):
        return self._keras.info

    def forward(self, inputs):
        """The head's outputs on a float batch (traced by a signature)."""
        return self._keras.model(inputs, training=False)

    def signatures(self):
        """`{key: concrete function}` of the SavedModel.

        `serving_default` and `task_<name>` (float inputs), with an input
        contract `task_<name>_pixels` and `task_<name>_images` (see
        `packnet_tf.export.signatures`).
        """
        self.serving = task_functions(
            self.info, self.forward, self.input_spec,
            self.info.input_contract, self.limits)
        functions = {key: function.get_concrete_function()
                     for key, function in self.serving.items()}
        functions["serving_default"] = functions[
            signature_name(self.task_name)]
        return functions


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
        limits: the `ImageLimits` its signatures check (default: the
            defaults).
        any_task_score: the scoring rule of the `any_task` signatures
            (`packnet_tf.export.any_task.SCORE_RULES`).

    Raises:
        ValueError: for a bad `any_task_score`, or `"statistics"` where an
            exported task has no input density.
    """

    def __init__(self, model, tasks, run_time_task=False, limits=None,
                 any_task_score=SCORE):
        super().__init__(name="tasks")
        self.limits = image_limits.check_limits(limits)
        self._score = check_score(any_task_score, tasks)
        self._run_time_task = run_time_task
        top = max(t.task_id for t in tasks)
        trunk, twins = plain_trunk(model.trunk, fold_batch_norm=False)
        self._keras = _Untracked(trunk=trunk, sources=[], heads={},
                                 extractors={})
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
        self.input_spec = input_spec(model)
        self._keras.infos = {task.name: task for task in tasks}
        # Each task's density stored once, read by every any_task signature.
        self.densities = [
            {key: tf.Variable(np.asarray(task.input_density[key], np.float32),
                              trainable=False,
                              name=f"{task.name}_density_{key}")
             for key in ("mean", "precision")}
            for task in tasks] if self._score == "statistics" else []

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

    @property
    def statistic_layers(self):
        """The layers the `any_task` signatures read (`"statistics"`), or
        None."""
        return statistic_layer_names(list(self._keras.infos.values()),
                                     self._score)

    def _extractor(self, layers):
        """The trunk twin with the named layers' outputs before its own."""
        if layers not in self._keras.extractors:
            trunk = self._keras.trunk
            self._keras.extractors[layers] = keras.Model(
                trunk.inputs[0],
                [trunk.get_layer(n).output for n in layers]
                + list(trunk.outputs))
        return self._keras.extractors[layers]

    def forward(self, name, layers=None):
        """The function from a float batch to task `name`'s head outputs.

        Args:
            name: an exported task.
            layers: names of trunk layers: the function then returns a
                pair, `(those layers' outputs, the head's outputs)`.
        """
        task = self._keras.infos[name]
        head = self._keras.heads[name]
        trunk = (self._keras.trunk if layers is None
                 else self._extractor(tuple(layers)))

        def forward(inputs):
            zero = tf.constant(0, tf.int32)
            if self._run_time_task:
                # 0 at run time, unknown to a converter: batch sizes are >= 0.
                zero = tf.minimum(tf.shape(inputs)[0], 0)
            task_id = tf.constant(task.task_id, tf.int32) + zero
            with keras.StatelessScope(
                    state_mapping=self._state_mapping(task_id, zero)):
                features = trunk(inputs, training=False)
            if layers is None:
                return head(features, training=False)
            *layer_outputs, features = features
            return layer_outputs, head(features, training=False)

        return forward

    def signatures(self):
        """`{key: concrete function}`: every task's signatures.

        `task_<name>` (float inputs), with an input contract
        `task_<name>_pixels` and `task_<name>_images`.

        Raises:
            ValueError: if two tasks' signature keys collide (a task named
                `x_pixels` next to a task `x`).
        """
        self.serving = {}
        for name, info in self._keras.infos.items():
            functions = task_functions(info, self.forward(name),
                                       self.input_spec, info.input_contract,
                                       self.limits)
            taken = sorted(set(functions) & set(self.serving))
            if taken:
                raise ValueError(
                    f"Task {name!r}'s signature key {taken[0]!r} is taken "
                    "by another task's signature in one multi-task "
                    "SavedModel. Export these tasks with "
                    "layout='per_task', or rename one.")
            self.serving.update(functions)
        infos = list(self._keras.infos.values())
        layers = self.statistic_layers
        self.serving.update(any_task_functions(
            infos, [self.forward(t.name, layers) for t in infos],
            self.input_spec, self.limits, self._score,
            self.densities or None))
        names, score = [t.name for t in infos], self._score
        self.any_task_tasks = tf.function(
            lambda: tf.constant(names, tf.string), input_signature=[])
        self.any_task_score = tf.function(
            lambda: tf.constant(score, tf.string), input_signature=[])
        return {key: function.get_concrete_function()
                for key, function in self.serving.items()}
