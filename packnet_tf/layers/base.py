"""`PackedLayer`: the per-task state every packed layer shares.

A packed layer holds
- zero or more *packed kernels*, each with a uint8 owner variable of its
  shape (see `packnet_tf.layers.ownership`);
- zero or more *per-task variables* whose first axis has one slot per task
  (biases, batch-norm parameters and statistics);
- an int32 scalar `active_task`: the task the layer computes for.

`PackNetModel` drives these through the methods below; the layers' `call`
only reads them.
"""

import contextlib

import keras
import numpy as np
import tensorflow as tf
from keras import activations, constraints, initializers, ops, regularizers

from packnet_tf.compat import distribute
from packnet_tf.layers import ownership


def owner_dtype():
    """The dtype of new owner variables under the current strategy.

    `ownership.OWNER_DTYPE`, except int32 under
    `MultiWorkerMirroredStrategy`, whose variable broadcast has no 8-bit
    kernel (see `packnet_tf.compat.distribute`); owner ids fit in 8 bits
    either way.

    Returns:
        "uint8" or "int32".
    """
    return "int32" if distribute.is_multi_worker() else ownership.OWNER_DTYPE


def validate_max_tasks(max_tasks, allow_none=True):
    """Checks a `max_tasks` argument.

    Args:
        max_tasks: int in [1, 255], or None when `allow_none`.
        allow_none: whether None (size decided later) is accepted.

    Returns:
        `max_tasks` unchanged.

    Raises:
        ValueError: if it is not an int in range.
    """
    if max_tasks is None and allow_none:
        return None
    if (
        isinstance(max_tasks, bool)
        or not isinstance(max_tasks, (int, np.integer))
        or not 1 <= max_tasks <= ownership.MAX_TASKS_LIMIT
    ):
        raise ValueError(
            "Expected `max_tasks` to be an int in [1, "
            f"{ownership.MAX_TASKS_LIMIT}] (owners are 8-bit). "
            f"Received: max_tasks={max_tasks!r}"
        )
    return int(max_tasks)


#: How a weight's `<prefix>_<kind>` argument is read and written.
_WEIGHT_ARGUMENTS = {
    "initializer": (initializers.get, initializers.serialize),
    "regularizer": (regularizers.get, regularizers.serialize),
    "constraint": (constraints.get, constraints.serialize),
}


