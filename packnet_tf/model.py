"""`PackNetModel`: one Keras network that learns task after task.

The model is a shared trunk of packed layers plus one head per task. Its
lifecycle, per task: `add_task` -> `fit` -> `prune` -> `fit` (fine-tune) ->
`end_task`. Its `train_step` is Keras' own, with two additions: gradients are
masked to the weights the active task owns, and after every optimizer step
every other entry is restored to its exact previous value, so no optimizer
(weight decay, momentum, EMA) can move a frozen weight.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from packnet_tf import ownership
from packnet_tf.distribute import MultiWorkerFitMixin
from packnet_tf.capacity import CapacityReport
from packnet_tf.errors import CapacityError, TaskStateError
from packnet_tf.layers.base import validate_max_tasks
from packnet_tf.labels import check_labels
from packnet_tf.task import FROZEN, PRUNED, TRAINING, TaskInfo
from packnet_tf.task import validate_task_name
from packnet_tf.trunk import check_trunk, packed_layers, sized_trunk

#: Examples in the probe batch a finished task's fingerprint is taken on.
FINGERPRINT_BATCH = 4


def validate_fraction(fraction):
    """Checks a prune fraction: a number in [0, 1).

    Raises:
        ValueError: otherwise.
    """
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float, np.floating, np.integer))
        or not 0.0 <= float(fraction) < 1.0
    ):
        raise ValueError(
            "Expected `fraction` in [0, 1): the share of the active task's "
            f"weights to free. Received: fraction={fraction!r}"
        )
    return float(fraction)


@keras.saving.register_keras_serializable(package="packnet_tf")
class PackNetModel(MultiWorkerFitMixin, keras.Model):
    """A shared trunk of packed layers with one head per task.

    Args:
        trunk: a built Keras functional or Sequential model with one input
            and one output, whose layers with weights are packed layers
            (`packnet_tf.layers`). The model keeps its own copy sized for
            `max_tasks` when the trunk's layers were built with another
            `max_tasks`; weights and owners are copied.
        max_tasks: the most tasks the network will hold, in [1, 255].
        **kwargs: `keras.Model` arguments (`name`, ...).

    Raises:
        TypeError, ValueError, UnsupportedLayerError: on a bad trunk or
            `max_tasks`.

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

    def __init__(self, trunk, max_tasks, **kwargs):
        super().__init__(**kwargs)
        self.max_tasks = validate_max_tasks(max_tasks, allow_none=False)
        check_trunk(trunk)
        self.trunk = sized_trunk(trunk, self.max_tasks)
        self.heads = []
        self._tasks = []
        self._active = None
        # One traced predict function per task: switching tasks back and
        # forth does not retrace.
        self._predict_functions = {}
        self.built = True

    def _lock_state(self):
        # Keras locks a layer's state after build; heads are added task by
        # task, so keep it open, as keras.Model's Functional does.
        pass

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
        compiled_as = id(getattr(self, "_compile_config", None))
        if self._active is not None and self.predict_function is not None:
            self._predict_functions[self._active] = (
                compiled_as, self.predict_function)
        self._active = index
        for layer in self._packed():
            layer.set_active_task(index + 1)
        # The head is chosen in Python: traced functions must be rebuilt.
        self.train_function = None
        self.test_function = None
        cached_as, function = self._predict_functions.get(index, (None, None))
        self.predict_function = function if cached_as == compiled_as else None

    def _require_trainable(self, action):
        task = None if self._active is None else self._tasks[self._active]
        if task is None or task.finished:
            received = (
                "no task" if task is None
                else f"task {task.name!r} state={task.state}"
            )
            raise TaskStateError(
                f"`{action}` needs an active task that is still training. "
                "Call `add_task(...)` first (or `use_task(...)` for the "
                f"task being trained). Received: {received}"
            )
        return task

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
        report = self.capacity()
        full = [name for name, c in report.counts.items() if c[0] == 0]
        if full:
            owned = ", ".join(
                f"{n}: {s:.1%}" for n, s in report.fractions().items()
            )
            raise CapacityError(
                "No free weights left for a new task in layer(s) "
                f"{', '.join(full)}. The network is owned as follows: "
                f"{owned}. Prune the last task before `end_task()` (e.g. "
                "`prune(0.5)`), or use a wider network."
            )

    def add_task(self, name, num_classes=None, head=None):
        """Registers a task, gives it every free weight, and activates it.

        Args:
            name: unique task name (letters, digits, `_`, `.`, `-`).
            num_classes: width of the default head, a
                `keras.layers.Dense(num_classes)` that outputs logits.
            head: a Keras layer to use as the head instead; it reads the
                trunk's features and belongs to this task only.

        Returns:
            The new task's `TaskInfo`.

        Raises:
            TaskStateError: if the previous task is not frozen yet.
            CapacityError: if `max_tasks` tasks exist, or a packed layer has
                no free weight left.
            ValueError, TypeError: on a bad name, `num_classes` or head.
        """
        validate_task_name(name, [t.name for t in self._tasks])
        if self._tasks and not self._tasks[-1].finished:
            last = self._tasks[-1]
            raise TaskStateError(
                f"Task {last.name!r} is still {last.state}: call "
                f"`end_task()` before `add_task({name!r})`."
            )
        if len(self._tasks) >= self.max_tasks:
            raise CapacityError(
                f"This model holds at most max_tasks={self.max_tasks} tasks "
                f"and has {len(self._tasks)}. Build a new PackNetModel with "
                "a larger `max_tasks` (at most 255)."
            )
        self._check_free_capacity()
        head, width = self._build_head(name, num_classes, head)
        task_id = len(self._tasks) + 1
        for layer in self._packed():
            layer.claim_free(task_id)
            if task_id > 1:
                layer.copy_task_slot(task_id - 1, task_id)
        self.heads.append(head)
        self._tasks.append(TaskInfo(name, task_id, width, TRAINING))
        self._activate(task_id - 1)
        return self.active_task

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

    def end_task(self):
        """Freezes the active task for good.

        Returns:
            The task's `TaskInfo`.

        Raises:
            TaskStateError: if no task is training.
        """
        task = self._require_trainable("end_task()")
        outputs = self(self._probe(task.task_id), training=False)
        task.fingerprint = keras.ops.convert_to_numpy(outputs).tolist()
        task.state = FROZEN
        self._activate(self._active)
        return self.active_task

    def _probe(self, task_id):
        """The fixed probe batch a task's fingerprint is computed on."""
        spec = self.trunk.inputs[0]
        shape = (FINGERPRINT_BATCH,) + tuple(spec.shape[1:])
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
                now = keras.ops.convert_to_numpy(
                    self(self._probe(task.task_id), training=False))
                stored = np.asarray(task.fingerprint, dtype=now.dtype)
                diffs[task.name] = float(np.max(np.abs(now - stored)))
        finally:
            if active is not None:
                self._activate(active)
        return diffs

    # -- pruning ----------------------------------------------------------

    def _apply_owners(self, plan, task_id):
        """Assigns new owners and zeroes the weights they free."""
        for kernel, owner, new_owner in plan:
            freed = tf.logical_and(
                ownership.trainable_mask(owner, task_id),
                tf.equal(new_owner, ownership.FREE),
            )
            kernel.assign(tf.where(freed, tf.zeros_like(kernel), kernel))
            owner.assign(new_owner)

    def _kernels(self):
        """Yields `("layer/kernel", kernel, owner)` for every packed kernel."""
        for layer in self._packed():
            for name, kernel, owner in layer.packed_kernels():
                yield f"{layer.name}/{name}", kernel, owner

    def owned_counts(self):
        """Weights the active task owns, per packed kernel.

        Returns:
            A dict `{"layer/kernel": count}`.

        Raises:
            TaskStateError: if there is no task.
        """
        if self._active is None:
            raise TaskStateError(
                "`owned_counts()` needs a task: call `add_task(...)` first."
            )
        task_id = self._active + 1
        return {
            key: int(np.sum(ownership.trainable_mask(owner, task_id)))
            for key, _, owner in self._kernels()
        }

    def prune(self, fraction):
        """Frees the smallest-magnitude `fraction` of the active task's weights.

        In every packed kernel, among the weights the active task owns,
        exactly `round(fraction * owned)` with the smallest |w| (ties: lower
        position first) are set to zero and given back (owner 0).

        Args:
            fraction: share to free, in [0, 1).

        Returns:
            A dict `{"layer/kernel": number of weights freed}`.

        Raises:
            ValueError: if `fraction` is outside [0, 1).
            TaskStateError: if no task is training.
        """
        fraction = validate_fraction(fraction)
        self._require_trainable("prune()")
        return self.prune_counts({
            key: ownership.count_to_free(owned, fraction)
            for key, owned in self.owned_counts().items()
        })

    def prune_counts(self, counts):
        """Frees exactly `counts[key]` smallest weights of the active task.

        The primitive under `prune` and gradual pruning: per packed kernel
        (keys as in `owned_counts()`), the given number of the active
        task's smallest-magnitude weights are zeroed and freed. Kernels not
        in `counts` are left alone. Nothing changes if any count is bad.

        Args:
            counts: dict `{"layer/kernel": number to free}`.

        Returns:
            The dict of counts freed.

        Raises:
            ValueError: for an unknown kernel or a count outside
                [0, owned].
            TaskStateError: if no task is training.
        """
        task = self._require_trainable("prune()")
        owned = self.owned_counts()
        unknown = sorted(set(counts) - set(owned))
        if unknown:
            raise ValueError(
                f"Unknown packed kernel(s) {unknown}. Known: {sorted(owned)}."
            )
        for key, count in counts.items():
            if not 0 <= count <= owned[key]:
                raise ValueError(
                    f"Expected a count in [0, {owned[key]}] for {key!r} (the "
                    f"weights task {task.name!r} owns there). "
                    f"Received: {count!r}"
                )
        plan = [
            (kernel, owner, ownership.prune_owner(
                kernel, owner, task.task_id, int(counts[key])))
            for key, kernel, owner in self._kernels() if key in counts
        ]
        self._apply_owners(plan, task.task_id)
        task.state = PRUNED
        return {key: int(count) for key, count in counts.items()}

    def capacity(self):
        """Who owns the packed weights, per layer and in total.

        Returns:
            A `CapacityReport`; `print()` it for a table.
        """
        num_ids = len(self._tasks) + 1
        counts = {}
        for layer in self._packed():
            if layer.packed_kernels():
                counts[layer.name] = sum(
                    ownership.owner_counts(owner.numpy(), num_ids)
                    for _, _, owner in layer.packed_kernels()
                )
        return CapacityReport(tuple(t.name for t in self._tasks), counts)

    # -- forward and training ---------------------------------------------

    def call(self, inputs, training=None):
        if self._active is None:
            raise TaskStateError(
                "The model has no task yet: call `add_task(...)` first."
            )
        features = self.trunk(inputs, training=training)
        return self.heads[self._active](features, training=training)

    def _train_masks(self, task_id):
        """`(variable, mask or None)` for every variable the task trains."""
        masks = {}
        for layer in self._packed():
            for variable, mask in layer.train_masks(task_id):
                masks[id(variable)] = mask
        variables = list(self.trunk.trainable_variables) + list(
            self.heads[task_id - 1].trainable_variables
        )
        return [(v, masks.get(id(v))) for v in variables]

    @staticmethod
    def _restore(pairs, backups):
        for (variable, mask), backup in zip(pairs, backups):
            if mask is not None:
                variable.assign(tf.where(mask, variable.value, backup))

    def _update_loss_metric(self, loss, x):
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        batch = tf.shape(tf.nest.flatten(x)[0])[0]
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss * replicas, sample_weight=batch)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        task = self._require_trainable("fit()")
        pairs = self._train_masks(task.task_id)
        variables = [v for v, _ in pairs]
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                training=True,
            )
            self._update_loss_metric(loss, x)
            scaled = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, variables)
        gradients = [
            g if g is None or m is None
            else tf.where(m, tf.convert_to_tensor(g), tf.zeros_like(m, g.dtype))
            for g, (_, m) in zip(gradients, pairs)
        ]
        # A copy, not a lazy read: the optimizer writes the variables next.
        backups = [
            tf.identity(v.value) if m is not None else None for v, m in pairs
        ]
        self.optimizer.apply(gradients, variables)
        self._restore(pairs, backups)
        return self._step_results(
            self.compute_metrics(x, y, y_pred, sample_weight=sample_weight))

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if self._active is None:
            self.call(x)  # raises the no-task error
        y_pred = self(x, training=False)
        loss = self.compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
            training=False,
        )
        self._update_loss_metric(loss, x)
        return self._step_results(
            self.compute_metrics(x, y, y_pred, sample_weight=sample_weight))

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit` on the active task; see the class docstring.

        Raises:
            TaskStateError: if no task is training.
            ValueError: if labels do not fit the active task's head.
        """
        task = self._require_trainable("fit()")
        check_labels(x, y, task.num_classes, task.name)
        if self.optimizer is not None and not self.optimizer.built:
            # Slots for every head, so that a saved optimizer loads back
            # whichever task it was saved during.
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)
        ema = bool(getattr(self.optimizer, "use_ema", False))
        if ema:
            pairs = self._train_masks(task.task_id)
            snapshot = [tf.identity(v.value) for v, _ in pairs]
        history = super().fit(x, y, *args, **kwargs)
        if ema:
            # fit() ends by overwriting every weight with its moving average;
            # the frozen ones must stay exactly as they were.
            self._restore(pairs, snapshot)
        return history

    # -- serialization ----------------------------------------------------

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "max_tasks": self.max_tasks,
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
