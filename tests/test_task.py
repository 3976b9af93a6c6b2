"""The task lifecycle table and its guards (`packnet_tf.core.task`)."""

import pytest

import packnet_tf as pn
from packnet_tf.core import task as lifecycle
from packnet_tf.core.task import FROZEN, PRUNED, TRAINING, TaskInfo

STATES = (TRAINING, PRUNED, FROZEN)


@pytest.mark.parametrize("action", ["fit", "prune", "end_task"])
@pytest.mark.parametrize("state", STATES)
def test_every_action_in_every_state_follows_the_table(action, state):
    record = TaskInfo("a", 1, 2, state)
    allowed = lifecycle.TRANSITIONS[action]
    if state in allowed:
        assert lifecycle.advance(record, action) is record
        assert record.state == allowed[state]
    else:
        with pytest.raises(pn.TaskStateError,
                           match=rf"`{action}\(\)` needs an active task "
                                 rf".*Received: task 'a' state={state}"):
            lifecycle.advance(record, action)
        assert record.state == state  # nothing half-applied


def test_the_lifecycle_table():
    assert lifecycle.TRANSITIONS == {
        "fit": {TRAINING: TRAINING, PRUNED: PRUNED},
        "prune": {TRAINING: PRUNED, PRUNED: PRUNED},
        "end_task": {TRAINING: FROZEN, PRUNED: FROZEN},
        "add_task": {FROZEN: FROZEN},
    }


def test_no_task_says_to_add_one():
    with pytest.raises(pn.TaskStateError,
                       match=r"Call `add_task\(...\)` first.*no task"):
        lifecycle.require(None, "prune")


def test_a_caller_named_for_itself_needs_the_fit_states():
    frozen = TaskInfo("a", 1, 2, FROZEN)
    with pytest.raises(pn.TaskStateError,
                       match=r"`GradualPruning` needs.*state=frozen"):
        lifecycle.require(frozen, "GradualPruning")
    training = TaskInfo("b", 2, 2, TRAINING)
    assert lifecycle.require(training, "GradualPruning") is training


@pytest.mark.parametrize("state", [TRAINING, PRUNED])
def test_add_task_needs_the_last_task_frozen(state):
    tasks = [TaskInfo("a", 1, 2, FROZEN), TaskInfo("b", 2, 2, state)]
    with pytest.raises(pn.TaskStateError,
                       match=rf"'b' is still {state}: call `end_task\(\)` "
                             r"before `add_task\('c'\)`"):
        lifecycle.require_can_add(tasks, "c")
    lifecycle.require_can_add(tasks[:1], "c")
    lifecycle.require_can_add([], "a")