def positive_int(value, name):
    """Returns `value` if it is a positive int (not a bool).

    Raises:
        ValueError: naming `name`, otherwise.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Expected `{name}` to be a positive int. "
                         f"Received: {name}={value!r}")
    return value


class PackedLayer(keras.layers.Layer):
    """Base class of layers whose state is split between tasks.

    Args:
        max_tasks: number of task slots for per-task variables. None builds
            one slot; `PackNetModel` rebuilds its trunk with its own
            `max_tasks`.
        **kwargs: base `keras.layers.Layer` arguments.
    """

    def __init__(self, max_tasks=None, **kwargs):
        super().__init__(**kwargs)
        self.max_tasks = validate_max_tasks(max_tasks)
        # Attribute names, not variables: keeps Keras' tracker from seeing
        # the same variable twice.
        self._packed_names = []
        self._per_task_names = []
        self._unmasked_forward = False

    @property
    def num_task_slots(self):
        """Slots on the first axis of every per-task variable."""
        return self.max_tasks or 1

    # -- building ---------------------------------------------------------

    def _add_active_task(self):
        self.active_task = self.add_weight(
            shape=(),
            dtype="int32",
            initializer="zeros",
            trainable=False,
            name="active_task",
            aggregation="only_first_replica",
        )

    def _add_packed_kernel(self, name, shape, initializer, regularizer,
                           constraint):
        """Adds `name` and its owner variable `name + "_owner"`."""
        kernel = self.add_weight(
            shape=shape,
            name=name,
            initializer=initializer,
            regularizer=regularizer,
            constraint=constraint,
            trainable=True,
        )
        owner = self.add_weight(
            shape=shape,
            name=f"{name}_owner",
            dtype=owner_dtype(),
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )
        setattr(self, name, kernel)
        setattr(self, f"{name}_owner", owner)
        self._packed_names.append(name)
        return kernel

    def _add_per_task(self, name, shape, initializer, regularizer=None,
                      constraint=None, trainable=True, aggregation="none"):
        """Adds a variable of shape `(num_task_slots,) + shape`."""
        variable = self.add_weight(
            shape=(self.num_task_slots,) + tuple(shape),
            name=name,
            initializer=initializer,
            regularizer=regularizer,
            constraint=constraint,
            trainable=trainable,
            autocast=trainable,
            aggregation=aggregation,
        )
        setattr(self, name, variable)
        self._per_task_names.append(name)
        return variable

    # -- what `call` uses -------------------------------------------------

    def _task_index(self):
        return ops.maximum(ops.convert_to_tensor(self.active_task) - 1, 0)

    def visible(self, name):
        """Kernel `name` with every weight the active task cannot see zeroed.

        Inside `PackNetModel`'s train step (see `unmasked_forward`) the
        kernel is used as it is: there every weight the training task cannot
        see is free and holds exactly 0, so the mask would change nothing.
        """
        kernel = getattr(self, name)
        if self._unmasked_forward:
            return kernel
        owner = getattr(self, f"{name}_owner")
        mask = ownership.visible_mask(owner, self.active_task)
        return ops.where(mask, kernel, ops.zeros_like(kernel))

    def task_row(self, name):
        """The active task's slot of per-task variable `name`."""
        return ops.take(getattr(self, name), self._task_index(), axis=0)

    # -- what `PackNetModel` uses -----------------------------------------

    def packed_kernels(self):
        """Returns `[(name, kernel, owner), ...]` for every packed kernel."""
        return [
            (n, getattr(self, n), getattr(self, f"{n}_owner"))
            for n in self._packed_names
        ]

    def per_task_variables(self):
        """Returns the variables with one slot per task on axis 0."""
        return [getattr(self, n) for n in self._per_task_names]

    def train_masks(self, task_id):
        """Which entries of each trainable variable `task_id` may change.

        Args:
            task_id: the training task (Python int).

        Returns:
            A list of `(variable, bool mask)` pairs.
        """
        masks = [
            (kernel, ownership.trainable_mask(owner, task_id))
            for _, kernel, owner in self.packed_kernels()
        ]
        for variable in self.per_task_variables():
            if not variable.trainable:
                continue
            row = np.zeros([self.num_task_slots], dtype=bool)
            row[task_id - 1] = True
            row = row.reshape([-1] + [1] * (len(variable.shape) - 1))
            masks.append(
                (variable, tf.broadcast_to(row, tuple(variable.shape)))
            )
        return masks

    def set_active_task(self, task_id):
        """Makes the layer compute for `task_id` (0 = no task)."""
        self.active_task.assign(task_id)

    def claim_free(self, task_id):
        """Gives every free weight of every packed kernel to `task_id`."""
        for _, _, owner in self.packed_kernels():
            owner.assign(ownership.claim_free(owner, task_id))

    def copy_task_slot(self, source_id, target_id):
        """Starts task `target_id`'s per-task values from `source_id`'s."""
        onehot = np.arange(self.num_task_slots) == target_id - 1
        for variable in self.per_task_variables():
            row = ops.take(variable, source_id - 1, axis=0)
            mask = onehot.reshape([-1] + [1] * (len(variable.shape) - 1))
            variable.assign(
                ops.where(mask, ops.expand_dims(row, 0), variable)
            )

    def initializer_of(self, name):
        """The initializer of packed kernel `name` (e.g. `"kernel"`).

        Keras names a layer's initializers after its kernels: `kernel` ->
        `kernel_initializer`, `depthwise_kernel` -> `depthwise_initializer`,
        `pointwise_kernel` -> `pointwise_initializer`. A layer that names
        them otherwise overrides this.

        Args:
            name: a kernel name of `packed_kernels()`.

        Returns:
            A `keras.initializers.Initializer`.

        Raises:
            AttributeError: if the layer has no such initializer.
        """
        stem = name[:-len("_kernel")] if name.endswith("_kernel") else name
        return getattr(self, f"{stem}_initializer")

    def zero_free(self):
        """Sets every free weight (owner 0) of every packed kernel to 0."""
        for _, kernel, owner in self.packed_kernels():
            kernel.assign(ownership.zero_free(kernel, owner))

    def get_config(self):
        config = super().get_config()
        config["max_tasks"] = self.max_tasks
        return config


