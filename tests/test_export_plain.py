"""plain_model: a task as plain Keras layers, masks baked in, batch norm folded.

Also holds the small packed models the other export tests build on.
"""

import keras
import numpy as np
import pytest

import packnet_tf as pn
from packnet_tf import layers
from packnet_tf.export import plain_model
from packnet_tf.export.plain import fold_plan
from packnet_tf.layers import PackedLayer
from packnet_tf.trunk import iter_layers, packed_layers

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


#: (producer, batch norm) pairs `every_kind_trunk` folds.
EVERY_KIND_FOLDS = {
    ("conv", "bn_conv"), ("grouped", "bn_grouped"), ("sep", "bn_sep"),
    ("dw", "bn_dw"), ("block_conv", "block_bn"), ("conv1d", "bn_conv1d"),
    ("dense", "bn_dense"),
}


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
        model.end_task()
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


@pytest.fixture(scope="module")
def every_kind_model():
    return packed_model(every_kind_trunk(), training_task="d")


def test_fold_plan_folds_exactly_the_batch_norms_after_linear_layers():
    plan = fold_plan(every_kind_trunk())
    assert {(p.name, bn.name) for p, bn in plan} == EVERY_KIND_FOLDS


@pytest.mark.parametrize("fold", [True, False], ids=["folded", "affine"])
def test_plain_model_matches_every_task(every_kind_model, fold):
    x = probe_inputs(every_kind_model)
    for task in ("a", "b", "c"):
        plain = plain_model(every_kind_model, task, fold_batch_norm=fold)
        expected = model_outputs(every_kind_model, task, x)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(plain(x)), expected, rtol=0,
            atol=FLOAT_TOLERANCE, err_msg=f"task {task}")
        kinds = [type(layer).__name__ for layer in iter_layers(plain)]
        assert not any(isinstance(l, PackedLayer) for l in iter_layers(plain))
        batch_norms = kinds.count("BatchNormalization")
        assert batch_norms == (2 if fold else 9)
        assert kinds.count("Identity") == (7 if fold else 0)


def test_plain_model_bakes_the_masks_of_its_task(every_kind_model):
    conv = every_kind_model.trunk.get_layer("conv1d")
    owner = conv.kernel_owner.numpy()
    for task_id, task in enumerate(("a", "b", "c"), start=1):
        plain = plain_model(every_kind_model, task, fold_batch_norm=False)
        kernel = plain.get_layer("trunk").get_layer("conv1d").kernel.numpy()
        hidden = (owner == 0) | (owner > task_id)
        assert np.all(kernel[hidden] == 0)
        np.testing.assert_array_equal(
            kernel[~hidden], conv.kernel.numpy()[~hidden])


def test_sequential_trunk_and_arbitrary_heads():
    @keras.saving.register_keras_serializable(package="packnet_tf_tests")
    class ScaledHead(keras.layers.Layer):
        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.dense = keras.layers.Dense(units)

        def call(self, x):
            return 2.0 * self.dense(keras.ops.tanh(x))

        def get_config(self):
            return {**super().get_config(), "units": self.units}

    heads = iter([
        keras.Sequential([keras.layers.Dense(5, activation="relu"),
                          keras.layers.Dense(2)]),
        ScaledHead(3),
    ])
    model = packed_model(wide_trunk(), classes=(2, 3),
                         head=lambda n: next(heads))
    x = probe_inputs(model)
    for task in ("a", "b"):
        plain = plain_model(model, task)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(plain(x)),
            model_outputs(model, task, x), rtol=0, atol=FLOAT_TOLERANCE)
    # The plain model's head is a copy: changing it leaves the task alone.
    before = model_outputs(model, "a", x)
    plain = plain_model(model, "a")
    for weight in plain.layers[-1].weights:
        weight.assign(np.zeros(weight.shape))
    np.testing.assert_array_equal(model_outputs(model, "a", x), before)


def test_plain_model_rejects_unknown_and_unfinished_tasks(every_kind_model):
    with pytest.raises(ValueError, match="Unknown task"):
        plain_model(every_kind_model, "zebra")
    with pytest.raises(pn.TaskStateError, match="Only finished tasks"):
        plain_model(every_kind_model, "d")
