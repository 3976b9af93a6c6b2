"""Gradual pruning of the active task on a tfmot `PruningSchedule`.

tensorflow-model-optimization's schedules (`PolynomialDecay`,
`ConstantSparsity`) say at each training step whether to prune and to what
sparsity. `tfmot.sparsity.keras.prune_low_magnitude` only wraps Keras 2
models, so `GradualPruning` is a Keras 3 callback that reads the same
schedules and prunes a `PackNetModel`'s active task with its exact
per-kernel primitive `prune_counts`.

Sparsity is relative to what the task owned when pruning started, per
packed kernel: at sparsity s a kernel keeps
`ownership.count_to_keep(start, s)` of the task's weights (tfmot's rule,
`max(round(n * (1 - s)), 1)`).

Importing tfmot sets `TF_USE_LEGACY_KERAS=1` (it would turn `tf.keras` into
tf_keras for the rest of the process): `import_tfmot` imports it only when a
schedule is used and puts the environment back exactly as it was.
"""

import os
import sys
import warnings

import keras
import tensorflow as tf

from packnet_tf.core.task import require
from packnet_tf.layers.ownership import count_to_keep
from packnet_tf.training.recipe import GRADUAL_TIMINGS

#: The variable importing tfmot sets.
LEGACY_KERAS_ENV = "TF_USE_LEGACY_KERAS"
#: Schedules that `schedule_from_config` builds by name.
SCHEDULES = ("PolynomialDecay", "ConstantSparsity")


def import_tfmot():
    """Imports `tfmot.sparsity.keras`, leaving the environment as it was.

    Returns:
        The `tensorflow_model_optimization.sparsity.keras` module.
    """
    before = os.environ.get(LEGACY_KERAS_ENV)
    if "tensorflow_model_optimization" not in sys.modules:
        # Resolve tf.keras under the user's own setting first: tfmot's import
        # touches tf.keras while its variable is set, which would otherwise
        # route tf.keras to tf_keras for the whole process.
        getattr(tf.keras, "Model", None)
    try:
        import tensorflow_model_optimization as tfmot
    finally:
        if before is None:
            os.environ.pop(LEGACY_KERAS_ENV, None)
        else:
            os.environ[LEGACY_KERAS_ENV] = before
    return tfmot.sparsity.keras


def schedule_from_config(config):
    """A tfmot schedule from its `get_config()` dict.

    Args:
        config: `{"class_name": "PolynomialDecay" | "ConstantSparsity",
            "config": {...}}`, as `PruningSchedule.get_config()` returns
            (so it round-trips through JSON or YAML), or a schedule, which
            is returned as is.

    Returns:
        A `tfmot.sparsity.keras.PruningSchedule`.

    Raises:
        ValueError: on an unknown class name, missing keys, or arguments
            the schedule rejects.
        TypeError: on anything else.
    """
    sparsity = import_tfmot()
    if isinstance(config, sparsity.PruningSchedule):
        return config
    if not isinstance(config, dict):
        raise TypeError(
            "Expected a tfmot PruningSchedule or its config dict "
            "{'class_name': ..., 'config': {...}}. "
            f"Received: {type(config).__name__}"
        )
    name = config.get("class_name")
    if name not in SCHEDULES or not isinstance(config.get("config"), dict):
        raise ValueError(
            f"Expected a schedule config {{'class_name': one of {SCHEDULES}, "
            f"'config': {{...}}}}. Received: {config!r}"
        )
    try:
        return getattr(sparsity, name).from_config(config["config"])
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"Bad {name} config {config['config']!r}: {error}"
        ) from error


def polynomial_decay(final_sparsity, *, end_step, begin_step=0,
                     frequency=100, power=3, initial_sparsity=0.0):
    """tfmot's `PolynomialDecay`, imported lazily (see `import_tfmot`).

    Defaults are tfmot's. Steps count training batches from 1, as in tfmot.

    Args:
        final_sparsity: sparsity at `end_step`, in [0, 1).
        end_step: the step that reaches `final_sparsity`.
        begin_step: pruning steps are `begin_step + k * frequency`.
        frequency: prune every `frequency` steps (and at `end_step`, see
            `GradualPruning`).
        power: exponent of the decay.
        initial_sparsity: sparsity at `begin_step`.

    Returns:
        A `tfmot.sparsity.keras.PolynomialDecay`.

    Raises:
        ValueError: on arguments tfmot rejects.
    """
    return schedule_from_config({
        "class_name": "PolynomialDecay",
        "config": {
            "initial_sparsity": initial_sparsity,
            "final_sparsity": final_sparsity,
            "begin_step": begin_step,
            "end_step": end_step,
            "power": power,
            "frequency": frequency,
        },
    })


