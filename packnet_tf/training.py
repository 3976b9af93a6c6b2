"""`train_task`: the whole PackNet cycle for one task in one call."""

import dataclasses

import keras

from packnet_tf.model import validate_fraction


@dataclasses.dataclass
class TaskResult:
    """What `train_task` did.

    Attributes:
        task: the task's `TaskInfo` when the call returned.
        train_history: the `History` of the training phase.
        finetune_history: the `History` of the fine-tuning phase, or None.
        freed: weights freed per kernel by pruning (empty if not pruned).
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
):
    """Adds task `name`, trains it, prunes it, fine-tunes it, and freezes it.

    Each phase compiles the model with a fresh optimizer (see
    `fresh_optimizer`). With `prune_fraction` None or 0 the task is not pruned
    and not fine-tuned (the paper's choice for the last task).

    Args:
        model: a `PackNetModel`.
        name: the new task's name.
        train_data: a `tf.data.Dataset` of `(x, y)` batches, or an `(x, y)`
            tuple of arrays.
        num_classes: the default head's width (see `PackNetModel.add_task`).
        head: a head layer instead of the default one.
        epochs: training epochs before pruning.
        prune_fraction: share of the task's weights to free, in [0, 1).
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

    Returns:
        A `TaskResult`.

    Raises:
        ValueError: on a bad `prune_fraction` or epochs, before anything is
            added; every error `add_task`, `fit` and `prune` raise.

    Example:

    >>> result = train_task(model, "digits_0_1", (x, y), num_classes=2,
    ...                     epochs=3, prune_fraction=0.5, finetune_epochs=1)
    """
    if prune_fraction is not None:
        prune_fraction = validate_fraction(prune_fraction)
    for key, value in (("epochs", epochs), ("finetune_epochs",
                                            finetune_epochs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(
                f"Expected `{key}` to be an int >= 0. Received: {key}={value!r}"
            )
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
    model.add_task(name, num_classes=num_classes, head=head)
    _compile(model, fresh_optimizer, optimizer, learning_rate, loss, metrics)
    result = TaskResult(
        task=None,
        train_history=_fit(model, train_data, epochs, batch_size, fit_kwargs),
    )
    if prune_fraction:
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
