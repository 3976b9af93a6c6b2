"""The masked training step of `PackNetModel`.

Keras' own TensorFlow train step with two additions: gradients are masked to
the entries the active task owns, and after every optimizer step every other
entry is restored to its exact previous value (a copy taken just before), so
no optimizer - weight decay, momentum, EMA - can move a frozen weight. The
forward pass uses the raw kernels (`layers.base.unmasked_forward`): `fit`
first sets every free weight to 0, and the restore keeps them there.

Mask, copy, optimizer step and write-back form one update, compiled as one
XLA function by default (`PackNetModel(fused_update=True)`): XLA fuses
them into a pass or two over each variable, where uncompiled TensorFlow
runs each as its own pass. The write-back is a select, exact under XLA as
without it.
"""

import contextlib

import keras
import tensorflow as tf

from packnet_tf.compat.keras_internals import loss_tracker
from packnet_tf.core.labels import check_labels
from packnet_tf.core.task import require_head
from packnet_tf.errors import FusedUpdateError
from packnet_tf.layers.base import unmasked_forward


class MaskedTrainingMixin:
    """`train_step`, `test_step` and `fit` for the active task.

    Mixed into `PackNetModel`, which provides `_packed()`, `heads`, `trunk`,
    `_active_id()`, `_task_for(action)` (the active task's record, guarded
    by `packnet_tf.core.task.require`), `_step_results()` and
    `_statistics_changed(task)` (training moves batch-norm statistics).
    """

    def _trained_variables(self, task_id):
        """Every variable the task trains: the trunk's and its head's."""
        return list(self.trunk.trainable_variables) + list(
            self.heads[task_id - 1].trainable_variables
        )

    def _train_masks(self, task_id, packed=None):
        """`(variable, mask or None)` for every variable the task trains."""
        masks = {}
        for layer in self._packed() if packed is None else packed:
            for variable, mask in layer.train_masks(task_id):
                masks[id(variable)] = mask
        return [(v, masks.get(id(v))) for v in self._trained_variables(task_id)]

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

    @staticmethod
    def _frozen_values(pairs):
        """What the step writes back outside each mask: a copy of each.

        A copy, not a lazy read: the optimizer writes the variables next.
        A snapshot taken once per `fit` instead (one persistent copy, no
        per-step one) measured no faster (`benchmarks/step_profile.py`,
        variant `snapshot`), so the step keeps the design that needs no
        state between steps.
        """
        return [tf.identity(v.value) if m is not None else None
                for v, m in pairs]

    def _update_loss_metric(self, loss, x):
        # As Keras' own step does: the loss unscaled by the replicas (see
        # NOTES), weighted by the batch size.
        tracker = loss_tracker(self)
        if tracker is None:
            return
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        batch = tf.shape(tf.nest.flatten(x)[0])[0]
        tracker.update_state(loss * replicas, sample_weight=batch)

    def _fuses_update(self):
        """Whether this step compiles its update with XLA (see `train_step`).

        Not under a `tf.distribute` strategy: the optimizer's cross-replica
        update (`merge_call`) cannot run inside a compiled function.
        """
        return bool(getattr(self, "fused_update", False)) and (
            not tf.distribute.has_strategy())

    def _masked_update(self, task_id, packed, gradients):
        """The optimizer's step on the task's variables, earlier tasks kept.

        Masks the gradients to the task's entries, copies what the step
        writes back, applies the optimizer and writes every entry outside
        the masks back. Masks and copies are made here, so that compiled
        (`jit_compile`) the whole update is one XLA cluster.
        """
        pairs = self._train_masks(task_id, packed)
        variables = [v for v, _ in pairs]
        gradients = [
            g if g is None or m is None
            else tf.where(m, tf.convert_to_tensor(g), tf.constant(0, g.dtype))
            for g, (_, m) in zip(gradients, pairs)
        ]
        backups = self._frozen_values(pairs)
        held = self._ema_held_heads(task_id)
        held_values = [tf.identity(v.value) for v in held]
        self.optimizer.apply(gradients, variables)
        self._restore(pairs, backups)
        for variable, value in zip(held, held_values):
            variable.assign(value)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        task = self._task_for("fit")
        packed = self._packed()
        variables = self._trained_variables(task.task_id)
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

        def packnet_masked_update(gradients):  # the name XLA's errors show
            self._masked_update(task.task_id, packed, gradients)

        update = packnet_masked_update
        if self._fuses_update():
            # One XLA cluster for mask, optimizer step and write-back: on a
            # CPU faster than plain Keras' uncompiled optimizer step
            # (benchmarks/step_profile.py). The forward and backward passes
            # stay as compiled (or not) by `compile`.
            update = tf.function(update, jit_compile=True)
        update(gradients)
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

    def train_on_batch(self, *args, **kwargs):
        """`keras.Model.train_on_batch` on the active task.

        Raises:
            FusedUpdateError: if XLA cannot compile the fused update.
        """
        task = self._task_for("fit")
        require_head(task, "train")
        self._statistics_changed(task)
        with self._explain_fused_update_failure():
            return super().train_on_batch(*args, **kwargs)

    @contextlib.contextmanager
    def _explain_fused_update_failure(self):
        """Turns XLA's failure to compile the fused update into an error
        that names the fix; other errors pass unchanged."""
        try:
            yield
        except tf.errors.InvalidArgumentError as error:
            message = str(error)
            if not (self._fuses_update() and "XLA" in message
                    and "packnet_masked_update" in message):
                raise
            detail = next((line.strip() for line in message.splitlines()
                           if "unsupported operations" in line), "")
            raise FusedUpdateError(
                "PackNetModel(fused_update=True), the default, compiles the "
                "masked optimizer update with XLA, and XLA could not compile "
                f"this one ({type(self.optimizer).__name__}): "
                f"{detail or message.splitlines()[0]}.",
                "set `model.fused_update = False` (or pass "
                "fused_update=False) and compile again; the update then runs "
                "uncompiled, exactly as safe.") from error

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit` on the active task; see the class docstring.

        Raises:
            TaskStateError: if no task is training.
            ValueError: if labels do not fit the active task's head.
            FusedUpdateError: if XLA cannot compile the fused update
                (`fused_update=False` avoids it).
        """
        task = self._task_for("fit")
        require_head(task, "train")
        check_labels(x, y, task.num_classes, task.name)
        self._statistics_changed(task)
        # The train step computes with raw kernels; free weights must be 0
        # for that to equal the masked kernels. Pruning leaves them at 0;
        # this also covers weights written by hand since.
        for layer in self._packed():
            layer.zero_free()
        # (Uncompiled: no optimizer yet; Keras' fit then says to compile.)
        optimizer = getattr(self, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            # Slots for every head, so that a saved optimizer loads back
            # whichever task it was saved during.
            with self.distribute_strategy.scope():
                optimizer.build(self.trainable_variables)
        ema = bool(getattr(optimizer, "use_ema", False))
        if ema:
            pairs = self._train_masks(task.task_id)
            snapshot = [tf.identity(v.value) for v, _ in pairs]
            held = self._ema_held_heads(task.task_id)
            held_values = [tf.identity(v.value) for v in held]
        with self._explain_fused_update_failure():
            history = super().fit(x, y, *args, **kwargs)
        if ema:
            # fit() ends by overwriting every weight with its moving average;
            # the frozen ones must stay exactly as they were.
            self._restore(pairs, snapshot)
            for variable, value in zip(held, held_values):
                variable.assign(value)
        return history