class PackedKernelLayer(PackedLayer):
    """Base of the packed layers with kernels, a per-task bias and an
    activation (dense and every convolution).

    It takes the arguments those Keras layers share, so that each layer
    module holds only what differs: `activation`, `use_bias`, and for each
    kernel prefix in `KERNELS` (`"kernel"`; `"depthwise"`, `"pointwise"`)
    and for `"bias"`, `<prefix>_initializer`, `<prefix>_regularizer` and
    `<prefix>_constraint`, with Keras' defaults (`"glorot_uniform"` kernels,
    `"zeros"` biases). Each is read by Keras' getters, kept under its own
    name and written back by `get_config`.

    Args:
        activation: a Keras activation (name or callable); None is linear.
        use_bias: whether the layer has a per-task bias.
        max_tasks: task slots for the biases (see `PackedLayer`).
        **kwargs: the weight arguments above, `activity_regularizer`, and
            base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Raises:
        ValueError: on a bad `max_tasks`, or from Keras' getters on an
            unknown initializer, regularizer or constraint.
    """

    #: The prefixes of this layer's kernels' weight arguments.
    KERNELS = ("kernel",)

    @classmethod
    def weight_arguments(cls):
        """`{argument: default}` of the weight arguments `__init__` reads
        from `**kwargs` (`convert` checks a Keras layer's config against
        them)."""
        return {
            f"{prefix}_{kind}": (
                ("zeros" if prefix == "bias" else "glorot_uniform")
                if kind == "initializer" else None)
            for prefix in (*cls.KERNELS, "bias")
            for kind in _WEIGHT_ARGUMENTS
        }

    def __init__(self, activation=None, use_bias=True, max_tasks=None,
                 **kwargs):
        weights = {key: kwargs.pop(key, default)
                   for key, default in self.weight_arguments().items()}
        super().__init__(max_tasks=max_tasks, **kwargs)
        self.activation = activations.get(activation)
        self.use_bias = use_bias
        self._weight_arguments = tuple(weights)
        for key, value in weights.items():
            read, _ = _WEIGHT_ARGUMENTS[key.rsplit("_", 1)[1]]
            setattr(self, key, read(value))

    def _add_kernel(self, name, shape):
        """A packed kernel from its arguments: `kernel` reads
        `kernel_initializer`, ...; `depthwise_kernel` `depthwise_*`."""
        prefix = "kernel" if name == "kernel" else name[:-len("_kernel")]
        return self._add_packed_kernel(
            name, shape, getattr(self, f"{prefix}_initializer"),
            getattr(self, f"{prefix}_regularizer"),
            getattr(self, f"{prefix}_constraint"))

    def _add_bias(self, size):
        """The per-task bias of `size` units, when `use_bias`."""
        if self.use_bias:
            self._add_per_task("bias", (size,), self.bias_initializer,
                               self.bias_regularizer, self.bias_constraint)

    def _bias_and_activation(self, x, add_bias=ops.add):
        """`activation(x + the active task's bias)`."""
        if self.use_bias:
            x = add_bias(x, self.task_row("bias"))
        return self.activation(x) if self.activation is not None else x

    def get_config(self):
        config = super().get_config()
        config.update(
            activation=activations.serialize(self.activation),
            use_bias=self.use_bias,
            activity_regularizer=regularizers.serialize(
                self.activity_regularizer))
        for key in self._weight_arguments:
            _, write = _WEIGHT_ARGUMENTS[key.rsplit("_", 1)[1]]
            config[key] = write(getattr(self, key))
        return config

@contextlib.contextmanager
def unmasked_forward(layers):
    """Packed layers compute with their raw kernels while this is open.

    Only for tracing the forward pass of the task in training, the newest
    one: no weight belongs to a later task, so the only weights it cannot
    see are free ones, and those hold exactly 0 (pruning writes 0,
    `PackNetModel.fit` zeroes them before training, and every train step
    restores them), which is what the mask would give. Skipping the mask
    saves an elementwise pass over every kernel, forward and backward.

    Args:
        layers: the `PackedLayer`s of the model being traced.

    Yields:
        None.
    """
    for layer in layers:
        layer._unmasked_forward = True
    try:
        yield
    finally:
        for layer in layers:
            layer._unmasked_forward = False