def final_sparsity(schedule):
    """The sparsity `schedule` ends at, or None for an unknown schedule.

    Args:
        schedule: a tfmot `PruningSchedule`.

    Returns:
        `final_sparsity` of a `PolynomialDecay`, `target_sparsity` of a
        `ConstantSparsity`, or None.
    """
    config = schedule.get_config().get("config", {})
    for key in ("final_sparsity", "target_sparsity"):
        if key in config:
            return float(config[key])
    return None


def last_step(schedule):
    """The step at which `schedule` reaches its final sparsity, or None.

    Steps count training batches from 1, as in tfmot, so a
    `ConstantSparsity` with `begin_step=0` first prunes at step
    `frequency`.

    Args:
        schedule: a tfmot `PruningSchedule`.

    Returns:
        `end_step` of a `PolynomialDecay` (`GradualPruning` prunes there),
        the first pruning step of a `ConstantSparsity`, or None when
        unknown.
    """
    config = schedule.get_config().get("config", {})
    if "final_sparsity" in config:
        return max(int(config["end_step"]), 1)
    if "target_sparsity" in config:
        begin = int(config["begin_step"])
        return begin if begin >= 1 else begin + int(config["frequency"])
    return None


#: Keys a dict of timings may hold (`schedule_for`): `polynomial_decay`'s.
TIMING_KEYS = tuple(GRADUAL_TIMINGS)


def schedule_for(gradual, prune_fraction):
    """The schedule a task's `gradual` setting asks for.

    Args:
        gradual: None (one-shot pruning); a dict of `PolynomialDecay`
            timings with keys from `TIMING_KEYS` (`end_step` required),
            which prunes to `prune_fraction`; or a tfmot `PruningSchedule`
            or its config dict, whose final sparsity must equal
            `prune_fraction` unless that is None.
        prune_fraction: the task's prune fraction, or None (the schedule
            decides).

    Returns:
        A tfmot `PruningSchedule`, or None: one-shot pruning, or timings
        with nothing to prune (fraction 0 or None, e.g. the last planned
        task).

    Raises:
        ValueError: on unknown or missing timing keys, a schedule that
            ends at another sparsity, or arguments tfmot rejects.
        TypeError: on a value of another type.
    """
    if gradual is None:
        return None
    if isinstance(gradual, dict) and "class_name" not in gradual:
        unknown = sorted(set(gradual) - set(TIMING_KEYS))
        if unknown or "end_step" not in gradual:
            raise ValueError(
                "Expected `gradual` as a dict of PolynomialDecay timings "
                f"with keys from {TIMING_KEYS} (end_step required; the "
                "final sparsity is the prune fraction), a tfmot "
                f"PruningSchedule, or its config. Received: {gradual!r}"
            )
        if not prune_fraction:
            return None
        return polynomial_decay(prune_fraction, **gradual)
    schedule = schedule_from_config(gradual)
    final = final_sparsity(schedule)
    if prune_fraction is not None and prune_fraction != final:
        raise ValueError(
            f"The schedule ends at sparsity {final} but "
            f"prune_fraction={prune_fraction}. With a schedule pass "
            "prune_fraction=None (the schedule decides), or a dict of "
            "timings as `gradual` to prune to the planned fraction."
        )
    return schedule


def check_fits(schedule, steps_per_epoch, finetune_epochs):
    """Checks that fine-tuning is long enough to finish `schedule`.

    Args:
        schedule: a tfmot `PruningSchedule`.
        steps_per_epoch: training batches per epoch, or None when unknown
            (only the epoch count is checked then).
        finetune_epochs: epochs of fine-tuning.

    Raises:
        ValueError: with no fine-tuning, or when the schedule's last step
            comes after the last fine-tuning step.
    """
    if not finetune_epochs:
        raise ValueError(
            "Gradual pruning happens while fine-tuning: expected "
            "`finetune_epochs` >= 1 with `gradual`. Received: "
            f"finetune_epochs={finetune_epochs}"
        )
    last = last_step(schedule)
    if steps_per_epoch is not None and last is not None and (
            last > steps_per_epoch * finetune_epochs):
        raise ValueError(
            f"The pruning schedule reaches its final sparsity at step "
            f"{last}, but fine-tuning takes "
            f"{steps_per_epoch * finetune_epochs} steps ({finetune_epochs} "
            f"epochs of {steps_per_epoch}). End the schedule earlier or "
            "fine-tune longer."
        )


