"""Capacity planning: how much of its weights each planned task prunes.

PackNet decides the network's split between tasks by the prune fraction of
each task: task k keeps `1 - fraction` of what it was given and frees the
rest for the tasks after it. A plan (`spec`) is one of

- a number in [0, 1): every task prunes that fraction;
- a list or tuple with one number in [0, 1) per planned task;
- `"equal"`: each of the planned tasks ends with the same share of every
  layer. With `tasks_left` tasks still to come after task k, task k prunes
  `tasks_left / (tasks_left + 1)` of its weights (the last task prunes
  nothing), which leaves every task 1/num_tasks of each packed kernel,
  within one weight (exact counts round per kernel).

These are pure functions of the plan; `train_task` and the command-line
tool call `prune_fraction_for`. Where the freed weights start for the next
task is planned here too (`FREE_INITS`; `packnet_tf.core.free_init` does
it). The module imports no TensorFlow: the command's config checks read it.
"""

import fnmatch
import numbers

#: The plan that gives every planned task the same share of the network.
EQUAL = "equal"


def _check_count(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"Expected `{name}` to be an int >= {minimum}. "
            f"Received: {name}={value!r}"
        )
    if value < minimum:
        raise ValueError(
            f"Expected `{name}` to be an int >= {minimum}. "
            f"Received: {name}={value!r}"
        )
    return int(value)


