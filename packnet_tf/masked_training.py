"""The masked training step of `PackNetModel`.

Keras' own TensorFlow train step with two additions: gradients are masked to
the entries the active task owns, and after every optimizer step every other
entry is written back to its exact value, so no optimizer - weight decay,
momentum, EMA - can move a frozen weight. The forward pass uses the raw
kernels (`layers.base.unmasked_forward`): `fit` first sets every free weight
to 0, and the write-back keeps them there.

The values written back come from a *snapshot*, taken once when `fit`
starts: for every variable the task trains, one untracked, non-trainable
variable holding its entries outside the task's mask, and 0 inside it. No
entry outside the mask may change while the task trains (earlier tasks'
are frozen, free ones hold 0), and an entry the task frees during `fit`
(a pruning callback) was inside the mask when the snapshot was taken, so
it is written back to 0, as pruning left it. One `where` per variable per
step remains; the copy of every kernel before each step, which the step
took until this design, is gone (`benchmarks/step_profile.py`, variant
`step-copy`, measures both). The snapshot costs one copy of the trained
variables' memory and is never saved.
"""

import keras
import tensorflow as tf

from packnet_tf._keras_compat import loss_tracker
from packnet_tf.labels import check_labels
from packnet_tf.layers.base import unmasked_forward


class _Untracked:
    """Holds the snapshot variables out of Keras' tracking (never saved)."""

    def __init__(self):
        self.variables = {}


class MaskedTrainingMixin:
    """`train_step`, `test_step` and `fit` for the active task.

    Mixed into `PackNetModel`, which provides `_packed()`, `heads`, `trunk`,
    `_active_id()`, `_task_for(action)` (the active task's record, guarded
    by `packnet_tf.task.require`) and `_step_results()`.
    """

    def _train_masks(self, task_id, packed=None):
        """`(variable, mask or None)` for every variable the task trains."""
        masks = {}
        for layer in self._packed() if packed is None else packed:
            for variable, mask in layer.train_masks(task_id):
                masks[id(variable)] = mask
        variables = list(self.trunk.trainable_variables) + list(
            self.heads[task_id - 1].trainable_variables
        )
        return [(v, masks.get(id(v))) for v in variables]

    def _ema_held_heads(self, task_id):
        """Every other head's variables, when the optimizer keeps an EMA.

        Keras' EMA averages and overwrites every variable the optimizer was
        built with (`fit` builds it on all heads), not only those it is
        given: a frozen head would take its average, off by rounding.
        """
        if not getattr(self.optimizer, "use_ema", False):
            return []
        return [v for index, head in enumerate(self.heads)
                if index != task_id - 1 for v in head.trainable_variables]

    @staticmethod
    def _restore(pairs, backups):
        for (variable, mask), backup in zip(pairs, backups):
            if mask is not None:
                variable.assign(tf.where(mask, variable.value, backup))

    def _take_snapshot(self, pairs):
        """Writes the snapshot of `pairs` (see the module docstring).

        Called outside the train step (cross-replica under a strategy, so
        every replica's copy gets the same value). The snapshot variables
        are created once per trained variable and reused by later fits.

        Args:
            pairs: `(variable, mask or None)` from `_train_masks`.

        Returns:
            The snapshot variables, one per pair (None where no mask).
        """
        store = self.__dict__.setdefault("_snapshot_store", _Untracked())
        snapshots = []
        for variable, mask in pairs:
            if mask is None:
                snapshots.append(None)
                continue
            key = variable.path
            if key not in store.variables:
                with self.distribute_strategy.scope():
                    store.variables[key] = tf.Variable(
                        tf.zeros(variable.shape, variable.dtype),
                        trainable=False, name="packnet_snapshot")
            snapshot = store.variables[key]
            snapshot.assign(tf.where(
                mask, tf.zeros_like(variable.value), variable.value))
            snapshots.append(snapshot)
        return snapshots

    def _frozen_values(self, pairs):
        """What the step writes back outside each mask: the snapshot.

        `benchmarks/step_profile.py` replaces this on one instance with a
        copy taken every step, the design before the snapshot.
        """
        return self._snapshots

    def _update_loss_metric(self, loss, x):
        # As Keras' own step does: the loss unscaled by the replicas (see
        # NOTES), weighted by the batch size.
        tracker = loss_tracker(self)
        if tracker is None:
            return
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        batch = tf.shape(tf.nest.flatten(x)[0])[0]
        tracker.update_state(loss * replicas, sample_weight=batch)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        task = self._task_for("fit")
        packed = self._packed()
        pairs = self._train_masks(task.task_id, packed)
        variables = [v for v, _ in pairs]
        with tf.GradientTape() as tape:
            # Free weights hold 0 (see `fit`), so no kernel needs its mask.
            with unmasked_forward(packed):
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
        backups = self._frozen_values(pairs)
        held = self._ema_held_heads(task.task_id)
        held_values = [tf.identity(v.value) for v in held]
        self.optimizer.apply(gradients, variables)
        self._restore(pairs, backups)
        for variable, value in zip(held, held_values):
            variable.assign(value)
        return self._step_results(
            self.compute_metrics(x, y, y_pred, sample_weight=sample_weight))

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if self._active_id() is None:
            self.call(x)  # raises the no-task error
        y_pred = self(x, training=False)
        loss = self.compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
            training=False,
        )
        self._update_loss_metric(loss, x)
        return self._step_results(
            self.compute_metrics(x, y, y_pred, sample_weight=sample_weight))

    def _prepare_training(self, task):
        """What every entry into the train function needs first.

        Returns:
            `_train_masks(task.task_id)`.
        """
        # The train step computes with raw kernels; free weights must be 0
        # for that to equal the masked kernels. Pruning leaves them at 0;
        # this also covers weights written by hand since.
        for layer in self._packed():
            layer.zero_free()
        if self.optimizer is not None and not self.optimizer.built:
            # Slots for every head, so that a saved optimizer loads back
            # whichever task it was saved during.
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)
        pairs = self._train_masks(task.task_id)
        # The train function reads these variables; they are written here,
        # before every entry into it, so a step never sees stale values.
        self.__dict__["_snapshots"] = self._take_snapshot(pairs)
        return pairs

    def train_on_batch(self, x, y=None, *args, **kwargs):
        """`keras.Model.train_on_batch` on the active task.

        Takes the snapshot the step writes back (one copy of the trained
        variables per call; `fit` takes it once for all its steps).

        Raises:
            TaskStateError: if no task is training.
            ValueError: if labels do not fit the active task's head.
        """
        task = self._task_for("fit")
        check_labels(x, y, task.num_classes, task.name)
        self._prepare_training(task)
        return super().train_on_batch(x, y, *args, **kwargs)

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit` on the active task; see the class docstring.

        Raises:
            TaskStateError: if no task is training.
            ValueError: if labels do not fit the active task's head.
        """
        task = self._task_for("fit")
        check_labels(x, y, task.num_classes, task.name)
        pairs = self._prepare_training(task)
        ema = bool(getattr(self.optimizer, "use_ema", False))
        if ema:
            held = self._ema_held_heads(task.task_id)
            held_values = [tf.identity(v.value) for v in held]
        history = super().fit(x, y, *args, **kwargs)
        if ema:
            # fit() ends by overwriting every weight with its moving average;
            # the frozen ones must stay exactly as they were.
            self._restore(pairs, self._snapshots)
            for variable, value in zip(held, held_values):
                variable.assign(value)
        return history
