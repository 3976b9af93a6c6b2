"""The phases of one task: train, prune, fine-tune (maybe gradual), end.

A `Recipe` (`packnet_tf.training.recipe`) holds how one task is trained,
checked once: epochs, prune fraction, optimizer and rates, loss, metrics
and an optional gradual schedule. The phase functions apply it to the active task of a
`PackNetModel`. They are the one statement of PackNet's rules for a task:

- every training phase starts with a fresh optimizer (no moment or step
  count leaks from one phase into the next);
- fine-tuning runs at a tenth of the training rate unless told otherwise
  (the paper's choice);
- the default loss is sparse categorical cross-entropy on logits;
- a task with prune fraction 0 (or None) is neither pruned nor fine-tuned;
- with a gradual schedule there is no one-shot prune: the task is pruned
  along the schedule while it fine-tunes;
- before a task is frozen, its batch-norm statistics are recomputed over
  its training data as population statistics of the final network
  (`recalibrate`; `packnet_tf.core.recalibration`), and before each accuracy
  trial of `prune_fraction="auto"`, which measures in inference mode.

`packnet_tf.train_task` runs them in one call; the `packnet-tf` runner runs
them one by one, saving the model after each. How a phase fits is the
caller's: each takes `fit(epochs, callbacks)`, and optionally
`compile(learning_rate)` to start the phase's optimizer another way. By
default a phase after the first of a task keeps the compiled train step and
resets the optimizer's variables (`restart_optimizer`).
"""

import dataclasses
import weakref

import keras

from packnet_tf.compat.keras_internals import compile_state
from packnet_tf.core.planning import default_keep
from packnet_tf.core.recalibration import batch_norm_layers
from packnet_tf.inference import task_inference
from packnet_tf.training import auto_prune
from packnet_tf.training import gradual as gradual_pruning
from packnet_tf.training.recipe import Recipe, fresh_optimizer

#: The phases of a task, in order. "end" recalibrates batch-norm
#: statistics (`recalibrate`), then freezes the task.
PHASES = ("train", "prune", "finetune", "end")

#: model -> (task id, compile config) of its last `compile_fresh`.
_PHASE_COMPILES = weakref.WeakKeyDictionary()


def compile_fresh(model, recipe, learning_rate):
    """Compiles `model` for a phase, with a fresh optimizer.

    Args:
        model: a `PackNetModel`.
        recipe: the task's `Recipe`.
        learning_rate: the phase's rate.
    """
    # Keras optimizers bind to the strategy they are created under.
    with model.distribute_strategy.scope():
        model.compile(
            optimizer=fresh_optimizer(recipe.optimizer, learning_rate),
            loss=recipe.loss_function(),
            metrics=list(recipe.metrics),
        )
    # What `restart_optimizer` may reuse: this compile, for this task.
    _PHASE_COMPILES[model] = (model._active_id(), compile_state(model))


def restart_optimizer(model, recipe, learning_rate):
    """Starts a phase with fresh optimizer state, keeping the traced step.

    When `model` was last compiled by `compile_fresh` for its active task
    and has not been compiled since, the compiled optimizer is kept and each
    of its variables is set to that of a new optimizer built the same way
    (step 0, empty slots, the phase's learning rate): the state a new
    `compile()` gives, without retracing and recompiling the train step
    (about 1.5 s per phase on the split-cifar10-5 CNN). Otherwise (another
    task, a user's `compile`, an optimizer whose variables differ, such as
    a learning-rate schedule replaced by a constant), it compiles fresh.

    Args:
        model: a `PackNetModel`.
        recipe: the task's `Recipe`.
        learning_rate: the phase's rate.
    """
    current = getattr(model, "optimizer", None)
    task_id, compiled = _PHASE_COMPILES.get(model, (None, None))
    if (current is None or not current.built or compiled is None
            or compiled is not compile_state(model)
            or task_id != model._active_id()):
        compile_fresh(model, recipe, learning_rate)
        return
    with model.distribute_strategy.scope():
        fresh = fresh_optimizer(current, learning_rate)
        fresh.build(model.trainable_variables)
    pairs = list(zip(current.variables, fresh.variables))
    if len(current.variables) != len(fresh.variables) or any(
            tuple(a.shape) != tuple(b.shape) or a.dtype != b.dtype
            for a, b in pairs):
        compile_fresh(model, recipe, learning_rate)
        return
    for old, new in pairs:
        old.assign(new)


def _start(model, recipe, learning_rate, compile):
    if compile is None:
        restart_optimizer(model, recipe, learning_rate)
    else:
        compile(learning_rate)


def train(model, recipe, fit, compile=None):
    """The train phase: `recipe.epochs` epochs on every free weight.

    Args:
        model: a `PackNetModel` whose active task is training.
        recipe: the task's `Recipe`.
        fit: `fit(epochs, callbacks)` -> a Keras `History`; fits the model
            on the task's data.
        compile: `compile(learning_rate)` to start the phase's optimizer
            instead of `compile_fresh`.

    Returns:
        The `History`, or None for 0 epochs (nothing is compiled then).
    """
    if not recipe.epochs:
        return None
    _start(model, recipe, recipe.learning_rate, compile)
    return fit(recipe.epochs, [])


