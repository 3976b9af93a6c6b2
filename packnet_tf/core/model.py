"""`PackNetModel`: one Keras network that learns task after task.

The model is a shared trunk of packed layers plus one head per task. Its
lifecycle, per task: `add_task` -> `fit` -> `prune` -> `fit` (fine-tune) ->
`end_task`. Its `train_step` is Keras' own, with two additions: gradients are
masked to the weights the active task owns, and after every optimizer step
every other entry is restored to its exact previous value, so no optimizer
(weight decay, momentum, EMA) can move a frozen weight.
"""

import contextlib
import dataclasses

import keras
import numpy as np

from packnet_tf.compat import keras_internals
from packnet_tf.compat.distribute import MultiWorkerFitMixin
from packnet_tf.compat.keras_internals import OpenStateMixin
from packnet_tf.core.contract import as_contract
from packnet_tf.core.free_init import claim_for_task
from packnet_tf.core.masked_training import MaskedTrainingMixin
from packnet_tf.core.planning import (DEFAULT_FREE_INIT, LEGACY_FREE_INIT,
                                      check_free_init)
from packnet_tf.core.pruning import PruningMixin, validate_fraction
from packnet_tf.core.recalibration import batch_norm_layers, recalibrate
from packnet_tf.core.task import (TRAINING, TaskInfo, advance, require,
                                  require_can_add, require_head,
                                  validate_task_name)
from packnet_tf.core.trunk import check_trunk, packed_layers, sized_trunk
from packnet_tf.errors import CapacityError, TaskStateError
from packnet_tf.layers.base import validate_max_tasks

__all__ = ["PackNetModel", "validate_fraction"]

#: Examples in the probe batch a finished task's fingerprint is taken on.
#: A change shows only where it reaches an output on some probe example: a
#: ReLU unit inactive on every probe example hides changes behind it. Files
#: written with fewer (4, before) verify on that many: the first rows of
#: the probe do not depend on its length.
FINGERPRINT_BATCH = 16


