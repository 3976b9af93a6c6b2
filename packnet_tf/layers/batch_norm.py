"""`TaskBatchNormalization`: batch norm with gamma, beta and statistics per task."""

import keras
import numpy as np
import tensorflow as tf
from keras import constraints, initializers, ops, regularizers

from packnet_tf.layers.base import PackedLayer


@keras.saving.register_keras_serializable(package="packnet_tf")
class TaskBatchNormalization(PackedLayer):
    """Batch normalization that keeps gamma, beta and moving statistics per task.

    Same arguments as `keras.layers.BatchNormalization` (without renorm),
    plus `max_tasks`. For the active task t it
    normalizes with task t's statistics and scales with task t's gamma and
    beta; in training it updates task t's moving statistics only. A new task
    starts from the previous task's values (`PackNetModel.add_task`).

    Args:
        axis: the features axis.
        momentum: momentum of the moving statistics.
        epsilon: small float added to the variance.
        center: whether to add a per-task offset `beta`.
        scale: whether to multiply by a per-task `gamma`.
        beta_initializer, gamma_initializer, moving_mean_initializer,
        moving_variance_initializer, beta_regularizer, gamma_regularizer,
        beta_constraint, gamma_constraint: as in
        `keras.layers.BatchNormalization`.
        synchronized: under a `tf.distribute` strategy, compute the batch
            statistics over the global batch (all replicas) rather than each
            replica's share, so training matches one device on the same
            batches.
        max_tasks: task slots (see `PackedLayer`).
        **kwargs: base layer arguments.

    Raises:
        ValueError: if `axis` is not an int.
    """

    def __init__(
        self,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        synchronized=False,
        max_tasks=None,
        **kwargs,
    ):
        super().__init__(max_tasks=max_tasks, **kwargs)
        self.synchronized = bool(synchronized)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ValueError(
                f"Expected `axis` to be an int. Received: axis={axis!r}"
            )
        self.axis = axis
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = center
        self.scale = scale
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(
            moving_mean_initializer
        )
        self.moving_variance_initializer = initializers.get(
            moving_variance_initializer
        )
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_constraint = constraints.get(beta_constraint)
        self.gamma_constraint = constraints.get(gamma_constraint)
        self.supports_masking = True
        # Set by `packnet_tf.core.recalibration.batch_statistics`: normalize with
        # the batch's own statistics, record them here, update nothing.
        self._collecting = False
        self.collected = None

    def build(self, input_shape):
        rank = len(input_shape)
        axis = self.axis % rank
        shape = (input_shape[axis],)
        if self.scale:
            self._add_per_task(
                "gamma", shape, self.gamma_initializer,
                self.gamma_regularizer, self.gamma_constraint,
            )
        if self.center:
            self._add_per_task(
                "beta", shape, self.beta_initializer,
                self.beta_regularizer, self.beta_constraint,
            )
        # "mean" aggregation, as replicas each see their own batch.
        self._add_per_task(
            "moving_mean", shape, self.moving_mean_initializer,
            trainable=False, aggregation="mean",
        )
        self._add_per_task(
            "moving_variance", shape, self.moving_variance_initializer,
            trainable=False, aggregation="mean",
        )
        self._add_active_task()
        self._reduction_axes = [i for i in range(rank) if i != axis]
        self._broadcast_shape = [1] * rank
        self._broadcast_shape[axis] = input_shape[axis]
        self.input_spec = keras.layers.InputSpec(
            ndim=rank, axes={axis: input_shape[axis]}
        )

    def _broadcast(self, row):
        return ops.reshape(row, self._broadcast_shape)

    def _update_moving(self, name, batch_value):
        variable = getattr(self, name)
        row = self.task_row(name)
        new_row = row * self.momentum + batch_value * (1.0 - self.momentum)
        slots = ops.arange(self.num_task_slots)
        is_active = ops.expand_dims(ops.equal(slots, self._task_index()), 1)
        variable.assign(
            ops.where(is_active, ops.expand_dims(new_row, 0), variable)
        )

    def set_task_statistics(self, task_id, mean, variance):
        """Writes task `task_id`'s moving mean and variance.

        Args:
            task_id: the task's owner id (1 for the first task).
            mean, variance: one value per feature.
        """
        slots = np.arange(self.num_task_slots) == task_id - 1
        for variable, row in ((self.moving_mean, mean),
                              (self.moving_variance, variance)):
            row = np.asarray(row, dtype=variable.dtype).reshape(1, -1)
            variable.assign(ops.where(slots[:, None], row, variable))

    def _moments(self, x):
        context = tf.distribute.get_replica_context()
        if not self.synchronized or context is None:
            return ops.moments(x, axes=self._reduction_axes)
        count = ops.cast(ops.size(x) // ops.shape(x)[self.axis], x.dtype)
        total, squares, count = context.all_reduce(
            "sum",
            [
                ops.sum(x, axis=self._reduction_axes),
                ops.sum(ops.square(x), axis=self._reduction_axes),
                count,
            ],
        )
        mean = total / count
        return mean, ops.maximum(squares / count - ops.square(mean), 0.0)

    def call(self, inputs, training=None):
        compute_dtype = inputs.dtype
        x = ops.cast(inputs, "float32")
        if self._collecting:
            # A population-statistics pass (`packnet_tf.core.recalibration`):
            # batch statistics, whatever `training` says, and no update.
            mean, variance = ops.moments(x, axes=self._reduction_axes)
            count = ops.size(x) // ops.shape(x)[self.axis]
            self.collected = (mean, variance, count)
        elif training and self.trainable:
            mean, variance = self._moments(x)
            self._update_moving("moving_mean", mean)
            self._update_moving("moving_variance", variance)
        else:
            mean = self.task_row("moving_mean")
            variance = self.task_row("moving_variance")
        inv = ops.rsqrt(variance + self.epsilon)
        if self.scale:
            inv = inv * ops.cast(self.task_row("gamma"), "float32")
        offset = -mean * inv
        if self.center:
            offset = offset + ops.cast(self.task_row("beta"), "float32")
        outputs = x * self._broadcast(inv) + self._broadcast(offset)
        return ops.cast(outputs, compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "axis": self.axis,
                "momentum": self.momentum,
                "epsilon": self.epsilon,
                "center": self.center,
                "scale": self.scale,
                "synchronized": self.synchronized,
                "beta_initializer": initializers.serialize(
                    self.beta_initializer
                ),
                "gamma_initializer": initializers.serialize(
                    self.gamma_initializer
                ),
                "moving_mean_initializer": initializers.serialize(
                    self.moving_mean_initializer
                ),
                "moving_variance_initializer": initializers.serialize(
                    self.moving_variance_initializer
                ),
                "beta_regularizer": regularizers.serialize(
                    self.beta_regularizer
                ),
                "gamma_regularizer": regularizers.serialize(
                    self.gamma_regularizer
                ),
                "beta_constraint": constraints.serialize(self.beta_constraint),
                "gamma_constraint": constraints.serialize(
                    self.gamma_constraint
                ),
            }
        )
        return config
