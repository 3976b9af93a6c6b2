"""Task records and their lifecycle: one table of allowed transitions.

A task is added in state "training", may be pruned (state "pruned", and
pruned again or fine-tuned), and ends "frozen". `TRANSITIONS` is the only
place these rules are written; `require` and `advance` are the only
guards, used by `PackNetModel`, its mixins and `GradualPruning`.
"""

import dataclasses
import re

from packnet_tf.core.contract import as_contract
from packnet_tf.errors import TaskStateError

#: The task owns all free weights and trains.
TRAINING = "training"
#: The task was pruned at least once; it may fine-tune or prune again.
PRUNED = "pruned"
#: The task is finished: its weights, biases, statistics and head never
#: change again.
FROZEN = "frozen"

#: The lifecycle: `{action: {state before: state after}}`. An action is
#: allowed only in the states it lists; `"add_task"` is about the previous
#: task (the last one must be frozen before the next is added).
TRANSITIONS = {
    "fit": {TRAINING: TRAINING, PRUNED: PRUNED},
    "prune": {TRAINING: PRUNED, PRUNED: PRUNED},
    "end_task": {TRAINING: FROZEN, PRUNED: FROZEN},
    "add_task": {FROZEN: FROZEN},
}

#: The one rule for names that become folders, signatures and TF Serving
#: model names (tasks here; export model names in `export.checks`).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclasses.dataclass
class TaskInfo:
    """One task of a `PackNetModel`.

    Attributes:
        name: the task's name.
        task_id: its owner id in the masks (1 for the first task).
        num_classes: the width of its head's output (None for a headless
            task).
        state: one of "training", "pruned", "frozen".
        fingerprint: the task's outputs on its probe batch, stored by
            `end_task()` (see `PackNetModel.verify`).
        input_contract: how raw images become its inputs and its class
            names (`packnet_tf.InputContract`), or None: inputs are
            trunk-ready floats (files written before contracts load so).
        statistics_stale: whether the task was trained or pruned since its
            batch-norm statistics were last computed
            (`PackNetModel.recalibrate_batch_norm`); always False in a
            network without `TaskBatchNormalization`.
        headless: a task without a head (a pretrained network's own
            weights, kept for later tasks to read): its outputs are the
            trunk's features; it is pruned and frozen, never trained,
            evaluated or exported (`PackNetModel.add_task(headless=True)`).
        score_reference: `{rule: 101 quantiles}` of the task's own
            task-inference scores on its training examples, recorded when
            it ended (`packnet_tf.inference.task_inference.calibrate`), for
            `infer_task(calibrated=True)`; None where never recorded.
        input_density: the Gaussian density of the task's own inputs'
            activation statistics, recorded with `score_reference`, for
            `infer_task(score="statistics")`: `{"layers": [layer names],
            "mean": [D floats], "precision": [D rows of D floats]}`
            (`packnet_tf.inference.density`); None where never recorded.
    """

    name: str
    task_id: int
    num_classes: int
    state: str = TRAINING
    fingerprint: list = None
    input_contract: object = None
    statistics_stale: bool = False
    headless: bool = False
    score_reference: dict = None
    input_density: dict = None

    def __post_init__(self):
        # Read back from a config as a dict.
        self.input_contract = as_contract(self.input_contract)

    @property
    def finished(self):
        """Whether the task is frozen."""
        return self.state == FROZEN

    def to_config(self):
        """Returns the record as a JSON-friendly dict."""
        config = dataclasses.asdict(self)
        if self.input_contract is not None:
            config["input_contract"] = self.input_contract.to_config()
        return config


def require_head(task, action):
    """Raises unless `task` has a head (is not a headless base task).

    Args:
        task: a `TaskInfo`.
        action: what was asked, for the message ("fit", "export", ...).

    Raises:
        TaskStateError: for a headless task.
    """
    if task.headless:
        raise TaskStateError(
            f"Task {task.name!r} has no head: it holds a pretrained "
            f"network's own weights for later tasks to read, so it cannot "
            f"{action}. Prune it and `end_task()`, then add a task with a "
            "head (`add_task(name, num_classes=...)`).")


def validate_task_name(name, existing):
    """Checks a new task's name.

    Args:
        name: the proposed name.
        existing: names already used.

    Returns:
        `name`.

    Raises:
        ValueError: if the name is not a string of 1-64 letters, digits,
            `_`, `.` or `-` starting with a letter or digit, or is taken.
    """
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(
            "Expected a task name of 1-64 letters, digits, '_', '.' or '-' "
            "that starts with a letter or digit (it names export folders "
            f"and signatures). Received: name={name!r}"
        )
    if name in existing:
        raise ValueError(
            f"A task named {name!r} already exists; task names must be "
            f"unique. Existing tasks: {list(existing)}. Pick another name."
        )
    return name


def _describe(action):
    return action if action.endswith(("()", "Pruning")) else f"{action}()"


def require(task, action):
    """Checks that `action` is allowed on `task` (`TRANSITIONS`).

    Args:
        task: the active `TaskInfo`, or None when there is no task.
        action: a key of `TRANSITIONS` other than "add_task", or the name
            of a caller that needs the same states as "fit" (e.g.
            "GradualPruning").

    Returns:
        `task`.

    Raises:
        TaskStateError: if there is no task or its state does not allow
            `action`, saying what to call instead.
    """
    allowed = TRANSITIONS.get(action, TRANSITIONS["fit"])
    if task is not None and task.state in allowed:
        return task
    received = ("no task" if task is None
                else f"task {task.name!r} state={task.state}")
    raise TaskStateError(
        f"`{_describe(action)}` needs an active task that is still "
        "training. Call `add_task(...)` first (or `use_task(...)` for the "
        f"task being trained). Received: {received}"
    )


def advance(task, action):
    """Moves `task` along `action`'s transition, after `require`.

    Args:
        task: the active `TaskInfo` (changed in place).
        action: "prune" or "end_task" (or "fit", which keeps the state).

    Returns:
        `task`.

    Raises:
        TaskStateError: as `require`.
    """
    require(task, action)
    task.state = TRANSITIONS[action][task.state]
    return task


def require_can_add(tasks, name):
    """Checks that a task named `name` may follow `tasks`.

    Args:
        tasks: the model's `TaskInfo`s, in order.
        name: the new task's name (for the message).

    Raises:
        TaskStateError: if the last task is not frozen yet.
    """
    if tasks and tasks[-1].state not in TRANSITIONS["add_task"]:
        last = tasks[-1]
        raise TaskStateError(
            f"Task {last.name!r} is still {last.state}: call "
            f"`end_task()` before `add_task({name!r})`."
        )
