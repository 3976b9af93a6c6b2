"""Packed layers: config round trips, Keras-twin parity, task visibility."""

import keras
import numpy as np
import pytest

from packnet_tf import layers

LAYER_CASES = {
    "dense": (
        lambda: layers.PackedDense(
            5, activation="relu", use_bias=True, max_tasks=3,
            kernel_regularizer="l2", kernel_constraint="non_neg"),
        lambda: keras.layers.Dense(5, activation="relu"),
        (4, 7),
    ),
    "conv1d_causal": (
        lambda: layers.PackedConv1D(
            3, 2, padding="causal", dilation_rate=2, max_tasks=3),
        lambda: keras.layers.Conv1D(3, 2, padding="causal", dilation_rate=2),
        (2, 9, 4),
    ),
    "conv2d": (
        lambda: layers.PackedConv2D(
            4, (3, 2), strides=2, padding="same", activation="tanh",
            max_tasks=3),
        lambda: keras.layers.Conv2D(
            4, (3, 2), strides=2, padding="same", activation="tanh"),
        (2, 7, 6, 3),
    ),
    "depthwise": (
        lambda: layers.PackedDepthwiseConv2D(
            3, depth_multiplier=2, padding="same", max_tasks=3),
        lambda: keras.layers.DepthwiseConv2D(
            3, depth_multiplier=2, padding="same"),
        (2, 5, 5, 3),
    ),
    "separable": (
        lambda: layers.PackedSeparableConv2D(
            5, 3, depth_multiplier=2, strides=2, padding="same",
            activation="relu", max_tasks=3),
        lambda: keras.layers.SeparableConv2D(
            5, 3, depth_multiplier=2, strides=2, padding="same",
            activation="relu"),
        (2, 7, 7, 3),
    ),
    "batch_norm": (
        lambda: layers.TaskBatchNormalization(momentum=0.9, epsilon=1e-2,
                                              max_tasks=3),
        lambda: keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-2),
        (8, 4),
    ),
}


def _random_like(variable, rng):
    return rng.normal(size=variable.shape).astype(variable.dtype)


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_config_round_trip(case):
    make, _, shape = LAYER_CASES[case]
    layer = make()
    layer.build(shape)
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config
    # Registered: a generic deserialize finds the class without help.
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer))
    assert type(revived) is type(layer)
    assert revived.get_config() == config


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_matches_keras_twin_when_task_owns_everything(case):
    make, make_twin, shape = LAYER_CASES[case]
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype("float32")
    packed, twin = make(), make_twin()
    packed.build(shape)
    twin.build(shape)
    for name, kernel, owner in packed.packed_kernels():
        kernel.assign(_random_like(kernel, rng))
        owner.assign(np.ones(kernel.shape, np.uint8))
    packed.set_active_task(2)
    for variable in packed.per_task_variables():
        row = np.abs(_random_like(variable, rng)[1])
        variable.assign(np.stack([row * 0 + 7, row, row * 0 + 9]))
    kernels = {n: k.numpy() for n, k, _ in packed.packed_kernels()}
    if len(kernels) == 1:  # Keras calls a depthwise kernel "kernel" too
        kernels["kernel"] = next(iter(kernels.values()))
    for variable in twin.weights:
        name = variable.path.split("/")[-1]
        if name in kernels:
            variable.assign(kernels[name])
        else:
            variable.assign(getattr(packed, name).numpy()[1])
    for training in (False, True):
        np.testing.assert_allclose(
            packed(x, training=training), twin(x, training=training),
            rtol=1e-5, atol=1e-5)


def test_dense_sees_only_tasks_up_to_active():
    layer = layers.PackedDense(1, use_bias=True, max_tasks=3)
    layer.build((1, 3))
    layer.kernel.assign([[1.0], [10.0], [100.0]])
    layer.kernel_owner.assign(np.array([[1], [2], [0]], np.uint8))
    layer.bias.assign([[0.5], [0.25], [0.0]])
    x = np.ones((1, 3), "float32")
    layer.set_active_task(1)
    assert float(layer(x)[0, 0]) == 1.5
    layer.set_active_task(2)
    assert float(layer(x)[0, 0]) == 11.25


def test_train_masks_cover_own_weights_and_own_bias_slot():
    layer = layers.PackedDense(2, max_tasks=3)
    layer.build((1, 2))
    layer.kernel_owner.assign(np.array([[1, 2], [2, 0]], np.uint8))
    masks = {v.path: m.numpy() for v, m in layer.train_masks(2)}
    np.testing.assert_array_equal(masks[layer.kernel.path],
                                  [[False, True], [True, False]])
    np.testing.assert_array_equal(masks[layer.bias.path],
                                  [[False, False], [True, True],
                                   [False, False]])


def test_batch_norm_updates_only_the_active_task_statistics():
    layer = layers.TaskBatchNormalization(momentum=0.5, max_tasks=3)
    layer.build((4, 2))
    before = layer.moving_mean.numpy().copy()
    layer.set_active_task(2)
    x = np.arange(8, dtype="float32").reshape(4, 2)
    layer(x, training=True)
    after = layer.moving_mean.numpy()
    np.testing.assert_array_equal(after[[0, 2]], before[[0, 2]])
    np.testing.assert_allclose(after[1], 0.5 * x.mean(axis=0))


def test_copy_task_slot_starts_a_task_from_the_previous_one():
    layer = layers.PackedConv2D(2, 1, max_tasks=3)
    layer.build((1, 2, 2, 1))
    layer.bias.assign([[1.0, 2.0], [0.0, 0.0], [0.0, 0.0]])
    layer.copy_task_slot(1, 2)
    np.testing.assert_array_equal(layer.bias.numpy(),
                                  [[1, 2], [1, 2], [0, 0]])


@pytest.mark.parametrize("make, match", [
    (lambda: layers.PackedDense(0), "units"),
    (lambda: layers.PackedConv2D(4, 0), "kernel_size"),
    (lambda: layers.PackedConv2D(4, 3, padding="causal"), "padding"),
    (lambda: layers.PackedDepthwiseConv2D(3, depth_multiplier=0),
     "depth_multiplier"),
    (lambda: layers.PackedDense(3, max_tasks=256), "max_tasks"),
    (lambda: layers.TaskBatchNormalization(axis="x"), "axis"),
])
def test_bad_arguments_say_what_was_expected(make, match):
    with pytest.raises(ValueError, match=match):
        make()
