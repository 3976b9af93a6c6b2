"""Shared fixtures: tiny trunks and data, quiet TensorFlow logs."""

import os

# Test-process setting only; the library itself never touches the environment.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

# Two logical CPUs for the MirroredStrategy tests; must precede any TF op.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration()] * 2,
)

import keras
import numpy as np
import pytest

import packnet_tf as pn
from packnet_tf import layers
from packnet_tf.core.trunk import packed_layers


def conv_bn_trunk(max_tasks=None):
    """Conv -> task BN -> depthwise -> dense: every packed layer kind."""
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            layers.PackedConv2D(4, 3, padding="same", max_tasks=max_tasks,
                                name="conv"),
            layers.TaskBatchNormalization(max_tasks=max_tasks, name="bn"),
            keras.layers.ReLU(),
            layers.PackedDepthwiseConv2D(3, max_tasks=max_tasks, name="dw"),
            keras.layers.Flatten(),
            layers.PackedDense(8, activation="relu", max_tasks=max_tasks,
                              name="dense"),
        ],
        name="trunk",
    )


@pytest.fixture
def trunk():
    keras.utils.set_random_seed(0)
    return conv_bn_trunk()


@pytest.fixture
def task_data():
    """Three small classification tasks on the same inputs' shape."""
    rng = np.random.default_rng(0)
    data = []
    for num_classes in (2, 3, 4):
        x = rng.normal(size=(48, 6, 6, 2)).astype("float32")
        y = rng.integers(0, num_classes, size=48)
        data.append((x, y, num_classes))
    return data


@pytest.fixture
def probe():
    return np.random.default_rng(1).normal(size=(10, 6, 6, 2)).astype(
        "float32"
    )


#: Max |exported - model| on logits for float exports (the issue's bound).
FLOAT_TOLERANCE = 1e-5


def every_kind_trunk():
    """A functional trunk with every packed layer kind, branches and a block.

    Batch norms that fold: after `conv`, `grouped`, `sep`, `dw`, inside
    `block`, after `conv1d` and after `dense`. `bn_affine` (after an `Add`)
    and `bn_relu` (after an activation) stay affine.
    """
    inputs = keras.Input((8, 8, 3))
    h = layers.PackedConv2D(8, 3, padding="same", name="conv")(inputs)
    h = layers.TaskBatchNormalization(name="bn_conv")(h)
    h = keras.layers.ReLU()(h)
    g = layers.PackedConv2D(8, 3, padding="same", groups=2,
                            name="grouped")(h)
    g = layers.TaskBatchNormalization(name="bn_grouped")(g)
    s = layers.PackedSeparableConv2D(8, 3, padding="same", name="sep")(h)
    s = layers.TaskBatchNormalization(name="bn_sep")(s)
    d = layers.PackedDepthwiseConv2D(3, padding="same", depth_multiplier=2,
                                     name="dw")(h)
    d = layers.TaskBatchNormalization(name="bn_dw")(d)
    d = layers.PackedConv2D(8, 1, activation="relu", name="pointwise")(d)
    block = keras.Sequential(
        [keras.Input((8, 8, 8)),
         layers.PackedConv2D(8, 1, use_bias=False, name="block_conv"),
         layers.TaskBatchNormalization(name="block_bn")],
        name="block")
    h = keras.layers.Add()([g, s, d, block(h), h])
    h = layers.TaskBatchNormalization(name="bn_affine")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Reshape((16, 8))(h)
    h = layers.PackedConv1D(6, 3, padding="causal", name="conv1d")(h)
    h = layers.TaskBatchNormalization(name="bn_conv1d")(h)
    h = keras.layers.Activation("relu")(h)
    h = layers.TaskBatchNormalization(name="bn_relu")(h)
    h = keras.layers.Flatten()(h)
    h = layers.PackedDense(12, name="dense")(h)
    h = layers.TaskBatchNormalization(name="bn_dense")(h)
    outputs = keras.layers.ReLU()(h)
    return keras.Model(inputs, outputs, name="trunk")


def wide_trunk():
    """A Sequential trunk whose weights dwarf its graph (for file sizes)."""
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        layers.PackedConv2D(16, 3, padding="same", name="conv"),
        layers.TaskBatchNormalization(name="bn"),
        keras.layers.ReLU(),
        keras.layers.Flatten(),
        layers.PackedDense(128, activation="relu", name="dense"),
    ], name="wide")


def fake_train(model, rng):
    """Gives the active task random weights where it may train.

    Stands in for `fit` (fast and deterministic): the task's kernel entries,
    its per-task slots (positive variances) and its head get new values,
    scaled like Glorot initialization.
    """
    task_id = model.active_task.task_id
    for layer in packed_layers(model.trunk):
        for _, kernel, owner in layer.packed_kernels():
            fan_in = int(np.prod(kernel.shape[:-1]))
            values = rng.normal(scale=1.5 / np.sqrt(fan_in),
                                size=kernel.shape)
            kernel.assign(np.where(owner.numpy() == task_id, values,
                                   kernel.numpy()).astype("float32"))
        for variable in layer.per_task_variables():
            value = variable.numpy().copy()
            if "variance" in variable.name:
                row = rng.uniform(0.5, 2.0, size=value.shape[1:])
            elif "gamma" in variable.name:
                row = rng.uniform(0.5, 1.5, size=value.shape[1:])
            else:
                row = rng.normal(scale=0.3, size=value.shape[1:])
            value[task_id - 1] = row
            variable.assign(value)
    for weight in model.heads[task_id - 1].weights:
        weight.assign(rng.normal(scale=0.5, size=weight.shape))


