"""Bad input: each raises a named error that says what to do, and changes nothing."""

import keras
import numpy as np
import pytest

import packnet_tf as pn
from packnet_tf import layers

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture
def model(trunk):
    return pn.PackNetModel(trunk, max_tasks=2)


def _state(model):
    """Everything a failed call must leave as it was."""
    return ([t.to_config() for t in model.tasks],
            [w.numpy().copy() for w in model.trunk.weights],
            len(model.heads))


def _assert_same_state(before, after):
    assert before[0] == after[0] and before[2] == after[2]
    for a, b in zip(before[1], after[1]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5, "half", True, None])
def test_prune_fraction_outside_range(model, fraction):
    model.add_task("a", num_classes=2)
    before = _state(model)
    with pytest.raises(ValueError, match=r"`fraction` in \[0, 1\)"):
        model.prune(fraction)
    _assert_same_state(before, _state(model))


def test_prune_and_fit_without_a_task(model, task_data):
    with pytest.raises(pn.TaskStateError,
                       match=r"Call `add_task\(...\)` first.*no task"):
        model.prune(0.5)
    x, y, _ = task_data[0]
    model.compile("adam", LOSS)
    with pytest.raises(pn.TaskStateError, match="no task"):
        model.fit(x, y, verbose=0)
    with pytest.raises(pn.TaskStateError, match="no task"):
        model.end_task()


def test_prune_and_fit_on_a_frozen_task(model, task_data):
    x, y, _ = task_data[0]
    model.add_task("a", num_classes=2)
    model.end_task()
    with pytest.raises(pn.TaskStateError, match="state=frozen"):
        model.prune(0.5)
    model.compile("adam", LOSS)
    with pytest.raises(pn.TaskStateError, match="state=frozen"):
        model.fit(x, y, verbose=0)


def test_fit_on_an_earlier_task_while_a_later_one_trains(model, task_data):
    x, y, _ = task_data[0]
    model.add_task("a", num_classes=2)
    model.prune(0.5)
    model.end_task(recalibrate=False)  # pruned without data
    model.add_task("b", num_classes=2)
    model.use_task("a")
    model.compile("adam", LOSS)
    with pytest.raises(pn.TaskStateError, match="'a' state=frozen"):
        model.fit(x, y, verbose=0)


def test_unknown_task(model):
    model.add_task("a", num_classes=2)
    with pytest.raises(ValueError, match=r"Unknown task 'b'.*\['a'\]"):
        model.use_task("b")


@pytest.mark.parametrize("name, match", [
    ("a", "already exists"),
    ("", "task name"),
    ("has space", "task name"),
    ("../up", "task name"),
    (3, "task name"),
])
def test_bad_or_duplicate_task_names(model, name, match):
    model.add_task("a", num_classes=2)
    model.prune(0.5)
    model.end_task(recalibrate=False)  # pruned without data
    before = _state(model)
    with pytest.raises(ValueError, match=match):
        model.add_task(name, num_classes=2)
    _assert_same_state(before, _state(model))


def test_more_tasks_than_max_tasks(model):
    for name in ("a", "b"):
        model.add_task(name, num_classes=2)
        model.prune(0.5)
        model.end_task(recalibrate=False)  # pruned without data
    with pytest.raises(pn.CapacityError, match="at most max_tasks=2"):
        model.add_task("c", num_classes=2)


@pytest.mark.parametrize("max_tasks", [0, 256, 2.5, None])
def test_max_tasks_out_of_range(trunk, max_tasks):
    with pytest.raises(ValueError, match=r"`max_tasks`.*\[1, 255\]"):
        pn.PackNetModel(trunk, max_tasks=max_tasks)


def test_no_free_weights_left_says_who_owns_them(model):
    model.add_task("a", num_classes=2)
    model.end_task()  # not pruned: task a owns everything
    before = _state(model)
    with pytest.raises(pn.CapacityError,
                       match=r"No free weights.*conv.*a: 100.0%.*prune"):
        model.add_task("b", num_classes=2)
    _assert_same_state(before, _state(model))


def test_add_task_while_the_previous_one_trains(model):
    model.add_task("a", num_classes=2)
    with pytest.raises(pn.TaskStateError,
                       match=r"'a' is still training.*end_task"):
        model.add_task("b", num_classes=2)


def test_labels_that_do_not_fit_the_head(model, task_data):
    x, _, _ = task_data[0]
    model.add_task("a", num_classes=2)
    model.compile("adam", LOSS)
    with pytest.raises(ValueError,
                       match=r"outputs 2 classes.*from 0 to 4.*num_classes=5"):
        model.fit(x, np.arange(48) % 5, verbose=0)
    with pytest.raises(ValueError, match=r"one-hot labels of shape \(48, 3\)"):
        model.fit(x, np.eye(3)[np.arange(48) % 3], verbose=0)
    import tensorflow as tf
    ds = tf.data.Dataset.from_tensor_slices(
        (x, np.eye(3, dtype="float32")[np.arange(48) % 3])).batch(8)
    with pytest.raises(ValueError, match="one-hot labels of width 3"):
        model.fit(ds, verbose=0)


def test_head_that_does_not_fit(model):
    before = _state(model)
    with pytest.raises(ValueError, match="outputs 4 values.*num_classes=3"):
        model.add_task("a", num_classes=3, head=keras.layers.Dense(4))
    with pytest.raises(ValueError, match="needs `num_classes`"):
        model.add_task("a")
    with pytest.raises(TypeError, match="Keras layer"):
        model.add_task("a", head="dense")
    _assert_same_state(before, _state(model))
    head = keras.layers.Dense(2)
    model.add_task("a", head=head)
    model.prune(0.5)
    model.end_task(recalibrate=False)  # pruned without data
    with pytest.raises(ValueError, match="already belongs"):
        model.add_task("b", head=head)


def test_trunk_with_a_layer_that_cannot_be_packed():
    trunk = keras.Sequential([
        keras.Input((4,)),
        layers.PackedDense(3),
        keras.layers.Dense(3, name="plain_dense"),
        keras.layers.LayerNormalization(name="ln"),
    ])
    with pytest.raises(
            pn.UnsupportedLayerError,
            match=r"'plain_dense' \(Dense\), 'ln' \(LayerNormalization\)"
                  r".*PackedDense.*TaskBatchNormalization"):
        pn.PackNetModel(trunk, max_tasks=2)


def test_trunk_that_is_not_built_or_not_a_model():
    with pytest.raises(ValueError, match="keras.Input"):
        pn.PackNetModel(keras.Sequential([layers.PackedDense(3)]),
                        max_tasks=2)
    with pytest.raises(TypeError, match="functional or Sequential"):
        pn.PackNetModel(layers.PackedDense(3), max_tasks=2)


def test_call_before_any_task(model, probe):
    with pytest.raises(pn.TaskStateError, match="add_task"):
        model(probe)
