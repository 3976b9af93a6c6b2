"""The fused masked update: one XLA function per step, exact, with a way out.

`PackNetModel(fused_update=True)` (the default) compiles the gradient mask,
the optimizer's step and the write-back of frozen entries as one XLA
function. Mutation check: making the update skip its write-back (`_restore`
a no-op) fails the exactness test here for AdamW, SGD with momentum and
weight decay and Lion ("task 't1' changed"), as it fails test_model.py's;
Adam with EMA passes it even so (Adam moves no entry whose gradient and
slots are 0), and is here for the EMA's averaging and overwrite.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import packnet_tf as pn
from packnet_tf import layers

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

OPTIMIZERS = {
    "adamw": lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.1),
    "sgd-momentum-decay": lambda: keras.optimizers.SGD(
        1e-2, momentum=0.9, weight_decay=0.05),
    "lion": lambda: keras.optimizers.Lion(1e-3, weight_decay=0.1),
    "adam-ema": lambda: keras.optimizers.Adam(
        1e-2, use_ema=True, ema_overwrite_frequency=2),
}


def _outputs(model, task, probe):
    model.use_task(task)
    return keras.ops.convert_to_numpy(model(probe, training=False))


def _two_tasks(trunk, task_data, probe, optimizer, fused):
    """t1 trained, pruned, fine-tuned, frozen; then t2 trained by
    `optimizer`. Returns `(model, t1's outputs when frozen)`."""
    keras.utils.set_random_seed(1)
    model = pn.PackNetModel(trunk, max_tasks=2, fused_update=fused)
    x, y, classes = task_data[0]
    model.add_task("t1", num_classes=classes)
    model.compile(keras.optimizers.Adam(1e-2), loss=LOSS)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    model.prune(0.5)
    model.compile(keras.optimizers.Adam(1e-3), loss=LOSS)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    model.recalibrate_batch_norm(x)
    model.end_task()
    expected = _outputs(model, "t1", probe)
    x, y, classes = task_data[1]
    model.add_task("t2", num_classes=classes)
    model.compile(optimizer, loss=LOSS)
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    return model, expected


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fused_update_keeps_earlier_tasks_bit_identical(
        name, trunk, task_data, probe):
    before = trunk.layers[0].kernel.numpy().copy()
    model, expected = _two_tasks(trunk, task_data, probe, OPTIMIZERS[name](),
                                 fused=True)
    assert not np.array_equal(before, model.trunk.layers[0].kernel.numpy())
    np.testing.assert_array_equal(_outputs(model, "t1", probe), expected,
                                  err_msg="task 't1' changed")


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fused_update_computes_the_uncompiled_update(name, trunk, task_data,
                                                     probe):
    # From the same state, one step each: the same gradients go into the
    # compiled and the uncompiled update. (Over many steps the two drift
    # apart: the conv bias before batch norm has a gradient of rounding
    # noise, which Adam scales up to full steps.)
    fused, _ = _two_tasks(trunk, task_data, probe, OPTIMIZERS[name](),
                          fused=True)
    plain = pn.PackNetModel.from_config(fused.get_config())
    plain.fused_update = False
    plain.set_weights(fused.get_weights())
    x, y, _ = task_data[1]
    start = [w.numpy() for w in fused.weights]
    for model in (fused, plain):
        model.compile(OPTIMIZERS[name](), loss=LOSS)
        model.train_on_batch(x[:16], y[:16])
    for a, b in zip(fused.weights, plain.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6,
                                   atol=1e-7, err_msg=a.path)
    assert any(not np.array_equal(w.numpy(), s)
               for w, s in zip(fused.weights, start))


class HostSGD(keras.optimizers.SGD):
    """SGD whose step runs a host (NumPy) function: XLA cannot compile it."""

    def update_step(self, gradient, variable, learning_rate):
        step = tf.numpy_function(lambda g: g, [gradient], gradient.dtype)
        step.set_shape(gradient.shape)
        self.assign_sub(variable, step * tf.cast(learning_rate,
                                                 variable.dtype))


def test_an_optimizer_xla_cannot_compile_gets_the_fix_and_it_works(
        trunk, task_data, probe):
    x, y, classes = task_data[0]
    model = pn.PackNetModel(trunk, max_tasks=2)
    model.add_task("t1", num_classes=classes)
    model.compile(HostSGD(1e-2), loss=LOSS)
    with pytest.raises(pn.FusedUpdateError,
                       match=r"(?s)could not compile this one \(HostSGD\)"
                             r".*PyFunc.*fused_update = False"):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    with pytest.raises(pn.FusedUpdateError, match="fused_update"):
        model.train_on_batch(x[:16], y[:16])
    # The fix the message names.
    model.fused_update = False
    model.compile(HostSGD(1e-2), loss=LOSS)
    before = model.trunk.layers[0].kernel.numpy().copy()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert not np.array_equal(before, model.trunk.layers[0].kernel.numpy())


def test_fused_update_is_configured_saved_and_validated(trunk, tmp_path):
    model = pn.PackNetModel(trunk, max_tasks=2)
    assert model.fused_update is True and model._fuses_update()
    plain = pn.PackNetModel(trunk, max_tasks=2, fused_update=False)
    assert plain.get_config()["fused_update"] is False
    path = tmp_path / "plain.keras"
    plain.save(path)
    assert keras.saving.load_model(path).fused_update is False
    # Files saved before the option load with the default.
    config = model.get_config()
    del config["fused_update"]
    assert pn.PackNetModel.from_config(config).fused_update is True
    with pytest.raises(TypeError, match=r"fused_update: expected True or "
                                        r"False\. Received: 'yes'"):
        pn.PackNetModel(trunk, max_tasks=2, fused_update="yes")


def test_no_fused_update_under_a_distribution_strategy(trunk):
    # The optimizer's cross-replica update cannot run inside XLA.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = pn.PackNetModel(
            keras.Sequential([keras.Input((4,)), layers.PackedDense(3)]),
            max_tasks=2)
        assert model.fused_update is True
        assert not model._fuses_update()
    assert model._fuses_update()
