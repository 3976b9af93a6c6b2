"""`train_task`: the whole PackNet cycle for one task in one call."""

import dataclasses
import inspect
import math

import keras
import tensorflow as tf

from packnet_tf import gradual as gradual_pruning
from packnet_tf.model import validate_fraction
from packnet_tf.planning import prune_fraction_for


@dataclasses.dataclass
class TaskResult:
    """What `train_task` did.

    Attributes:
        task: the task's `TaskInfo` when the call returned.
        train_history: the `History` of the training phase.
        finetune_history: the `History` of the fine-tuning phase, or None.
        freed: weights freed per kernel by pruning, one-shot or gradual
            (empty if not pruned).
    """

    task: object
    train_history: object
    finetune_history: object = None
    freed: dict = dataclasses.field(default_factory=dict)


def fresh_optimizer(optimizer, learning_rate=None):
    """A new, unbuilt optimizer like `optimizer`.

    PackNet starts every phase with fresh optimizer state, so that no moment
    or step count of one phase leaks into the next.

    Args:
        optimizer: a name (`"adam"`) or a Keras optimizer to copy (its
            configuration, not its state).
        learning_rate: overrides the learning rate when given.

    Returns:
        A `keras.optimizers.Optimizer`.

    Raises:
        TypeError: for anything else.
    """
    if isinstance(optimizer, str):
        optimizer = keras.optimizers.get(optimizer)
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            "Expected `optimizer` to be a name like 'adam' or a "
            f"keras.optimizers.Optimizer. Received: {type(optimizer).__name__}"
        )
    config = optimizer.get_config()
    if learning_rate is not None:
        config["learning_rate"] = float(learning_rate)
    return optimizer.__class__.from_config(config)


def _compile(model, make_optimizer, optimizer, learning_rate, loss, metrics):
    # Keras optimizers bind to the strategy they are created under.
    with model.distribute_strategy.scope():
        model.compile(
            optimizer=make_optimizer(optimizer, learning_rate),
            loss=loss,
            metrics=list(metrics or []),
        )


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
    if isinstance(prune_fraction, (str, list, tuple)):
        planned = model.max_tasks if num_tasks is None else num_tasks
        return prune_fraction_for(prune_fraction, len(model.tasks), planned)
    if prune_fraction is None:
        return None
    return validate_fraction(prune_fraction)


#: Keys a dict `gradual` may hold: `gradual_pruning.polynomial_decay`'s.
_DECAY_KEYS = tuple(
    inspect.signature(gradual_pruning.polynomial_decay).parameters)[1:]


def _schedule(gradual, prune_fraction):
    """The tfmot schedule `gradual` asks for, or None for one-shot pruning."""
    if gradual is None:
        return None
    if isinstance(gradual, dict) and "class_name" not in gradual:
        unknown = sorted(set(gradual) - set(_DECAY_KEYS))
        if unknown or "end_step" not in gradual:
            raise ValueError(
                "Expected `gradual` as a dict of PolynomialDecay timings "
                f"with keys from {_DECAY_KEYS} (end_step required; the "
                "final sparsity is the prune fraction), a tfmot "
                "PruningSchedule, or its config. Received: "
                f"{gradual!r}"
            )
        if not prune_fraction:
            return None  # nothing to prune (e.g. the last planned task)
        return gradual_pruning.polynomial_decay(prune_fraction, **gradual)
    schedule = gradual_pruning.schedule_from_config(gradual)
    final = gradual_pruning.final_sparsity(schedule)
    if prune_fraction is not None and prune_fraction != final:
        raise ValueError(
            f"The schedule ends at sparsity {final} but "
            f"prune_fraction={prune_fraction}. With a schedule pass "
            "prune_fraction=None (the schedule decides), or a dict of "
            "timings as `gradual` to prune to the planned fraction."
        )
    return schedule


def _steps_per_epoch(data, batch_size):
    """Training steps in one epoch over `data`, or None when unknown."""
    if isinstance(data, tuple):
        # Keras' default batch size for arrays.
        return math.ceil(len(data[0]) / (batch_size or 32))
    if isinstance(data, tf.data.Dataset):
        cardinality = int(data.cardinality())
        return cardinality if cardinality >= 0 else None
    return None


