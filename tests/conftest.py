"""Shared fixtures: tiny trunks and data, quiet TensorFlow logs."""

import os

# Test-process setting only; the library itself never touches the environment.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

# Two logical CPUs for the MirroredStrategy tests; must precede any TF op.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration()] * 2,
)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from packnet_tf import layers  # noqa: E402


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
