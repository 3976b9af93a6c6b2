"""Batch-norm statistics that match the weights a task ends with (issue 29).

A converted network with batch norm whose statistics are far from its data
is trained, pruned and fine-tuned as a user would: the statistics it is
frozen with must be the population statistics of the pruned network, so
that inference mode computes what batch statistics compute.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import packnet_tf as pn
from packnet_tf.core.recalibration import (SHUFFLE_SEED, batch_norm_layers,
                                           batch_statistics,
                                           population_statistics)
from packnet_tf.training import phases

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
#: Max |stored - population| of a statistic (float32 storage).
STATISTICS_TOLERANCE = 1e-5


def _keras_network():
    """A small plain Keras CNN with two batch norms, as a user has one."""
    inputs = keras.Input((6, 6, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", name="conv1")(inputs)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Conv2D(8, 3, name="conv2")(h)
    h = keras.layers.BatchNormalization(name="bn2")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(3, name="classifier")(h)
    return keras.Model(inputs, outputs, name="net")


def _with_stale_statistics(model, seed=0):
    """Moving statistics far from what the data gives (non-trivial)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            width = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(size=width) * 3.0)
            layer.moving_variance.assign(rng.uniform(0.1, 5.0, size=width))
            layer.gamma.assign(rng.uniform(0.5, 1.5, size=width))
            layer.beta.assign(rng.normal(size=width) * 0.2)
    return model


def _data(seed, count=64, num_classes=3):
    rng = np.random.default_rng(seed)
    # Mean 2 and spread 3: far from the statistics above and from (0, 1).
    x = (rng.normal(size=(count, 6, 6, 3)) * 3.0 + 2.0).astype("float32")
    return x, rng.integers(0, num_classes, size=count)


def _converted():
    keras.utils.set_random_seed(0)
    return pn.convert(_with_stale_statistics(_keras_network()), max_tasks=3,
                      first_task="orig")


def _train_prune_finetune(model, x, y):
    model.compile(keras.optimizers.Adam(1e-2), LOSS)
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    model.prune(0.5)
    model.compile(keras.optimizers.Adam(1e-3), LOSS)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)


def _bn_inputs(model, x):
    """Each batch norm's input on `x` as one batch, every batch norm
    normalizing with that batch's statistics (computed apart from the
    library: a Keras model up to each batch norm, in training mode, on a
    copy of the trunk so that no moving statistic changes)."""
    trunk = keras.models.clone_model(model.trunk)
    trunk.set_weights(model.trunk.get_weights())
    names = [layer.name for layer in batch_norm_layers(model)]
    probe = keras.Model(trunk.inputs[0],
                        [trunk.get_layer(n).input for n in names])
    outputs = probe(x, training=True)
    if not isinstance(outputs, (list, tuple)):  # one batch norm
        outputs = [outputs]
    return [np.asarray(a, dtype="float64") for a in outputs]


def _stored(model, task_id):
    return [(layer.moving_mean.numpy()[task_id - 1],
             layer.moving_variance.numpy()[task_id - 1])
            for layer in batch_norm_layers(model)]


def _assert_population_statistics(stored, inputs):
    """Each `(mean, variance)` of `stored` is that of its layer's `inputs`
    (over every axis but the channels)."""
    for (mean, variance), values in zip(stored, inputs, strict=True):
        axes = tuple(range(values.ndim - 1))
        np.testing.assert_allclose(mean, values.mean(axis=axes), rtol=0,
                                   atol=STATISTICS_TOLERANCE)
        np.testing.assert_allclose(variance, values.var(axis=axes), rtol=0,
                                   atol=STATISTICS_TOLERANCE)


def _batch_statistics_outputs(model, x):
    with batch_statistics(batch_norm_layers(model)):
        return keras.ops.convert_to_numpy(model(x, training=False))


