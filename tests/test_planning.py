"""Capacity planning: prune fractions per task, and equal shares in practice."""

import keras
import numpy as np
import pytest

import packnet_tf as pn
from packnet_tf import layers
from packnet_tf.core.planning import (check_fraction, prune_fraction_for,
                                      validate_spec)
from packnet_tf.layers.ownership import count_to_free


def plan(spec, num_tasks):
    """Every planned task's fraction, as train_task and the CLI ask them."""
    return [prune_fraction_for(spec, i, num_tasks) for i in range(num_tasks)]


def test_equal_is_tasks_left_over_tasks_left_plus_one():
    assert plan("equal", 4) == [3 / 4, 2 / 3, 1 / 2, 0.0]
    assert plan("equal", 1) == [0.0]
    assert prune_fraction_for("equal", 0, 2) == 0.5


def test_number_and_list_specs():
    assert plan(0.75, 3) == [0.75, 0.75, 0.75]
    assert plan([0.5, 0.25, 0], 3) == [0.5, 0.25, 0.0]
    assert prune_fraction_for((0.5, 0.1), 1, 2) == 0.1
    assert isinstance(prune_fraction_for(0, 0, 1), float)


@pytest.mark.parametrize(
    "spec, task_index, num_tasks, match",
    [
        ("half", 0, 2, r"or 'equal'. Received: 'half'"),
        (1.0, 0, 2, r"in \[0, 1\) for every task: .* Received: 1.0"),
        (-0.1, 0, 2, r"Received: -0.1"),
        (True, 0, 2, r"Received: True of type bool"),
        (None, 0, 2, r"Received: None of type NoneType"),
        ([0.5, 0.5], 0, 3, r"num_tasks=3\). Received 2 fractions"),
        ([0.5, 1.5], 0, 2, r"at index 1 of the list.*Received: 1.5"),
        ([0.5, "x"], 0, 2, r"at index 1 of the list.*Received: 'x'"),
        ("equal", 3, 3, r"Task index 3 \(0-based\) is past the plan of "
                        r"num_tasks=3"),
        ("equal", -1, 3, r"`task_index` to be an int >= 0"),
        ("equal", 0, 0, r"`num_tasks` to be an int >= 1. Received: "
                        r"num_tasks=0"),
        ("equal", 0, 2.0, r"`num_tasks` to be an int >= 1"),
    ],
)
def test_bad_specs_say_what_was_expected(spec, task_index, num_tasks, match):
    with pytest.raises(ValueError, match=match):
        prune_fraction_for(spec, task_index, num_tasks)


@pytest.mark.parametrize("value", [1.0, -0.1, True, None, "0.5"])
def test_one_fraction_check_for_every_caller(value):
    with pytest.raises(ValueError, match=r"Expected a prune fraction in "
                                         r"\[0, 1\) here: .* Received: "):
        check_fraction(value, "here")
    with pytest.raises(ValueError, match=r"Expected `fraction` in \[0, 1\)"):
        check_fraction(value, label="`fraction`")
    assert check_fraction(np.float32(0.25)) == 0.25


def test_a_plan_checked_without_its_length():
    assert validate_spec([0.5, 0.25, 0.5]) == (0.5, 0.25, 0.5)
    assert validate_spec("equal") == "equal"
    with pytest.raises(ValueError, match="at index 1 of the list"):
        validate_spec([0.5, 1.0])


@pytest.mark.parametrize("num_tasks", [2, 3, 5, 7, 12])
@pytest.mark.parametrize("size", [1, 2, 7, 97, 1000, 4099])
def test_equal_shares_differ_by_at_most_one_weight(num_tasks, size):
    # The counting `PackNetModel.prune` does, task after task, per kernel.
    free, shares = size, []
    for index in range(num_tasks):
        owned = free
        free = count_to_free(owned, prune_fraction_for("equal", index,
                                                       num_tasks))
        shares.append(owned - free)
    assert free == 0 and sum(shares) == size
    assert max(shares) - min(shares) <= 1


def _trunk():
    # Kernels of awkward sizes: 3*3*3*7 = 189, 7*5 = 35, 5*13 = 65.
    return keras.Sequential([
        keras.Input((5, 5, 3)),
        layers.PackedConv2D(7, 3, name="conv"),
        keras.layers.GlobalAveragePooling2D(),
        layers.PackedDense(5, name="fc1"),
        layers.PackedDense(13, name="fc2"),
    ])


def _data(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(8, 5, 5, 3)).astype("float32")
    return x, rng.integers(0, 2, size=8)


def _assert_equal_shares(model):
    for name, counts in model.capacity().counts.items():
        assert counts[0] == 0, name  # the last task took what was left
        assert max(counts[1:]) - min(counts[1:]) <= 1, (name, counts)


@pytest.mark.parametrize("num_tasks", [2, 3, 5, 8])
def test_equal_plan_gives_every_task_the_same_share(num_tasks):
    keras.utils.set_random_seed(0)
    model = pn.PackNetModel(_trunk(), max_tasks=num_tasks)
    for t in range(num_tasks):
        model.add_task(f"t{t}", num_classes=2)
        model.prune(prune_fraction_for("equal", t, num_tasks))
        model.end_task()
    _assert_equal_shares(model)


def test_train_task_equal_plans_with_max_tasks():
    keras.utils.set_random_seed(0)
    model = pn.PackNetModel(_trunk(), max_tasks=3)
    x, y = _data(0)
    # epochs=0: the shares depend on pruning only.
    for t in range(3):
        result = pn.train_task(model, f"t{t}", (x, y), num_classes=2,
                               epochs=0, prune_fraction="equal",
                               finetune_epochs=0, verbose=0)
        assert bool(result.freed) == (t < 2)
    _assert_equal_shares(model)


def test_train_task_list_plan_and_num_tasks():
    keras.utils.set_random_seed(0)
    model = pn.PackNetModel(_trunk(), max_tasks=5)
    x, y = _data(1)
    with pytest.raises(ValueError, match=r"num_tasks=5\). Received 2"):
        pn.train_task(model, "a", (x, y), num_classes=2,
                      prune_fraction=[0.5, 0.0], verbose=0)
    assert model.tasks == []  # nothing was added
    result = pn.train_task(model, "a", (x, y), num_classes=2, epochs=0,
                           prune_fraction=[0.25, 0.0], num_tasks=2,
                           finetune_epochs=0, verbose=0)
    assert result.freed == {"conv/kernel": round(0.25 * 189),
                            "fc1/kernel": round(0.25 * 35),
                            "fc2/kernel": round(0.25 * 65)}
    with pytest.raises(ValueError, match=r"num_tasks` to be an int in "
                                         r"\[1, 5\]"):
        pn.train_task(model, "b", (x, y), num_classes=2, num_tasks=6,
                      prune_fraction="equal", verbose=0)


def test_a_plan_that_leaves_nothing_fails_before_training():
    keras.utils.set_random_seed(0)
    model = pn.PackNetModel(_trunk(), max_tasks=3)
    x, y = _data(2)
    # A one-task plan: the first task keeps everything.
    pn.train_task(model, "a", (x, y), num_classes=2, epochs=0,
                  prune_fraction="equal", num_tasks=1, verbose=0)
    before = [v.numpy().copy() for v in model.trunk.weights]
    with pytest.raises(pn.CapacityError, match="No free weights left"):
        pn.train_task(model, "b", (x, y), num_classes=2, verbose=0)
    assert [t.name for t in model.tasks] == ["a"]
    for old, new in zip(before, model.trunk.weights):
        np.testing.assert_array_equal(old, new.numpy())