def _check_schedule_fits(schedule, data, batch_size, finetune_epochs):
    if not finetune_epochs:
        raise ValueError(
            "Gradual pruning happens while fine-tuning: expected "
            "`finetune_epochs` >= 1 with `gradual`. Received: "
            f"finetune_epochs={finetune_epochs}"
        )
    steps = _steps_per_epoch(data, batch_size)
    last = gradual_pruning.last_step(schedule)
    if steps is not None and last is not None and (
            last > steps * finetune_epochs):
        raise ValueError(
            f"The pruning schedule reaches its final sparsity at step "
            f"{last}, but fine-tuning takes {steps * finetune_epochs} steps "
            f"({finetune_epochs} epochs of {steps}). End the schedule "
            "earlier or fine-tune longer."
        )


def _fit(model, data, epochs, batch_size, fit_kwargs):
    if isinstance(data, tuple):
        x, y = data
        return model.fit(x, y, epochs=epochs, batch_size=batch_size,
                         **fit_kwargs)
    # A dataset is shuffled (or not) by its own pipeline.
    return model.fit(data, epochs=epochs, shuffle=False, **fit_kwargs)


def train_task(
    model,
    name,
    train_data,
    *,
    num_classes=None,
    head=None,
    epochs=1,
    prune_fraction=0.5,
    finetune_epochs=1,
    optimizer="adam",
    learning_rate=1e-3,
    finetune_learning_rate=None,
    loss=None,
    metrics=("accuracy",),
    batch_size=None,
    validation_data=None,
    callbacks=None,
    verbose="auto",
    end=True,
    num_tasks=None,
    gradual=None,
    input_contract=None,
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
            [0, 1), a list with one per planned task, or `"equal"` (every
            planned task gets the same share; see `packnet_tf.planning`).
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

    Returns:
        A `TaskResult`.

    Raises:
        ValueError: on a bad `prune_fraction`, plan, schedule or epochs, or
            a schedule longer than fine-tuning (when the step count is
            known), before anything is added; every error `add_task`,
            `fit` and `prune` raise (a full network is a `CapacityError`
            before training starts).

    Example:

    >>> result = train_task(model, "digits_0_1", (x, y), num_classes=2,
    ...                     epochs=3, prune_fraction=0.5, finetune_epochs=1)
    """
    prune_fraction = _planned_fraction(model, prune_fraction, num_tasks)
    for key, value in (("epochs", epochs), ("finetune_epochs",
                                            finetune_epochs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(
                f"Expected `{key}` to be an int >= 0. Received: {key}={value!r}"
            )
    schedule = _schedule(gradual, prune_fraction)
    if schedule is not None:
        _check_schedule_fits(schedule, train_data, batch_size,
                             finetune_epochs)
    fresh_optimizer(optimizer)  # fail on a bad optimizer before add_task
    if loss is None:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if finetune_learning_rate is None and learning_rate is not None:
        finetune_learning_rate = learning_rate / 10.0
    fit_kwargs = {
        "validation_data": validation_data,
        "callbacks": callbacks,
        "verbose": verbose,
    }
    model.add_task(name, num_classes=num_classes, head=head,
                   input_contract=input_contract)
    _compile(model, fresh_optimizer, optimizer, learning_rate, loss, metrics)
    result = TaskResult(
        task=None,
        train_history=_fit(model, train_data, epochs, batch_size, fit_kwargs),
    )
    if schedule is not None:
        pruning = gradual_pruning.GradualPruning(schedule)
        _compile(model, fresh_optimizer, optimizer, finetune_learning_rate,
                 loss, metrics)
        result.finetune_history = _fit(
            model, train_data, finetune_epochs, batch_size,
            dict(fit_kwargs, callbacks=list(callbacks or []) + [pruning]),
        )
        owned = model.owned_counts()
        result.freed = {
            key: start - owned[key]
            for key, start in pruning.start_counts.items()
        }
    elif prune_fraction:
        result.freed = model.prune(prune_fraction)
        if finetune_epochs:
            _compile(model, fresh_optimizer, optimizer,
                     finetune_learning_rate, loss, metrics)
            result.finetune_history = _fit(
                model, train_data, finetune_epochs, batch_size, fit_kwargs
            )
    if end:
        model.end_task()
    result.task = model.active_task
    return result