@keras.saving.register_keras_serializable(package="packnet_tf")
class GradualPruning(keras.callbacks.Callback):
    """Prunes the active task of a `PackNetModel` on a tfmot schedule.

    Pass it to `fit` while fine-tuning the task. Steps count training
    batches from 1 and go on across `fit` calls, as tfmot's pruning step
    does. At every step where the schedule says to prune, with sparsity s,
    each packed kernel is pruned down to `count_to_keep(start, s)` of the
    task's weights, `start` being what the task owned there when this
    callback first ran (the smallest weights go first; see
    `PackNetModel.prune_counts`). Pruning happens before the step's batch,
    so the batch trains the pruned network.

    Unlike tfmot, a `PolynomialDecay` also prunes at its `end_step` (step 1
    if `end_step` is 0), so its final sparsity is reached exactly even when
    `end_step - begin_step` is not a multiple of `frequency`. If training
    stops before the schedule's last step, a warning says how far it got.

    With `steps_per_execution > 1` Keras calls batch hooks once per
    execution, so pruning can only happen at those steps.

    Args:
        schedule: a tfmot `PruningSchedule` (`PolynomialDecay`,
            `ConstantSparsity`) or its config dict (see
            `schedule_from_config`).

    Attributes:
        step: steps taken so far.
        start_counts: `{"layer/kernel": count}` the task owned at the start.
        sparsity: the sparsity last pruned to (0.0 before any pruning).
        history: `[(step, sparsity), ...]` of the steps that pruned.

    Raises:
        TypeError, ValueError: on a bad schedule.

    Example:

    >>> schedule = polynomial_decay(0.75, end_step=100, frequency=10)
    >>> model.fit(x, y, epochs=2, callbacks=[GradualPruning(schedule)])
    >>> model.recalibrate_batch_norm(x)   # a network with batch norm
    >>> model.end_task()
    """

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule_from_config(schedule)
        self._config = dict(self.schedule.get_config().get("config", {}))
        self._final = final_sparsity(self.schedule)
        self.step = 0
        self.start_counts = None
        self.sparsity = 0.0
        self.history = []
        self._task = None

    def on_train_begin(self, logs=None):
        model = self.model
        if not hasattr(model, "prune_counts"):
            raise TypeError(
                "GradualPruning prunes a packnet_tf.PackNetModel. "
                f"Received a model of type {type(model).__name__}."
            )
        task = require(model.active_task, "GradualPruning")
        if self._task is None:
            self._task = task.name
            self.start_counts = model.owned_counts()
        elif self._task != task.name:
            raise ValueError(
                f"This GradualPruning callback pruned task {self._task!r}; "
                f"the active task is now {task.name!r}. Use a new callback "
                "for every task."
            )

    def _target(self, step):
        """`(prune now, sparsity)` at `step`."""
        should_prune, value = self.schedule(tf.constant(step, "int64"))
        should_prune = bool(should_prune)
        value = float(value)
        # The schedules compute in float32; their own Python numbers give
        # the exact final counts (0.9 in float32 is 0.89999998).
        if "target_sparsity" in self._config:
            value = self._final
        elif "final_sparsity" in self._config:
            if step >= int(self._config["end_step"]):
                value = self._final
                # tfmot prunes only every `frequency` steps and can stop
                # short of its final sparsity; finish it here.
                should_prune = should_prune or self.sparsity != self._final
        return should_prune, value

    def prune_to(self, sparsity):
        """Prunes every packed kernel of the task down to `sparsity`.

        Args:
            sparsity: target share of the starting count to free, in
                [0, 1). Kernels already sparser are left alone (a schedule
                cannot give weights back).

        Returns:
            The dict of counts freed now.
        """
        owned = self.model.owned_counts()
        counts = {}
        for key, start in self.start_counts.items():
            extra = owned[key] - count_to_keep(start, sparsity)
            if extra > 0:
                counts[key] = extra
        freed = self.model.prune_counts(counts) if counts else {}
        self.sparsity = max(self.sparsity, sparsity)
        return freed

    def on_train_batch_begin(self, batch, logs=None):
        self.step += 1
        should_prune, sparsity = self._target(self.step)
        if should_prune:
            self.prune_to(sparsity)
            self.history.append((self.step, sparsity))

    def on_train_end(self, logs=None):
        done = last_step(self.schedule)
        if done is not None and self.step < done and self._final:
            warnings.warn(
                f"Gradual pruning stopped at step {self.step}, before the "
                f"schedule's step {done}: task {self._task!r} is at sparsity "
                f"{self.sparsity:.4g}, not {self._final:.4g}. Fine-tune for "
                "more steps or end the schedule earlier.",
                stacklevel=2,
            )

    @property
    def reached_final(self):
        """Whether the task was pruned to the schedule's final sparsity."""
        return self._final is not None and self.sparsity == self._final

    def get_config(self):
        return {"schedule": self.schedule.get_config()}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