def test_stored_statistics_are_the_pruned_networks_population_statistics():
    model = _converted()
    x, y = _data(0)
    _train_prune_finetune(model, x, y)
    expected = _bn_inputs(model, x)
    before = _stored(model, 1)
    # Training left exponential averages: not the population statistics.
    assert max(np.max(np.abs(m - e.mean(axis=(0, 1, 2))))
               for (m, _), e in zip(before, expected)) > 0.05
    assert model.recalibrate_batch_norm(x, batch_size=len(x)) == len(x)
    _assert_population_statistics(_stored(model, 1), expected)
    # Inference mode now computes what batch statistics compute.
    inference = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(inference, _batch_statistics_outputs(model, x),
                               rtol=0, atol=1e-4)


def test_batches_are_pooled_exactly_between_batch_spread_included():
    model = _converted()
    x, y = _data(1)
    _train_prune_finetune(model, x, y)
    # Batches that differ in mean: an average of per-batch variances would
    # miss the spread between them.
    x = x[np.argsort(x.mean(axis=(1, 2, 3)))]
    whole, _ = population_statistics(model, x, batch_size=len(x))
    pooled, examples = population_statistics(model, x, batch_size=16,
                                             shuffle=False)
    assert examples == len(x)
    # The first batch norm's inputs do not depend on the batching (up to
    # float32 moments per batch).
    for got, want in zip(pooled[0], whole[0]):
        np.testing.assert_allclose(got, want, rtol=0,
                                   atol=STATISTICS_TOLERANCE)
    # What averaging the batches' variances would give is far off.
    averaged = np.mean([population_statistics(model, x[i:i + 16],
                                              shuffle=False)[0][0][1]
                        for i in range(0, len(x), 16)], axis=0)
    assert np.max(np.abs(averaged - whole[0][1])) > 0.01
    # `steps` reads that many batches only: the first 16 examples.
    first, examples = population_statistics(model, x, steps=1,
                                            batch_size=16, shuffle=False)
    assert examples == 16
    head, _ = population_statistics(model, x[:16], batch_size=16,
                                    shuffle=False)
    np.testing.assert_array_equal(first[0][0], head[0][0])
    # Shuffled (the default): another first batch, the same every call.
    shuffled = [population_statistics(model, x, steps=1, batch_size=16)[0]
                for _ in range(2)]
    np.testing.assert_array_equal(shuffled[0][0][0], shuffled[1][0][0])
    assert not np.array_equal(shuffled[0][0][0], first[0][0])


def test_datasets_arrays_and_tuples_give_the_same_statistics():
    model = _converted()
    x, y = _data(2)
    _train_prune_finetune(model, x, y)
    from_array, _ = population_statistics(model, x, batch_size=16)
    from_tuple, _ = population_statistics(model, (x, y), batch_size=16)
    order = np.random.default_rng(SHUFFLE_SEED).permutation(len(x))
    dataset = tf.data.Dataset.from_tensor_slices(
        (x[order], y[order])).batch(16)
    from_dataset, _ = population_statistics(model, dataset)
    for a, b, c in zip(from_array, from_tuple, from_dataset):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_allclose(a[0], c[0], rtol=0, atol=1e-7)


def test_end_task_refuses_stale_statistics_until_recalibrated():
    model = _converted()
    x, y = _data(0)
    # A converted task's statistics are its own: it may end unchanged...
    assert not model.active_task.statistics_stale
    model.compile(keras.optimizers.Adam(1e-2), LOSS)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    # ...but not after training or pruning.
    assert model.active_task.statistics_stale
    with pytest.raises(pn.TaskStateError,
                       match=r"recalibrate_batch_norm\(train_data\)"):
        model.end_task()
    assert model.active_task.state == "training"  # nothing was applied
    model.recalibrate_batch_norm(x)
    model.prune(0.5)
    with pytest.raises(pn.TaskStateError, match="recalibrate=False"):
        model.end_task()
    model.recalibrate_batch_norm(x)
    assert model.end_task().state == "frozen"
    with pytest.raises(pn.TaskStateError, match="state=frozen"):
        model.recalibrate_batch_norm(x)