def recalibrate(model, recipe, data):
    """Recomputes the active task's batch-norm statistics (if the recipe
    says so and the network has batch norm).

    Args:
        model: a `PackNetModel` whose active task is training or pruned.
        recipe: the task's `Recipe`.
        data: the task's training data (see
            `PackNetModel.recalibrate_batch_norm`), or a function that
            returns it (called only when there is something to
            recalibrate).

    Returns:
        The number of examples read (0: nothing to do).
    """
    if not recipe.recalibrate or not batch_norm_layers(model):
        return 0
    if callable(data):
        data = data()
    return model.recalibrate_batch_norm(data, steps=recipe.recalibrate_steps)


def choose(model, recipe, fit, accuracy, compile=None, data=None):
    """Resolves `prune_fraction="auto"` by `auto_prune.choose_fraction`.

    Args:
        model: a `PackNetModel` whose active task has trained.
        recipe: the task's `Recipe`.
        fit: as in `train`; each trial recovers for
            `recipe.auto_recovery_epochs` at the fine-tuning rate.
        accuracy: `accuracy()` -> the active task's validation accuracy.
        compile: as in `train`.
        data: the training data to recalibrate batch-norm statistics on
            before each measurement (as in `recalibrate`); None measures
            with the statistics training left.

    Returns:
        `(recipe, result)`: the recipe with the chosen fraction and the
        `AutoPruneResult`; `(recipe, None)` unchanged when not "auto".
    """
    if not recipe.auto:
        return recipe, None

    def recover():
        _start(model, recipe, recipe.finetune_rate, compile)
        fit(recipe.auto_recovery_epochs, [])

    def measured():
        # Inference mode: the statistics must describe the trial's network.
        if data is not None:
            recalibrate(model, recipe, data)
        return accuracy()

    result = auto_prune.choose_fraction(
        model, measured, recover, recipe.auto_tolerance,
        recipe.auto_candidates, keep=kept_patterns(model, recipe))
    return dataclasses.replace(recipe, prune_fraction=result.fraction), result


def kept_patterns(model, recipe):
    """The kernels a one-shot prune of `recipe` leaves whole in `model`.

    Args:
        model: a `PackNetModel`.
        recipe: the task's `Recipe`.

    Returns:
        The recipe's `prune_keep`, or for None the default patterns that
        name some kernel of the model (`planning.default_keep`).
    """
    if recipe.prune_keep is not None:
        return recipe.prune_keep
    return default_keep(model.kernel_keys())


def prune(model, recipe):
    """The one-shot prune phase.

    Args:
        model: a `PackNetModel` whose active task is training.
        recipe: the task's `Recipe` (with "auto" resolved by `choose`).

    Returns:
        `{"layer/kernel": weights freed}`; empty when the recipe prunes
        gradually (see `finetune`) or not at all.

    Raises:
        ValueError: if the fraction is still "auto".
    """
    if recipe.auto:
        raise ValueError("prune_fraction='auto' must be resolved by "
                         "`phases.choose(...)` before the prune phase.")
    if recipe.schedule is not None or not recipe.prune_fraction:
        return {}
    return model.prune(recipe.prune_fraction,
                       keep=kept_patterns(model, recipe))


def finetune(model, recipe, fit, compile=None):
    """The fine-tune phase, pruning along the schedule when gradual.

    Args:
        model: a `PackNetModel` whose active task is training or pruned.
        recipe: the task's `Recipe`.
        fit: `fit(epochs, callbacks)` -> a Keras `History`; `callbacks`
            holds the `GradualPruning` callback when gradual.
        compile: as in `train`.

    Returns:
        `(history, freed)`: the `History` (None when the task does not
        fine-tune: not pruned, or 0 epochs) and, when gradual, the weights
        the schedule freed per kernel (else an empty dict).
    """
    if not recipe.prunes or not recipe.finetune_epochs:
        return None, {}
    _start(model, recipe, recipe.finetune_rate, compile)
    if recipe.schedule is None:
        return fit(recipe.finetune_epochs, []), {}
    pruning = gradual_pruning.GradualPruning(recipe.schedule)
    history = fit(recipe.finetune_epochs, [pruning])
    owned = model.owned_counts()
    return history, {key: start - owned[key]
                     for key, start in pruning.start_counts.items()}


def end(model, recipe=None, data=None):
    """The end phase: recalibrates batch norm, then freezes the active task.

    With `data`, the frozen task's own score quantiles are recorded too
    (`task_inference.calibrate`, for `infer_task(calibrated=True)`).

    Args:
        model: a `PackNetModel`.
        recipe: the task's `Recipe` (None: the defaults).
        data: the task's training data, or a function that returns it, for
            `recalibrate` and calibration; None: statistics must already be
            fresh (see `PackNetModel.end_task`), and no score quantiles.

    Returns:
        The task's `TaskInfo`.
    """
    recipe = recipe or Recipe()
    if data is not None:
        recalibrate(model, recipe, data)
    info = model.end_task(recalibrate=recipe.recalibrate)
    if data is not None and not info.headless:
        # What infer_task(calibrated=True) reads: the task's own scores.
        info = task_inference.calibrate(
            model, info.name, data() if callable(data) else data)
    return info
