"""Task records: a task's name, id, head size and lifecycle state."""

import dataclasses
import re

from packnet_tf.contract import as_contract

#: The task owns all free weights and trains.
TRAINING = "training"
#: The task was pruned at least once; it may fine-tune or prune again.
PRUNED = "pruned"
#: The task is finished: its weights, biases, statistics and head never
#: change again.
FROZEN = "frozen"

STATES = (TRAINING, PRUNED, FROZEN)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclasses.dataclass
class TaskInfo:
    """One task of a `PackNetModel`.

    Attributes:
        name: the task's name.
        task_id: its owner id in the masks (1 for the first task).
        num_classes: the width of its head's output.
        state: one of "training", "pruned", "frozen".
        fingerprint: the task's outputs on its probe batch, stored by
            `end_task()` (see `PackNetModel.verify`).
        input_contract: how raw images become its inputs and its class
            names (`packnet_tf.InputContract`), or None: inputs are
            trunk-ready floats (files written before contracts load so).
    """

    name: str
    task_id: int
    num_classes: int
    state: str = TRAINING
    fingerprint: list = None
    input_contract: object = None

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
    if not isinstance(name, str) or not _NAME.match(name):
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