def test_end_task_keeps_statistics_as_they_are_when_told():
    model = _converted()
    converted = _stored(model, 1)
    model.prune(0.5)  # without data
    with pytest.raises(TypeError, match="expected True or False"):
        model.end_task(recalibrate="no")
    model.end_task(recalibrate=False)
    for (mean, variance), (m0, v0) in zip(_stored(model, 1), converted):
        np.testing.assert_array_equal(mean, m0)
        np.testing.assert_array_equal(variance, v0)


@pytest.mark.parametrize("data, error, match", [
    (np.zeros((0, 6, 6, 3), "float32"), ValueError, "without any example"),
    ({"x": 1}, TypeError, "tf.data.Dataset of batches"),
    ((), ValueError, "empty tuple"),
])
def test_bad_recalibration_data_is_refused(data, error, match):
    model = _converted()
    with pytest.raises(error, match=match):
        model.recalibrate_batch_norm(data)


@pytest.mark.parametrize("steps", [0, -1, 1.5, True])
def test_bad_steps_are_refused(steps):
    model = _converted()
    x, _ = _data(0)
    with pytest.raises(ValueError, match="Expected `steps`"):
        model.recalibrate_batch_norm(x, steps=steps)


def test_recalibrating_a_later_task_keeps_earlier_tasks_bit_exact():
    model = _converted()
    x, y = _data(0)
    _train_prune_finetune(model, x, y)
    model.recalibrate_batch_norm(x)
    model.end_task()
    probe = _data(9, count=10)[0]
    first = keras.ops.convert_to_numpy(model(probe, training=False))
    statistics = _stored(model, 1)
    x2, y2 = _data(3)
    result = pn.train_task(model, "second", (x2, y2), num_classes=3,
                           epochs=1, prune_fraction=0.5, batch_size=16,
                           verbose=0)
    assert result.task.state == "frozen"
    model.use_task("orig")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model(probe, training=False)), first)
    for (mean, variance), (m0, v0) in zip(_stored(model, 1), statistics):
        np.testing.assert_array_equal(mean, m0)
        np.testing.assert_array_equal(variance, v0)
    assert set(model.verify().values()) == {0.0}


def _new_task_by_train_task(seed, **options):
    """A converted model whose second task `train_task` trained on
    `_data(seed)`; returns `(model, x)` with "new" active."""
    model = _converted()
    model.prune(0.5)
    model.end_task(recalibrate=False)
    x, y = _data(seed)
    pn.train_task(model, "new", (x, y), num_classes=3, prune_fraction=0.5,
                  verbose=0, **options)
    model.use_task("new")
    return model, x


def test_train_task_freezes_the_population_statistics():
    # Mutation check: without the recalibration in `phases.end` this fails
    # (end_task refuses the stale statistics).
    model, x = _new_task_by_train_task(4, epochs=2, finetune_epochs=1,
                                       batch_size=64, learning_rate=1e-2)
    _assert_population_statistics(_stored(model, 2), _bn_inputs(model, x))


def test_recipe_can_leave_the_statistics_as_training_left_them():
    model, x = _new_task_by_train_task(5, epochs=1, batch_size=16,
                                       recalibrate=False)
    expected = _bn_inputs(model, x)
    assert max(np.max(np.abs(m - e.mean(axis=(0, 1, 2))))
               for (m, _), e in zip(_stored(model, 2), expected)) > 0.05
    with pytest.raises(ValueError, match="`recalibrate_steps`"):
        phases.Recipe(recalibrate_steps=0)
    with pytest.raises(ValueError, match="`recalibrate` to be True"):
        phases.Recipe(recalibrate="yes")


def test_a_network_without_batch_norm_reads_nothing(task_data):
    trunk = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Flatten(),
                              pn.layers.PackedDense(4)])
    model = pn.PackNetModel(trunk, max_tasks=2)
    model.add_task("a", num_classes=2)
    model.prune(0.5)
    assert not model.active_task.statistics_stale
    assert model.recalibrate_batch_norm(np.zeros((0, 6, 6, 2))) == 0
    assert model.end_task().state == "frozen"
