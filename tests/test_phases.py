"""Phases of a task: each starts with fresh optimizer state; a later phase of
the same task keeps the traced train step (`phases.restart_optimizer`)."""

import keras
import numpy as np
from conftest import conv_bn_trunk

import packnet_tf as pn
from packnet_tf.training import phases


def _weights(model):
    return [keras.ops.convert_to_numpy(w).copy() for w in model.weights]


def _run(task_data, compile_each_phase):
    """Trains two tasks phase by phase; returns the model's weights."""
    keras.utils.set_random_seed(0)
    model = pn.PackNetModel(conv_bn_trunk(), max_tasks=2)
    traced = []
    for index, (x, y, classes) in enumerate(task_data[:2]):
        recipe = phases.Recipe(epochs=1, prune_fraction=0.5,
                               finetune_epochs=1, optimizer="adam",
                               learning_rate=1e-2)
        model.add_task(f"t{index}", num_classes=classes)

        def fit(epochs, callbacks):
            history = model.fit(x, y, batch_size=16, epochs=epochs,
                                shuffle=False, verbose=0, callbacks=callbacks)
            traced.append(model.train_function)
            return history

        compile = ((lambda rate: phases.compile_fresh(model, recipe, rate))
                   if compile_each_phase else None)
        phases.train(model, recipe, fit, compile)
        phases.prune(model, recipe)
        phases.finetune(model, recipe, fit, compile)
        phases.end(model, recipe, (x, y))
    return model, _weights(model), traced


def test_restarted_optimizer_trains_exactly_as_a_fresh_compile(task_data):
    # Mutation check: with `restart_optimizer`'s assigns removed (the
    # optimizer keeps its moments and step), this test and the next fail.
    _, restarted, traced = _run(task_data, compile_each_phase=False)
    _, compiled, traced_anew = _run(task_data, compile_each_phase=True)
    for a, b in zip(restarted, compiled):
        np.testing.assert_array_equal(a, b)
    # Fine-tuning reused the train phase's traced step, per task; compiling
    # each phase traces anew.
    assert traced[1] is traced[0] and traced[3] is traced[2]
    assert traced[2] is not traced[1]
    assert traced_anew[1] is not traced_anew[0]


def _trained_one_epoch(task_data):
    """A model whose first task trained one epoch after `compile_fresh`."""
    x, y, classes = task_data[0]
    model = pn.PackNetModel(conv_bn_trunk(), max_tasks=2)
    model.add_task("a", num_classes=classes)
    recipe = phases.Recipe(epochs=1, prune_fraction=0.5, optimizer="adam",
                           learning_rate=1e-2)
    phases.compile_fresh(model, recipe, 1e-2)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    return model, recipe, (x, y)


def test_restart_resets_every_optimizer_variable_and_sets_the_rate(
        task_data):
    model, recipe, (x, y) = _trained_one_epoch(task_data)
    optimizer = model.optimizer
    assert int(optimizer.iterations) > 0
    phases.restart_optimizer(model, recipe, 1e-3)
    assert model.optimizer is optimizer
    assert int(optimizer.iterations) == 0
    np.testing.assert_allclose(float(optimizer.learning_rate), 1e-3)
    for variable in optimizer.variables:
        if "learning_rate" not in variable.path and (
                "iteration" not in variable.path):
            assert not np.any(keras.ops.convert_to_numpy(variable))


def test_a_users_compile_or_another_task_compiles_fresh(task_data):
    model, recipe, (x, y) = _trained_one_epoch(task_data)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    phases.restart_optimizer(model, recipe, 1e-3)
    # Not the user's SGD, reset: a fresh Adam, compiled.
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert model.train_function is None

    phases.compile_fresh(model, recipe, 1e-2)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    model.prune(0.5)
    model.recalibrate_batch_norm(x)
    model.end_task()
    model.add_task("b", num_classes=task_data[1][2])
    first = model.optimizer
    phases.restart_optimizer(model, recipe, 1e-2)
    assert model.optimizer is not first
