"""`train_task`: the whole PackNet cycle for one task in one call.

The phases and their rules live in `packnet_tf.training.phases`; this module adds
the task, resolves the prune plan, and fits on arrays or a dataset.
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from packnet_tf.core.planning import check_fraction, prune_fraction_for
from packnet_tf.core.recalibration import array_batches
from packnet_tf.core.task import PRUNED, TRAINING
from packnet_tf.data.options import DEFAULT_BATCH_SIZE
from packnet_tf.training import auto_prune, phases
from packnet_tf.training.recipe import DEFAULTS, fresh_optimizer

__all__ = ["TaskHooks", "TaskResult", "fresh_optimizer", "run_phases",
           "train_task"]


@dataclasses.dataclass
class TaskResult:
    """What `train_task` did.

    Attributes:
        task: the task's `TaskInfo` when the call returned.
        train_history: the `History` of the training phase (None for 0
            epochs).
        finetune_history: the `History` of the fine-tuning phase, or None.
        freed: weights freed per kernel by pruning, one-shot or gradual
            (empty if not pruned).
        auto: with `prune_fraction="auto"`, the `AutoPruneResult` (the
            chosen fraction and every trial), else None.
    """

    task: object
    train_history: object
    finetune_history: object = None
    freed: dict = dataclasses.field(default_factory=dict)
    auto: object = None


class TaskHooks:
    """What a caller adds around the phases of `run_phases`.

    The base class adds nothing: each phase fits with `fit`, starts its
    optimizer the library's way, and nothing is saved or reported.
    `train_task` uses it as it is; the `packnet-tf` runner overrides the
    hooks to seed, save and report each phase.

    Args:
        fit: `fit(epochs, callbacks)` -> a Keras `History`, for every phase.
        accuracy: `accuracy()` -> the active task's held-out accuracy, for
            `prune_fraction="auto"`; None where nothing is held out.
        statistics_data: `data()` -> the task's training batches, for
            batch-norm recalibration and score calibration; None: neither.
    """

    def __init__(self, fit=None, accuracy=None, statistics_data=None):
        self._fit = fit
        self._accuracy = accuracy
        self.statistics_data = statistics_data

    def accuracy(self):
        """The active task's held-out accuracy (`prune_fraction="auto"`)."""
        return self._accuracy()

    def fit(self, phase):
        """The `fit(epochs, callbacks)` of `phase` ("train", "prune" for
        the auto trials' recovery, "finetune")."""
        return self._fit

    def compile(self, phase):
        """`compile(learning_rate)` that starts `phase`'s optimizer, or None
        for `phases.restart_optimizer`."""
        return None

    def before(self, phase):
        """Called before `phase` ("train", "prune", "finetune", "end")."""

    def after(self, phase, **details):
        """Called after `phase` with what it did.

        Args:
            phase: "train" (`history`), "choose" (`auto`: the
                `AutoPruneResult`, or None when the fraction was given),
                "prune" (`freed`, `fraction`), "finetune" (`history`,
                `freed` by a gradual schedule), "end" (`info`).
            **details: as listed.
        """


def run_phases(model, recipe, hooks, *, state=TRAINING, train=True,
               finetuned=False, end=True):
    """Runs the phases of the active task in order: the one task cycle.

    Train, choose the fraction ("auto"), prune, fine-tune, end; each only
    where the recipe and `state` call for it, so that a run resumed after
    any phase goes on from there. `train_task` and the `packnet-tf` runner
    both call it.

    Args:
        model: a `PackNetModel` whose active task is the one to run.
        recipe: the task's `Recipe` (a planned fraction already resolved).
        hooks: a `TaskHooks`.
        state: the task's state now: "training" (not yet pruned), or
            "pruned" (a resumed run: pruned, maybe fine-tuned).
        train: whether the train phase is still to run.
        finetuned: whether fine-tuning already ran (a resumed run).
        end: whether to freeze the task at the end; False recalibrates its
            statistics and leaves it training.

    Returns:
        A `TaskResult`.
    """
    result = TaskResult(task=None, train_history=None)
    gradual = recipe.schedule is not None
    if train:
        hooks.before("train")
        result.train_history = phases.train(
            model, recipe, hooks.fit("train"), hooks.compile("train"))
        hooks.after("train", history=result.train_history)
    if not gradual and recipe.prune_fraction and state == TRAINING:
        hooks.before("prune")
        recipe, result.auto = phases.choose(
            model, recipe, hooks.fit("prune"), hooks.accuracy,
            hooks.compile("prune"), data=hooks.statistics_data)
        hooks.after("choose", auto=result.auto)
        if recipe.prune_fraction:
            result.freed = phases.prune(model, recipe)
            hooks.after("prune", freed=result.freed,
                        fraction=recipe.prune_fraction)
            state, finetuned = PRUNED, False
    if recipe.prunes and not finetuned and (
            state == (TRAINING if gradual else PRUNED)):
        hooks.before("finetune")
        result.finetune_history, freed = phases.finetune(
            model, recipe, hooks.fit("finetune"), hooks.compile("finetune"))
        result.freed = result.freed or freed
        hooks.after("finetune", history=result.finetune_history,
                    freed=freed)
    hooks.before("end")
    if end:
        info = phases.end(model, recipe, hooks.statistics_data)
        hooks.after("end", info=info)
    else:
        phases.recalibrate(model, recipe, hooks.statistics_data)
    result.task = model.active_task
    return result