def packed_model(trunk, classes=(2, 3, 4), max_tasks=4, seed=0,
                 training_task=None, head=None):
    """A PackNetModel with finished tasks "a", "b", ... (50% pruned each).

    Args:
        trunk: the trunk.
        classes: head widths, one per finished task.
        max_tasks: the model's capacity.
        seed: randomness of the fake training.
        training_task: the name of one more task left in training.
        head: a callable `num_classes -> head layer` (default Dense heads).
    """
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    model = pn.PackNetModel(trunk, max_tasks=max_tasks, name="multi_model")
    for index, num_classes in enumerate(classes):
        name = "abcdefgh"[index]
        if head is None:
            model.add_task(name, num_classes=num_classes)
        else:
            model.add_task(name, head=head(num_classes))
        fake_train(model, rng)
        model.prune(0.5)
        fake_train(model, rng)
        # Written by hand, not trained on data: statistics as they are.
        model.end_task(recalibrate=False)
    if training_task:
        model.add_task(training_task, num_classes=2)
        fake_train(model, rng)
    return model


def model_outputs(model, task, x):
    model.use_task(task)
    return keras.ops.convert_to_numpy(model(x, training=False))


def probe_inputs(model, count=6, seed=1):
    shape = tuple(model.trunk.inputs[0].shape[1:])
    return np.random.default_rng(seed).normal(
        size=(count,) + shape).astype("float32")


def randomize_statistics(model, seed=0):
    """Non-trivial batch-norm values, so that copying them is tested."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            randomize_statistics(layer, seed + 1)
        elif isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0, 0.1, shape))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, shape))
            if layer.gamma is not None:
                layer.gamma.assign(rng.uniform(0.5, 1.5, shape))
            if layer.beta is not None:
                layer.beta.assign(rng.normal(0, 0.1, shape))
        elif getattr(layer, "bias", None) is not None and not isinstance(
                layer.bias, (list, tuple)):
            layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape))
    return model


def registry_model(spec, num_classes=3):
    """A small Keras model around registry entry `spec`'s example layer.

    `example -> [BatchNormalization if batch norm folds into the entry] ->
    Flatten -> Dense(4, relu) -> Dense(num_classes)`: the Dense(4) gives
    every trunk a packed kernel to prune (a batch norm holds none), and the
    final Dense is the classifier `convert` cuts off. Batch-norm values and
    biases are random, so that copying them is tested.

    Args:
        spec: a `PackedLayerSpec`.
        num_classes: the classifier's width.

    Returns:
        `(model, input_shape)`.
    """
    layer, shape = spec.example()
    inputs = keras.Input(shape)
    x = layer(inputs)
    if spec.folds_batch_norm:
        x = keras.layers.BatchNormalization(name="bn_after")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(4, activation="relu", name="features")(x)
    outputs = keras.layers.Dense(num_classes, name="classifier")(x)
    model = keras.Model(inputs, outputs, name=f"{spec.name}_model")
    return randomize_statistics(model), tuple(shape)


def registry_task_data(shape, classes=(2, 3, 4), count=48, seed=0):
    """`(x, y, num_classes)` per task, for inputs of `shape`."""
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(size=(count,) + shape).astype("float32"),
         rng.integers(0, n, size=count), n)
        for n in classes
    ]


@pytest.fixture(autouse=True)
def _no_op_determinism_left_behind():
    """Fails a test that leaves TensorFlow's op determinism on.

    `packnet-tf train --deterministic` turns it on for its whole process;
    run in-process it would silently change later tests (Keras turns XLA
    off under it). Run such commands in a subprocess.
    """
    from tensorflow.python.framework import config as tf_config

    yield
    assert not tf_config.is_op_determinism_enabled(), (
        "this test left TensorFlow's op determinism on; run "
        "`train --deterministic` in a subprocess (cli_support.run_subprocess)")


def two_data_sets(n, seed):
    """Inputs of `conv_bn_trunk` from two unlike data sets: task "a" sees
    centred noise, task "b" bright, flat images."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, 6, 6, 2)).astype("float32")
    b = (2.0 + 0.2 * rng.normal(size=(n, 6, 6, 2))).astype("float32")
    return a, b


def density_model():
    """Tasks "a" (2 classes) and "b" (3) of a conv-BN trunk, each with its
    input density over the conv and the depthwise conv, fitted on 256 of
    its `two_data_sets` inputs."""
    from packnet_tf.inference.task_inference import calibrate

    model = packed_model(conv_bn_trunk(), classes=(2, 3))
    a, b = two_data_sets(256, seed=0)
    calibrate(model, "a", a, density_layers=2)
    calibrate(model, "b", b, density_layers=2)
    return model
