"""plain_model: a task as plain Keras layers, masks baked in, batch norm folded.

The small packed models the export tests build on live in `conftest.py`;
they are imported here too, where the other export tests have found them.
"""

import keras
import numpy as np
import pytest
from conftest import (  # noqa: F401 - re-exported for the other export tests
    FLOAT_TOLERANCE, every_kind_trunk, fake_train, model_outputs, packed_model,
    probe_inputs, wide_trunk)

import packnet_tf as pn
from packnet_tf.core.trunk import iter_layers
from packnet_tf.export import plain_model
from packnet_tf.export.plain import fold_plan
from packnet_tf.layers import PackedLayer

#: (producer, batch norm) pairs `every_kind_trunk` folds.
EVERY_KIND_FOLDS = {
    ("conv", "bn_conv"), ("grouped", "bn_grouped"), ("sep", "bn_sep"),
    ("dw", "bn_dw"), ("block_conv", "block_bn"), ("conv1d", "bn_conv1d"),
    ("dense", "bn_dense"),
}


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