def check_fraction(value, where="", label="a prune fraction"):
    """Checks one prune fraction: a number in [0, 1).

    The one check of a fraction in the package (`PackNetModel.prune`,
    plans, `train_task` and the run config use it).

    Args:
        value: the fraction.
        where: where it was given, for the message (e.g. "for every
            task").
        label: what to call it in the message.

    Returns:
        `value` as a float.

    Raises:
        ValueError: if it is not a real number in [0, 1) (bools are not).
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0.0 <= float(value) < 1.0
    ):
        where = f" {where}" if where else ""
        raise ValueError(
            f"Expected {label} in [0, 1){where}: the share of a task's "
            f"weights to free. Received: {value!r}"
        )
    return float(value)


def validate_spec(spec, num_tasks=None):
    """Checks a whole plan for `num_tasks` tasks, before any task starts.

    Args:
        spec: a number in [0, 1), a list/tuple of `num_tasks` such numbers,
            or `"equal"`.
        num_tasks: the number of planned tasks (an int >= 1), or None to
            check the values only (a list of any length).

    Returns:
        `spec` normalized: a float, a tuple of floats, or `"equal"`.

    Raises:
        ValueError: on anything else, saying what was expected.
    """
    if num_tasks is not None:
        num_tasks = _check_count(num_tasks, "num_tasks", 1)
    if isinstance(spec, str):
        if spec != EQUAL:
            raise ValueError(
                "Expected `prune_fraction` to be a number in [0, 1), a list "
                f"with one such number per task, or {EQUAL!r}. "
                f"Received: {spec!r}"
            )
        return EQUAL
    if isinstance(spec, (list, tuple)):
        if num_tasks is not None and len(spec) != num_tasks:
            raise ValueError(
                f"Expected one prune fraction per planned task "
                f"(num_tasks={num_tasks}). Received {len(spec)} fractions: "
                f"{list(spec)!r}. Give {num_tasks} fractions, or plan "
                f"num_tasks={len(spec)} tasks."
            )
        return tuple(
            check_fraction(value, f"at index {index} of the list")
            for index, value in enumerate(spec)
        )
    if isinstance(spec, bool) or not isinstance(spec, numbers.Real):
        raise ValueError(
            "Expected `prune_fraction` to be a number in [0, 1), a list "
            f"with one such number per task, or {EQUAL!r}. "
            f"Received: {spec!r} of type {type(spec).__name__}"
        )
    return check_fraction(spec, "for every task")


def equal_share_fraction(task_index, num_tasks):
    """The fraction task `task_index` prunes to leave equal shares.

    Args:
        task_index: 0-based index of the task among the planned ones.
        num_tasks: the number of planned tasks.

    Returns:
        `tasks_left / (tasks_left + 1)` with
        `tasks_left = num_tasks - task_index - 1`; 0.0 for the last task.
    """
    tasks_left = num_tasks - task_index - 1
    return tasks_left / (tasks_left + 1)


def prune_fraction_for(spec, task_index, num_tasks):
    """The prune fraction of one task under plan `spec`.

    Args:
        spec: a number in [0, 1) (every task prunes it), a list/tuple with
            one number in [0, 1) per planned task, or `"equal"` (every
            planned task ends with the same share of each layer; the last
            task prunes 0).
        task_index: 0-based index of the task: 0 for the first task.
        num_tasks: the number of planned tasks (an int >= 1).

    Returns:
        A float in [0, 1).

    Raises:
        ValueError: on a bad plan, a list of the wrong length, or a
            `task_index` outside [0, num_tasks).

    Example:

    >>> [prune_fraction_for("equal", i, 4) for i in range(4)]
    [0.75, 0.6666666666666666, 0.5, 0.0]
    """
    spec = validate_spec(spec, num_tasks)
    task_index = _check_count(task_index, "task_index", 0)
    if task_index >= num_tasks:
        raise ValueError(
            f"Task index {task_index} (0-based) is past the plan of "
            f"num_tasks={num_tasks} tasks. Plan more tasks (a larger "
            "`num_tasks`, or a model with a larger `max_tasks`)."
        )
    if spec == EQUAL:
        return equal_share_fraction(task_index, num_tasks)
    if isinstance(spec, tuple):
        return spec[task_index]
    return spec


#: The kernels a task's one-shot prune by a number leaves whole when its
#: recipe says nothing (`prune_keep=None` in `train_task` and run configs):
#: depthwise kernels, 9 weights per channel and about 5% of a MobileNet's
#: weights, where pruning costs most (README, "Batch norm after pruning":
#: 12 points on an ImageNet MobileNet learning Flowers-102). Networks
#: without them are pruned in every kernel. `PackNetModel.prune` itself
#: keeps only what its `keep` names.
DEFAULT_PRUNE_KEEP = ("*/depthwise_kernel",)


def default_keep(keys):
    """The patterns of `DEFAULT_PRUNE_KEEP` that name some of `keys`.

    Args:
        keys: every kernel key of the model (`"layer/kernel"`).

    Returns:
        A tuple of patterns (empty for a network without such kernels).
    """
    return tuple(p for p in DEFAULT_PRUNE_KEEP if fnmatch.filter(keys, p))


#: What a `keep` / `prune_keep` argument must be.
KEEP_EXPECTED = ("a list of patterns of 'layer/kernel' keys, such as "
                 "['*/depthwise_kernel']")


def check_keep_patterns(keep, name="keep", error=TypeError):
    """Checks a list of `fnmatch` patterns of `"layer/kernel"` keys.

    Args:
        keep: the patterns.
        name: the argument's name, for the message.
        error: the exception class to raise.

    Returns:
        `keep` as a tuple.

    Raises:
        `error`: if `keep` is a string or holds anything but strings.
    """
    if isinstance(keep, str) or not isinstance(keep, (list, tuple)) or not all(
            isinstance(p, str) for p in keep):
        raise error(f"Expected `{name}` to be {KEEP_EXPECTED}. "
                    f"Received: {keep!r}")
    return tuple(keep)


#: The starts `PackNetModel(free_init=...)` accepts.
FREE_INITS = ("zero", "previous", "initializer")
#: The default start (`packnet_tf.core.free_init` says what each means).
DEFAULT_FREE_INIT = "previous"
#: The start of model files written before `free_init` existed.
LEGACY_FREE_INIT = "zero"


def check_free_init(value):
    """Checks a `free_init` value.

    Args:
        value: one of `FREE_INITS`.

    Returns:
        `value`.

    Raises:
        ValueError: for anything else.
    """
    if value not in FREE_INITS:
        raise ValueError(
            f"Expected `free_init` to be one of {list(FREE_INITS)}: where a "
            "new task's free weights start (0, their values when pruned, or "
            f"fresh draws from the layer's initializer). Received: "
            f"free_init={value!r}"
        )
    return value