def _planned_fraction(model, prune_fraction, num_tasks):
    """The task's prune fraction under plan `prune_fraction`, or None."""
    if num_tasks is not None and (
        isinstance(num_tasks, bool) or not isinstance(num_tasks, int)
        or not 1 <= num_tasks <= model.max_tasks
    ):
        raise ValueError(
            f"Expected `num_tasks` to be an int in [1, {model.max_tasks}] "
            "(the model's max_tasks): the number of tasks the plan shares "
            f"the network between. Received: num_tasks={num_tasks!r}"
        )
    if isinstance(prune_fraction, str) and prune_fraction == auto_prune.AUTO:
        return prune_fraction
    if isinstance(prune_fraction, (str, list, tuple)):
        planned = model.max_tasks if num_tasks is None else num_tasks
        return prune_fraction_for(prune_fraction, len(model.tasks), planned)
    if prune_fraction is None:
        return None
    return check_fraction(prune_fraction, label="`fraction`")


def _steps_per_epoch(data, batch_size):
    """Training steps in one epoch over `data`, or None when unknown."""
    if isinstance(data, tuple):
        # Keras' default batch size for arrays.
        return math.ceil(len(data[0]) / (batch_size or DEFAULT_BATCH_SIZE))
    if isinstance(data, tf.data.Dataset):
        cardinality = int(data.cardinality())
        return cardinality if cardinality >= 0 else None
    return None


def _recalibration_data(data, batch_size):
    """`data()`: `data` as batches for `phases.recalibrate`."""
    def batches():
        if isinstance(data, tuple):
            # Shuffled as `fit` shuffles arrays (batches of one class would
            # skew deep layers' statistics); Keras' default batch size.
            return array_batches(data[0], batch_size)
        return data
    return batches


def _accuracy_on(model, data):
    """`accuracy()`: the active task's accuracy on `data` (arrays or a
    dataset of `(x, y)` batches, sparse labels)."""
    def accuracy():
        if isinstance(data, tuple):
            batches = [data[:2]]
        else:
            batches = ((x, y) for x, y, *_ in data)
        correct = total = 0
        for x, y in batches:
            predicted = np.argmax(model.predict(x, verbose=0), axis=-1)
            labels = np.reshape(np.asarray(y), (-1,))
            correct += int(np.sum(predicted == labels))
            total += len(labels)
        return correct / max(total, 1)
    return accuracy


def _fitter(model, data, batch_size, fit_kwargs):
    """`fit(epochs, callbacks)` on `data` for the phase functions."""
    def fit(epochs, extra_callbacks):
        kwargs = dict(fit_kwargs)
        if extra_callbacks:
            kwargs["callbacks"] = list(kwargs["callbacks"] or []) + list(
                extra_callbacks)
        if isinstance(data, tuple):
            x, y = data
            return model.fit(x, y, epochs=epochs, batch_size=batch_size,
                             **kwargs)
        # A dataset is shuffled (or not) by its own pipeline.
        return model.fit(data, epochs=epochs, shuffle=False, **kwargs)
    return fit


