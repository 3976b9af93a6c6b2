"""Accuracy-targeted pruning: prune a task as far as its accuracy allows.

With `prune_fraction="auto"` a task is not pruned by a fixed share: after
training, each candidate fraction is tried from the largest down - prune,
recover briefly, measure the task's validation accuracy, undo - and the
first (largest) whose accuracy stays within `tolerance` of the unpruned
accuracy is kept. Early tasks that need few weights thus leave the most room
to later ones (CPG calls this an accuracy goal). No candidate within the
tolerance means no pruning (fraction 0).

Every trial is undone exactly (all the model's weights, owners and the
task's record are put back), so the search changes nothing but the chosen
fraction; with the same seed it takes the same steps and picks the same
fraction. It needs validation data: tuning the fraction on test data would
report an optimistic test accuracy.
"""

import dataclasses
import numbers

#: Fractions tried, largest first (`train_task(auto_candidates=...)`).
DEFAULT_CANDIDATES = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
#: The accuracy a task may lose to pruning, after recovery (0.5 points).
DEFAULT_TOLERANCE = 0.005
#: The value of `prune_fraction` that asks for the search.
AUTO = "auto"


@dataclasses.dataclass(frozen=True)
class AutoPruneResult:
    """What the search found.

    Attributes:
        fraction: the chosen prune fraction (0.0 when no candidate was
            within the tolerance).
        unpruned_accuracy: the task's validation accuracy before pruning.
        tolerance: the accuracy it was allowed to lose.
        trials: `((fraction, accuracy after recovery), ...)` in the order
            tried.
    """

    fraction: float
    unpruned_accuracy: float
    tolerance: float
    trials: tuple


def check_tolerance(value):
    """Checks an accuracy tolerance: a number in [0, 1).

    Returns:
        `value` as a float.

    Raises:
        ValueError: otherwise.
    """
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not 0.0 <= float(value) < 1.0):
        raise ValueError(
            "Expected `auto_tolerance` to be a number in [0, 1): the "
            "validation accuracy a task may lose to pruning (0.005 is half "
            f"a point). Received: auto_tolerance={value!r}"
        )
    return float(value)


def check_candidates(values):
    """Checks candidate fractions: a non-empty list of numbers in (0, 1).

    Returns:
        The candidates as a tuple of floats, largest first, without
        repeats.

    Raises:
        ValueError: otherwise.
    """
    if not isinstance(values, (list, tuple)) or not values or not all(
            not isinstance(v, bool) and isinstance(v, numbers.Real)
            and 0.0 < float(v) < 1.0 for v in values):
        raise ValueError(
            "Expected `auto_candidates` to be a non-empty list of prune "
            f"fractions in (0, 1), e.g. {list(DEFAULT_CANDIDATES)}. "
            f"Received: {values!r}"
        )
    return tuple(sorted({float(v) for v in values}, reverse=True))


def choose_fraction(model, accuracy, recover, tolerance=DEFAULT_TOLERANCE,
                    candidates=DEFAULT_CANDIDATES, keep=None):
    """Finds the largest candidate fraction within `tolerance`.

    Args:
        model: a `PackNetModel` whose active task has trained and is not
            pruned yet.
        accuracy: `accuracy()` -> the active task's validation accuracy now.
        recover: `recover()` trains the active task briefly after a trial
            prune (e.g. one epoch at the fine-tuning rate).
        tolerance: accuracy the task may lose (see `check_tolerance`).
        candidates: fractions to try (see `check_candidates`).
        keep: kernels each trial leaves whole (`PackNetModel.prune`'s
            `keep`), as the prune of the chosen fraction will.

    Returns:
        An `AutoPruneResult`. The model is as it was before the call.

    Raises:
        TaskStateError: if the active task cannot be pruned.
        ValueError: on a bad tolerance or candidates.
    """
    tolerance = check_tolerance(tolerance)
    candidates = check_candidates(candidates)
    model._task_for("prune")
    unpruned = float(accuracy())
    trials = []
    chosen = 0.0
    for fraction in candidates:
        with model._undoable():
            model.prune(fraction, keep=keep)
            recover()
            trial = float(accuracy())
        trials.append((fraction, trial))
        if unpruned - trial <= tolerance:
            chosen = fraction
            break
    return AutoPruneResult(chosen, unpruned, tolerance, tuple(trials))