@keras.saving.register_keras_serializable(package="packnet_tf")
class PackNetModel(
    PruningMixin, MaskedTrainingMixin, MultiWorkerFitMixin, OpenStateMixin,
    keras.Model,
):
    """A shared trunk of packed layers with one head per task.

    Args:
        trunk: a built Keras functional or Sequential model with one input
            and one output, whose layers with weights are packed layers
            (`packnet_tf.layers`). The model keeps its own copy sized for
            `max_tasks` when the trunk's layers were built with another
            `max_tasks`; weights and owners are copied.
        max_tasks: the most tasks the network will hold, in [1, 255].
        free_init: where task 2 and later start the free weights they
            take: `"previous"` (default: their values when they were
            pruned; keeps one copy of the packed kernels, saved with the
            model), `"zero"` or `"initializer"` (fresh draws from the
            layer's initializer). See `packnet_tf.core.free_init`.
        fused_update: compile each training step's masked update (gradient
            mask, optimizer step, write-back of frozen entries) as one XLA
            function (default True; the forward and backward passes are
            compiled or not as `compile(jit_compile=...)` says). On a CPU
            it is cheaper than plain Keras' uncompiled optimizer step
            (README, "Training cost"). False runs the same update
            uncompiled: for an optimizer XLA cannot compile. Ignored
            (uncompiled) under a `tf.distribute` strategy.
        **kwargs: `keras.Model` arguments (`name`, ...).

    Raises:
        TypeError, ValueError, UnsupportedLayerError: on a bad trunk,
            `max_tasks` or `fused_update`.

    Example:

    >>> trunk = keras.Sequential([keras.Input((8,)), PackedDense(16)])
    >>> model = PackNetModel(trunk, max_tasks=3)
    >>> model.add_task("a", num_classes=2)
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True))
    >>> model.fit(x_a, y_a)
    >>> model.prune(0.5)
    >>> model.fit(x_a, y_a)       # fine-tune
    >>> model.end_task()
    """

    def __init__(self, trunk, max_tasks, free_init=DEFAULT_FREE_INIT,
                 fused_update=True, **kwargs):
        super().__init__(**kwargs)
        self.max_tasks = validate_max_tasks(max_tasks, allow_none=False)
        self.free_init = check_free_init(free_init)
        if not isinstance(fused_update, (bool, np.bool_)):
            raise TypeError(
                "fused_update: expected True or False. Received: "
                f"{fused_update!r} of type {type(fused_update).__name__}.")
        self.fused_update = bool(fused_update)
        check_trunk(trunk)
        self.trunk = sized_trunk(trunk, self.max_tasks)
        # Pruned weights' values, per packed kernel, for free_init
        # "previous" (in `_kernels()` order).
        self._released = [
            self.add_weight(shape=kernel.shape, dtype=kernel.dtype,
                            initializer="zeros", trainable=False,
                            name=f"{layer.name}_{name}_released")
            for layer in self._packed()
            for name, kernel, _ in layer.packed_kernels()
        ] if free_init == "previous" else []
        self.heads = []
        self._tasks = []
        self._active = None
        # One traced predict function per task: switching tasks back and
        # forth does not retrace.
        self._predict_functions = {}
        self.built = True

    # -- task registry ----------------------------------------------------

    @property
    def tasks(self):
        """The tasks, in order, as `TaskInfo` copies."""
        return [dataclasses.replace(t) for t in self._tasks]

    @property
    def active_task(self):
        """The active `TaskInfo` (a copy), or None before the first task."""
        if self._active is None:
            return None
        return dataclasses.replace(self._tasks[self._active])

    def _packed(self):
        return packed_layers(self.trunk)

    def _feature_shape(self):
        return tuple(self.trunk.outputs[0].shape)

    def _find(self, name):
        for index, task in enumerate(self._tasks):
            if task.name == name:
                return index
        raise ValueError(
            f"Unknown task {name!r}. Known tasks: "
            f"{[t.name for t in self._tasks]}. Add it with `add_task(...)`."
        )

    def _activate(self, index):
        # A traced predict function stays valid until the next compile(),
        # which makes a new compile config.
        compiled_as = id(keras_internals.compile_state(self))
        traced = keras_internals.traced_predict_function(self)
        if self._active is not None and traced is not None:
            self._predict_functions[self._active] = (compiled_as, traced)
        self._active = index
        for layer in self._packed():
            layer.set_active_task(index + 1)
        # The head is chosen in Python: traced functions must be rebuilt.
        cached_as, function = self._predict_functions.get(index, (None, None))
        keras_internals.retrace(
            self, function if cached_as == compiled_as else None)

    # -- what the mixins read (their declared interface) ------------------

    def _active_id(self):
        """The active task's owner id, or None before the first task."""
        return None if self._active is None else self._active + 1

    def _task_for(self, action):
        """The active task's live record, if its state allows `action`.

        Args:
            action: a lifecycle action of `packnet_tf.core.task.TRANSITIONS`.

        Returns:
            The active `TaskInfo` itself (not a copy).

        Raises:
            TaskStateError: if there is no task or `action` is not allowed
                in its state.
        """
        return require(
            None if self._active is None else self._tasks[self._active],
            action)

    @contextlib.contextmanager
    def _undoable(self):
        """Puts every weight and the active task's record back on exit.

        For trials that must leave no trace (`packnet_tf.training.auto_prune`):
        weights, owners, per-task values and the task's state are restored
        exactly, whatever happened inside.
        """
        index = self._active
        record = dataclasses.replace(self._tasks[index])
        saved = [(w, keras.ops.convert_to_numpy(w)) for w in self.weights]
        try:
            yield
        finally:
            for weight, value in saved:
                weight.assign(value)
            self._tasks[index] = record
            self._activate(index)

    def _build_head(self, name, num_classes, head):
        if head is None:
            if num_classes is None:
                raise ValueError(
                    f"`add_task({name!r})` needs `num_classes` (for a Dense "
                    "head) or a `head` layer. Received neither."
                )
            if (
                isinstance(num_classes, bool)
                or not isinstance(num_classes, (int, np.integer))
                or num_classes < 1
            ):
                raise ValueError(
                    "Expected `num_classes` to be a positive int. "
                    f"Received: num_classes={num_classes!r}"
                )
            head = keras.layers.Dense(int(num_classes), name=f"head_{name}")
        elif not isinstance(head, keras.layers.Layer):
            raise TypeError(
                "Expected `head` to be a Keras layer or model. "
                f"Received: {type(head).__name__}"
            )
        elif any(head is h for h in self.heads):
            raise ValueError(
                f"The head '{head.name}' already belongs to another task; "
                "a head serves exactly one task. Pass a new layer."
            )
        features = keras.KerasTensor(
            self._feature_shape(), dtype=self.trunk.outputs[0].dtype
        )
        try:
            width = head.compute_output_spec(features).shape[-1]
            if not head.built:
                # Variables made under the model's strategy, like the trunk's.
                with self.distribute_strategy.scope():
                    head(features)
        except Exception as error:  # shape errors come in many types
            raise ValueError(
                f"The head '{head.name}' cannot read the trunk's features of "
                f"shape {self._feature_shape()}: {error}"
            ) from error
        if num_classes is not None and width != num_classes:
            raise ValueError(
                f"The head '{head.name}' outputs {width} values per example "
                f"but num_classes={num_classes}. Make them agree."
            )
        return head, int(width)

    def _check_free_capacity(self):
        # A layer left full on purpose (`prune(keep=...)`) is read by the
        # new task, which trains the others; a network with no free weight
        # at all has nothing to train.
        report = self.capacity()
        full = report.full_layers()
        if full and len(full) == len(report.counts):
            owned = ", ".join(
                f"{n}: {s:.1%}" for n, s in report.fractions().items()
            )
            raise CapacityError(
                "No free weights left for a new task: every layer is full ("
                f"{', '.join(full)}). The network is owned as follows: "
                f"{owned}. Prune the last task before `end_task()` (e.g. "
                "`prune(0.5)`), or use a wider network."
            )

    def add_task(self, name, num_classes=None, head=None,
                 input_contract=None, headless=False):
        """Registers a task, gives it every free weight, and activates it.

        Args:
            name: unique task name (letters, digits, `_`, `.`, `-`).
            num_classes: width of the default head, a
                `keras.layers.Dense(num_classes)` that outputs logits.
            head: a Keras layer to use as the head instead; it reads the
                trunk's features and belongs to this task only.
            headless: True for a task without a head that keeps the weights
                the network holds now (a pretrained backbone without its
                training data): `prune(f)` then `end_task()` freeze its
                largest weights for every later task to read, without
                training (`fit` and `evaluate` refuse it; the exporters
                skip it). Its outputs are the trunk's features. Pruning it
                leaves its batch-norm statistics as they were (there is no
                data to recompute them): `end_task()` needs no
                recalibration. `convert(model, first_task=name)` of a model
                without a classifier makes one.
            input_contract: how raw images become this task's inputs and
                its class names: a `packnet_tf.InputContract` or a dict of
                its fields. Saved with the model; the exporters build their
                `_pixels` and `_images` signatures from it. None: inputs
                are trunk-ready floats.

        Returns:
            The new task's `TaskInfo`.

        Raises:
            TaskStateError: if the previous task is not frozen yet.
            CapacityError: if `max_tasks` tasks exist, or a packed layer has
                no free weight left.
            ValueError, TypeError: on a bad name, `num_classes` or head (or
                either given with `headless=True`).
        """
        validate_task_name(name, [t.name for t in self._tasks])
        if headless and (num_classes is not None or head is not None
                         or input_contract is not None):
            raise ValueError(
                f"`add_task({name!r}, headless=True)` makes a task without a "
                "head or inputs of its own; it takes no `num_classes`, "
                "`head` or `input_contract`. Received: "
                f"num_classes={num_classes!r}, head={head!r}, "
                f"input_contract={input_contract!r}")
        input_contract = as_contract(input_contract)
        require_can_add(self._tasks, name)
        if len(self._tasks) >= self.max_tasks:
            raise CapacityError(
                f"This model holds at most max_tasks={self.max_tasks} tasks "
                f"and has {len(self._tasks)}. Build a new PackNetModel with "
                "a larger `max_tasks` (at most 255)."
            )
        self._check_free_capacity()
        if headless:
            # The trunk's features, unchanged: what `predict` gives.
            head = keras.layers.Identity(name=f"features_{name}")
        head, width = self._build_head(name, num_classes, head)
        if input_contract is not None:
            input_contract.check_classes(width, name)
            input_contract.check_input_shape(self.trunk.inputs[0].shape[1:],
                                             name)
        task_id = len(self._tasks) + 1
        released = iter(self._released)
        for layer in self._packed():
            kept = [next(released, None) for _ in layer.packed_kernels()]
            claim_for_task(layer, task_id, self.free_init, kept)
        self.heads.append(head)
        self._tasks.append(TaskInfo(
            name, task_id, None if headless else width, TRAINING,
            input_contract=input_contract, headless=bool(headless)))
        self._activate(task_id - 1)
        return self.active_task

    def set_input_contract(self, name, input_contract):
        """Records how task `name`'s inputs are prepared, and its classes.

        The contract describes inputs, not weights, so it may be set on a
        finished task too (e.g. on a model file written before contracts
        existed).

        Args:
            name: a known task.
            input_contract: a `packnet_tf.InputContract`, a dict of its
                fields, or None (trunk-ready floats).

        Returns:
            The task's `TaskInfo`.

        Raises:
            ValueError: for an unknown task, bad contract fields, or class
                names that do not match the head's width.
            TypeError: for a contract of the wrong type.
        """
        task = self._tasks[self._find(name)]
        input_contract = as_contract(input_contract)
        if input_contract is not None:
            input_contract.check_classes(task.num_classes, name)
            input_contract.check_input_shape(self.trunk.inputs[0].shape[1:],
                                             name)
        task.input_contract = input_contract
        return dataclasses.replace(task)

    def set_score_reference(self, name, reference):
        """Records task `name`'s own task-inference score quantiles.

        What `packnet_tf.inference.task_inference.calibrate` measures: for each
        scoring rule, the task's scores on its own training examples at
        101 evenly spaced quantiles. It describes outputs the frozen
        weights give, so it may be set on a finished task.

        Args:
            name: a known task with a head.
            reference: `{rule: 101 non-decreasing floats in [0, 1]}`, or
                None to drop it.

        Returns:
            The task's `TaskInfo`.

        Raises:
            ValueError: for an unknown or headless task, or a reference of
                another form.
        """
        task = self._tasks[self._find(name)]
        if task.headless:
            raise ValueError(f"Task {name!r} has no head: it answers no "
                             "input and has no score to calibrate.")
        if reference is not None:
            reference = {str(k): [float(v) for v in values]
                         for k, values in dict(reference).items()}
            for rule, values in reference.items():
                array = np.asarray(values)
                if (array.shape != (101,) or np.any(np.diff(array) < 0)
                        or array.min() < 0 or array.max() > 1):
                    raise ValueError(
                        f"Expected the score reference of rule {rule!r} "
                        "to be 101 non-decreasing quantiles in [0, 1]. "
                        f"Received {len(values)} values from "
                        f"{array.min() if array.size else None} to "
                        f"{array.max() if array.size else None}.")
        task.score_reference = reference
        return dataclasses.replace(task)

    def set_input_density(self, name, density):
        """Records the density of task `name`'s own activation statistics.

        What `packnet_tf.inference.task_inference.calibrate` fits
        (`packnet_tf.inference.density`): the mean and precision matrix of
        per-example statistics of the named trunk layers' outputs on the
        task's training inputs. It describes outputs the frozen weights
        give, so it may be set on a finished task.

        Args:
            name: a known task with a head.
            density: `{"layers": [names of trunk layers], "mean": [D
                floats], "precision": [D rows of D floats]}`, or None to
                drop it.

        Returns:
            The task's `TaskInfo`.

        Raises:
            ValueError: for an unknown or headless task, a layer the trunk
                does not have, or arrays of other shapes or non-finite.
        """
        task = self._tasks[self._find(name)]
        if task.headless:
            raise ValueError(f"Task {name!r} has no head: it answers no "
                             "input and has no input density to record.")
        if density is not None:
            density = dict(density)
            if set(density) != {"layers", "mean", "precision"}:
                raise ValueError(
                    "Expected the input density to have the keys "
                    "['layers', 'mean', 'precision']. Received: "
                    f"{sorted(density)}")
            layers = [str(n) for n in density["layers"]]
            known = {layer.name for layer in self.trunk.layers}
            unknown = [n for n in layers if n not in known]
            mean = np.asarray(density["mean"], np.float64)
            precision = np.asarray(density["precision"], np.float64)
            if not layers or unknown:
                raise ValueError(
                    "Expected the input density's `layers` to name layers "
                    f"of the trunk. Received: {layers} ({unknown} unknown)")
            if (mean.ndim != 1 or not mean.size
                    or precision.shape != (mean.size, mean.size)
                    or not np.all(np.isfinite(mean))
                    or not np.all(np.isfinite(precision))):
                raise ValueError(
                    "Expected the input density's `mean` [D] and "
                    "`precision` [D, D] to be finite. Received shapes "
                    f"{mean.shape} and {precision.shape}.")
            density = {"layers": layers, "mean": mean.tolist(),
                       "precision": precision.tolist()}
        task.input_density = density
        return dataclasses.replace(task)

    def use_task(self, name):
        """Makes task `name` the one `predict`, `evaluate` and `call` use.

        Args:
            name: a known task.

        Returns:
            The task's `TaskInfo`.

        Raises:
            ValueError: for an unknown task.
        """
        self._activate(self._find(name))
        return self.active_task

    def _statistics_changed(self, task):
        """Records that `task`'s batch-norm statistics no longer describe
        its network (it trains, or was pruned). A headless task's stay as
        they were: it has no data to recompute them from."""
        if batch_norm_layers(self) and not task.headless:
            task.statistics_stale = True

    def recalibrate_batch_norm(self, data, steps=None, batch_size=None,
                               shuffle=True):
        """Recomputes the active task's batch-norm statistics from `data`.

        After pruning (and after training, whose moving averages lag
        behind the weights) the moving mean and variance of every
        `TaskBatchNormalization` describe another network. This sets the
        active task's to population statistics of the network as it is
        now, over `data` (see `packnet_tf.core.recalibration`): one pass in
        inference mode except that batch norm normalizes with each batch's
        statistics, pooled exactly over every example read. Call it after
        the last prune or fine-tune of a task, on its training data
        without augmentation, before `end_task()`; `train_task` and the
        `packnet-tf` runner do. Earlier tasks are not touched. A converted
        network's task that is pruned without data keeps the statistics it
        was converted with: end it with `end_task(recalibrate=False)`.

        Args:
            data: the task's training data: a `tf.data.Dataset` of `x` or
                `(x, y)` batches (labels are ignored), an array of inputs,
                or an `(x, y)` tuple of arrays.
            steps: None (default) for every batch of `data`, or at most this
                many batches. Larger batches estimate deep layers'
                statistics better (each layer sees inputs normalized with
                batch, not population, statistics).
            batch_size: batch size for array data (default 32).
            shuffle: read array data in a shuffled order, the same every
                call (default; as `fit` shuffles arrays: batches of one
                class would skew deep layers' statistics). A dataset is
                read as it is batched: shuffle it before batching.

        Returns:
            The number of examples read (0 for a network without batch
            norm, which reads nothing).

        Raises:
            TaskStateError: if the active task is frozen (or none is
                active).
            ValueError: for data without examples or bad `steps`.
            TypeError: for data of another type.

        Example:

        >>> model.prune(0.5)
        >>> model.fit(x, y, epochs=1)              # fine-tune
        >>> model.recalibrate_batch_norm((x, y))
        >>> model.end_task()
        """
        task = self._task_for("recalibrate_batch_norm")
        examples = recalibrate(self, task.task_id, data, steps, batch_size,
                               shuffle)
        task.statistics_stale = False
        return examples

    def end_task(self, recalibrate=True):
        """Freezes the active task for good.

        Args:
            recalibrate: True (default): in a network with
                `TaskBatchNormalization`, the task's statistics must have
                been recomputed (`recalibrate_batch_norm`) since it last
                trained or was pruned; a task whose statistics are stale is
                refused. False: freeze the statistics as they are (a
                converted network's task pruned without data keeps the
                converted ones).

        Returns:
            The task's `TaskInfo`.

        Raises:
            TaskStateError: if no task is training, or its batch-norm
                statistics are stale and `recalibrate` is True.
            TypeError: if `recalibrate` is not a bool.
        """
        if not isinstance(recalibrate, (bool, np.bool_)):
            raise TypeError(
                "end_task(recalibrate=...): expected True or False. "
                f"Received: {recalibrate!r}")
        task = self._task_for("end_task")
        if recalibrate and task.statistics_stale:
            layers = len(batch_norm_layers(self))
            raise TaskStateError(
                f"Task {task.name!r} was trained or pruned after its batch-"
                f"norm statistics were computed ({layers} "
                "TaskBatchNormalization layers): frozen as they are, every "
                "prediction would normalize with another network's "
                "statistics. Call `model.recalibrate_batch_norm(train_data)` "
                "before `end_task()`, or `end_task(recalibrate=False)` to "
                "keep them (a converted network pruned without data).")
        outputs = self(self._probe(task.task_id), training=False)
        task.fingerprint = keras.ops.convert_to_numpy(outputs).tolist()
        advance(task, "end_task")
        self._activate(self._active)
        return self.active_task

    def _probe(self, task_id, rows=FINGERPRINT_BATCH):
        """The fixed probe batch a task's fingerprint is computed on.

        Drawn from a generator seeded by the task id, so a shorter probe is
        the first rows of a longer one.
        """
        spec = self.trunk.inputs[0]
        shape = (int(rows),) + tuple(spec.shape[1:])
        rng = np.random.default_rng(task_id)
        if np.issubdtype(np.dtype(spec.dtype), np.integer):
            return rng.integers(0, 2, size=shape).astype(spec.dtype)
        return rng.normal(size=shape).astype(spec.dtype)

    def verify(self):
        """Recomputes every frozen task's fingerprint.

        `end_task()` stores the task's outputs on a fixed probe batch (made
        from the task id, so only the outputs are stored, in the model's
        config). Any change to an earlier task's weights, biases, statistics
        or head shows here.

        Returns:
            A dict `{task name: max |recomputed - stored|}`; all zeros when
            nothing changed.
        """
        active = self._active
        diffs = {}
        try:
            for index, task in enumerate(self._tasks):
                if task.fingerprint is None:
                    continue
                self._activate(index)
                rows = len(task.fingerprint)  # as many as when stored
                now = keras.ops.convert_to_numpy(
                    self(self._probe(task.task_id, rows), training=False))
                stored = np.asarray(task.fingerprint, dtype=now.dtype)
                diffs[task.name] = float(np.max(np.abs(now - stored)))
        finally:
            if active is not None:
                self._activate(active)
        return diffs

    # -- forward and training ---------------------------------------------

    def call(self, inputs, training=None):
        if self._active is None:
            raise TaskStateError(
                "The model has no task yet: call `add_task(...)` first."
            )
        features = self.trunk(inputs, training=training)
        return self.heads[self._active](features, training=training)

    def evaluate(self, *args, **kwargs):
        """`keras.Model.evaluate` on the active task.

        Raises:
            TaskStateError: for a headless task (no head, no labels).
        """
        if self._active is not None:
            require_head(self._tasks[self._active], "be evaluated")
        return super().evaluate(*args, **kwargs)

    # -- serialization ----------------------------------------------------

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "max_tasks": self.max_tasks,
            "free_init": self.free_init,
            "fused_update": self.fused_update,
            "trunk": keras.saving.serialize_keras_object(self.trunk),
            "tasks": [t.to_config() for t in self._tasks],
            "heads": [keras.saving.serialize_keras_object(h)
                      for h in self.heads],
            "active": (
                None if self._active is None
                else self._tasks[self._active].name
            ),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        trunk = keras.saving.deserialize_keras_object(
            config.pop("trunk"), custom_objects=custom_objects
        )
        tasks = config.pop("tasks", [])
        heads = config.pop("heads", [])
        active = config.pop("active", None)
        # Files from before `free_init` kept no pruned values: zero start.
        config.setdefault("free_init", LEGACY_FREE_INIT)
        model = cls(trunk, **config)
        for record, head_config in zip(tasks, heads):
            head = keras.saving.deserialize_keras_object(
                head_config, custom_objects=custom_objects
            )
            head, _ = model._build_head(record["name"], None, head)
            model.heads.append(head)
            model._tasks.append(TaskInfo(**record))
        if active is not None:
            model._activate(model._find(active))
        return model