def train_task(
    model,
    name,
    train_data,
    *,
    num_classes=None,
    head=None,
    epochs=DEFAULTS["epochs"],
    prune_fraction=DEFAULTS["prune_fraction"],
    finetune_epochs=DEFAULTS["finetune_epochs"],
    optimizer=DEFAULTS["optimizer"],
    learning_rate=DEFAULTS["learning_rate"],
    finetune_learning_rate=DEFAULTS["finetune_learning_rate"],
    loss=DEFAULTS["loss"],
    metrics=DEFAULTS["metrics"],
    batch_size=None,
    validation_data=None,
    callbacks=None,
    verbose="auto",
    end=True,
    num_tasks=None,
    gradual=DEFAULTS["gradual"],
    input_contract=None,
    auto_tolerance=DEFAULTS["auto_tolerance"],
    auto_candidates=DEFAULTS["auto_candidates"],
    auto_recovery_epochs=DEFAULTS["auto_recovery_epochs"],
    recalibrate=DEFAULTS["recalibrate"],
    recalibrate_steps=DEFAULTS["recalibrate_steps"],
    prune_keep=DEFAULTS["prune_keep"],
):
    """Adds task `name`, trains it, prunes it, fine-tunes it, and freezes it.

    Each phase compiles the model with a fresh optimizer (see
    `fresh_optimizer`). With `prune_fraction` None or 0 the task is not pruned
    and not fine-tuned (the paper's choice for the last task). With
    `gradual`, pruning follows a tfmot schedule during fine-tuning instead
    of one shot before it.

    Args:
        model: a `PackNetModel`.
        name: the new task's name.
        train_data: a `tf.data.Dataset` of `(x, y)` batches, or an `(x, y)`
            tuple of arrays.
        num_classes: the default head's width (see `PackNetModel.add_task`).
        head: a head layer instead of the default one.
        epochs: training epochs before pruning.
        prune_fraction: share of the task's weights to free: a number in
            [0, 1), a list with one per planned task, `"equal"` (every
            planned task gets the same share; see `packnet_tf.core.planning`),
            or `"auto"`: the largest of `auto_candidates` whose accuracy on
            `validation_data`, after `auto_recovery_epochs` of recovery,
            stays within `auto_tolerance` of the unpruned accuracy (see
            `packnet_tf.training.auto_prune`; `TaskResult.auto` says what was
            tried).
            A list or `"equal"` picks this task's entry by its position
            (`len(model.tasks)`) among `num_tasks` planned tasks.
        finetune_epochs: epochs after pruning.
        optimizer: name or `keras.optimizers.Optimizer` (copied per phase).
        learning_rate: learning rate of training (None keeps the
            optimizer's).
        finetune_learning_rate: learning rate of fine-tuning (default: a
            tenth of `learning_rate`, as in the paper).
        loss: the loss; default sparse categorical cross-entropy on logits.
        metrics: compiled metrics.
        batch_size: batch size for array data.
        validation_data: passed to `fit`.
        callbacks: passed to `fit`.
        verbose: passed to `fit`.
        end: whether to freeze the task at the end.
        num_tasks: planned number of tasks for a list or `"equal"`
            `prune_fraction` (default: `model.max_tasks`).
        gradual: None to prune in one shot after training; otherwise the
            task is pruned gradually while fine-tuning, by a
            `GradualPruning` callback on a tfmot schedule: a dict of
            `PolynomialDecay` timings (`end_step` required; `begin_step`,
            `frequency`, `power`, `initial_sparsity`), which prunes to the
            (planned) `prune_fraction`; or a tfmot `PruningSchedule` or its
            config dict, with `prune_fraction=None` (or equal to the
            schedule's final sparsity).
        input_contract: how raw images become the task's inputs and its
            class names (see `PackNetModel.add_task`); the exporters'
            `_pixels` and `_images` signatures follow it.
        auto_tolerance: with `prune_fraction="auto"`, the validation
            accuracy the task may lose (default 0.005).
        auto_candidates: with "auto", the fractions to try.
        auto_recovery_epochs: with "auto", recovery epochs per trial.
        recalibrate: whether the task's batch-norm statistics are
            recomputed over `train_data` (as given: its batches, and any
            augmentation its pipeline applies) before the task is frozen
            and before each "auto" trial measures (see
            `PackNetModel.recalibrate_batch_norm`). False freezes them as
            training left them. Without batch norm nothing is read.
        recalibrate_steps: None for one pass over `train_data`, or at most
            this many batches.
        prune_keep: kernels the one-shot prune leaves whole (`fnmatch`
            patterns of `"layer/kernel"` keys, e.g.
            `["*/depthwise_kernel"]`; see `PackNetModel.prune`); `[]`
            prunes every kernel. None (the default) keeps the network's
            depthwise kernels whole (`planning.DEFAULT_PRUNE_KEEP`); a
            network without them is pruned in every kernel.

    Returns:
        A `TaskResult`.

    Raises:
        ValueError: on a bad `prune_fraction`, plan, schedule or epochs, a
            schedule longer than fine-tuning (when the step count is
            known), or "auto" without `validation_data`, before anything
            is added; every error `add_task`,
            `fit` and `prune` raise (a full network is a `CapacityError`
            before training starts).

    Example:

    >>> result = train_task(model, "digits_0_1", (x, y), num_classes=2,
    ...                     epochs=3, prune_fraction=0.5, finetune_epochs=1)
    """
    recipe = phases.Recipe(
        epochs=epochs,
        prune_fraction=_planned_fraction(model, prune_fraction, num_tasks),
        finetune_epochs=finetune_epochs,
        optimizer=optimizer,
        learning_rate=learning_rate,
        finetune_learning_rate=finetune_learning_rate,
        loss=loss,
        metrics=metrics,
        gradual=gradual,
        auto_tolerance=auto_tolerance,
        auto_candidates=auto_candidates,
        auto_recovery_epochs=auto_recovery_epochs,
        recalibrate=recalibrate,
        recalibrate_steps=recalibrate_steps,
        prune_keep=prune_keep,
    )
    if recipe.auto and validation_data is None:
        raise ValueError(
            "prune_fraction='auto' chooses the fraction by validation "
            "accuracy: pass `validation_data` (held out from training, not "
            "the test set), or give a number.")
    recipe.check_fits(_steps_per_epoch(train_data, batch_size))
    fit = _fitter(model, train_data, batch_size, {
        "validation_data": validation_data,
        "callbacks": callbacks,
        "verbose": verbose,
    })
    model.add_task(name, num_classes=num_classes, head=head,
                   input_contract=input_contract)
    hooks = TaskHooks(fit, _accuracy_on(model, validation_data),
                      _recalibration_data(train_data, batch_size))
    return run_phases(model, recipe, hooks, end=end)
