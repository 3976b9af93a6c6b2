"""Gradual pruning on tfmot schedules: exact counts, the environment kept."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import packnet_tf as pn
from packnet_tf import layers
from packnet_tf.layers.ownership import count_to_keep
from packnet_tf.training.gradual import (LEGACY_KERAS_ENV, GradualPruning,
                                         polynomial_decay,
                                         schedule_from_config)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def trunk():
    # Kernels of 25 and 15 weights: at sparsity 0.9 `count_to_keep` keeps
    # 2 and 1 (1 - 0.9 is just under 0.1); with the schedule's float32
    # sparsity (0.89999998) it would keep 3 and 2.
    return keras.Sequential([
        keras.Input((5,)),
        layers.PackedDense(5, activation="relu", name="fc1"),
        layers.PackedDense(3, name="fc2"),
    ])


@pytest.fixture
def model():
    keras.utils.set_random_seed(0)
    model = pn.PackNetModel(trunk(), max_tasks=3)
    model.add_task("a", num_classes=2)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    return model


def data(seed=0, count=16):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(count, 5)).astype("float32"),
            rng.integers(0, 2, size=count))


def fit(model, callback, epochs=1, batch_size=2, seed=0):
    x, y = data(seed)
    return model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0,
                     shuffle=False, callbacks=[callback])


def test_polynomial_decay_reaches_final_sparsity_exactly(model):
    schedule = polynomial_decay(0.9, end_step=6, frequency=2)
    callback = GradualPruning(schedule)
    fit(model, callback)  # 8 steps
    start = callback.start_counts
    assert start == {"fc1/kernel": 25, "fc2/kernel": 15}
    assert model.owned_counts() == {
        key: count_to_keep(n, 0.9) for key, n in start.items()}
    assert model.owned_counts() == {"fc1/kernel": 2, "fc2/kernel": 1}
    # tfmot's steps: from 1, every `frequency` from begin_step.
    expected = [float(schedule(np.int64(s))[1]) for s in (2, 4)] + [0.9]
    assert [s for s, _ in callback.history] == [2, 4, 6]
    np.testing.assert_allclose([v for _, v in callback.history], expected,
                               rtol=0, atol=0)
    assert callback.reached_final
    # Freed weights are zero and free, and stayed so while training.
    for layer in model.trunk.layers:
        for _, kernel, owner in layer.packed_kernels():
            assert np.all(kernel.numpy()[owner.numpy() == 0] == 0)


def test_each_pruning_step_keeps_the_scheduled_count(model):
    schedule = polynomial_decay(0.8, begin_step=1, end_step=5, frequency=1,
                                power=1)
    seen = {}

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen[batch + 1] = self.model.owned_counts()

    pruning = GradualPruning(schedule)
    x, y = data()
    # Record runs after the pruning callback in the same batch hook.
    model.fit(x, y, batch_size=2, verbose=0, callbacks=[pruning, Record()])
    for step, sparsity in pruning.history:
        assert seen[step] == {
            key: count_to_keep(n, sparsity)
            for key, n in pruning.start_counts.items()}, step
    assert [s for s, _ in pruning.history] == [1, 2, 3, 4, 5]


def test_end_step_off_the_frequency_grid_still_reaches_final(model):
    # tfmot prunes at 3 and 6 only and stops short of 0.6; so do we, then
    # finish at end_step 7.
    callback = GradualPruning(polynomial_decay(0.6, end_step=7, frequency=3))
    fit(model, callback)
    assert [s for s, _ in callback.history] == [3, 6, 7]
    assert model.owned_counts() == {
        key: count_to_keep(n, 0.6)
        for key, n in callback.start_counts.items()}


def test_constant_sparsity_from_its_config(model):
    callback = GradualPruning({"class_name": "ConstantSparsity",
                               "config": {"target_sparsity": 0.5,
                                          "begin_step": 3,
                                          "frequency": 100}})
    fit(model, callback)
    assert callback.history == [(3, 0.5)]
    assert model.owned_counts() == {"fc1/kernel": 12, "fc2/kernel": 8}
    assert GradualPruning.from_config(callback.get_config()).get_config() == (
        callback.get_config())


def test_steps_go_on_across_fits_and_a_short_run_warns(model):
    callback = GradualPruning(polynomial_decay(0.5, end_step=12, frequency=4))
    with pytest.warns(UserWarning, match=r"stopped at step 8, before the "
                                         r"schedule's step 12: task 'a' is "
                                         r"at sparsity 0\.\d+, not 0\.5"):
        fit(model, callback)
    fit(model, callback)  # steps 9..16
    assert [s for s, _ in callback.history] == [4, 8, 12]
    assert callback.start_counts == {"fc1/kernel": 25, "fc2/kernel": 15}
    assert model.owned_counts() == {"fc1/kernel": 12, "fc2/kernel": 8}


def test_callback_misuse_is_a_clear_error(model):
    plain = keras.Sequential([keras.Input((5,)), keras.layers.Dense(2)])
    plain.compile("adam", "mse")
    x, _ = data()
    schedule = polynomial_decay(0.5, end_step=2, frequency=1)
    with pytest.raises(TypeError, match="prunes a packnet_tf.PackNetModel"):
        plain.fit(x, np.zeros((16, 2)), verbose=0,
                  callbacks=[GradualPruning(schedule)])
    callback = GradualPruning(schedule)
    fit(model, callback)
    model.end_task()
    with pytest.raises(pn.TaskStateError, match="state=frozen"):
        callback.on_train_begin()
    model.add_task("b", num_classes=2)
    callback.set_model(model)
    with pytest.raises(ValueError, match="pruned task 'a'; the active task "
                                         "is now 'b'"):
        callback.on_train_begin()


@pytest.mark.parametrize(
    "config, error, match",
    [
        ({"class_name": "Exponential", "config": {}}, ValueError,
         r"'class_name': one of \('PolynomialDecay', 'ConstantSparsity'\)"),
        ({"class_name": "PolynomialDecay",
          "config": {"initial_sparsity": 0.0, "final_sparsity": 1.0,
                     "begin_step": 0, "end_step": 4}},
         ValueError, r"Bad PolynomialDecay config .*final_sparsity must be "
                     r"in range \[0,1\)"),
        (0.5, TypeError, r"PruningSchedule or its config dict.*Received: "
                         r"float"),
    ],
)
def test_bad_schedules(config, error, match):
    with pytest.raises(error, match=match):
        schedule_from_config(config)


def _task_outputs(model, name, x):
    model.use_task(name)
    return keras.ops.convert_to_numpy(model(x, training=False))


def test_train_task_prunes_gradually_to_the_planned_fraction():
    keras.utils.set_random_seed(0)
    model = pn.PackNetModel(trunk(), max_tasks=3)
    x, y = data()
    probe = data(seed=5)[0]
    env_before = os.environ.get(LEGACY_KERAS_ENV)
    first = pn.train_task(model, "a", (x, y), num_classes=2, epochs=1,
                          prune_fraction="equal", finetune_epochs=1,
                          batch_size=4, gradual={"end_step": 3,
                                                 "frequency": 1},
                          verbose=0)
    # "equal" over max_tasks=3: the first task prunes 2/3 of its weights.
    keep = {"fc1/kernel": count_to_keep(25, 2 / 3),
            "fc2/kernel": count_to_keep(15, 2 / 3)}
    assert first.freed == {k: n - keep[k] for k, n in
                           {"fc1/kernel": 25, "fc2/kernel": 15}.items()}
    task_a = _task_outputs(model, "a", probe)
    second = pn.train_task(
        model, "b", (x, y), num_classes=2, epochs=1, finetune_epochs=1,
        batch_size=4, prune_fraction=None,
        gradual=polynomial_decay(0.5, end_step=2, frequency=1), verbose=0)
    free_for_b = {k: n - keep[k] for k, n in
                  {"fc1/kernel": 25, "fc2/kernel": 15}.items()}
    assert second.freed == {
        k: n - count_to_keep(n, 0.5) for k, n in free_for_b.items()}
    np.testing.assert_array_equal(_task_outputs(model, "a", probe), task_a)
    assert os.environ.get(LEGACY_KERAS_ENV) == env_before


def test_train_task_rejects_bad_gradual_settings_before_adding():
    keras.utils.set_random_seed(0)
    model = pn.PackNetModel(trunk(), max_tasks=2)
    x, y = data()
    cases = [
        (dict(gradual={"end_step": 2, "speed": 1}),
         r"dict of PolynomialDecay timings with keys from \('end_step', "
         r"'begin_step'"),
        (dict(gradual={"frequency": 1}), r"end_step required"),
        (dict(gradual=polynomial_decay(0.75, end_step=2)),
         r"ends at sparsity 0.75 but prune_fraction=0.5. With a schedule "
         r"pass prune_fraction=None"),
        (dict(gradual={"end_step": 2}, finetune_epochs=0),
         r"expected `finetune_epochs` >= 1 with `gradual`"),
        (dict(gradual={"end_step": 9}, batch_size=4, finetune_epochs=2),
         r"final sparsity at step 9, but fine-tuning takes 8 steps "
         r"\(2 epochs of 4\)"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            pn.train_task(model, "a", (x, y), num_classes=2, verbose=0,
                          **kwargs)
    assert model.tasks == []


ENV_CHECK = textwrap.dedent("""
    import os, sys
    import numpy as np, keras, tensorflow as tf
    import packnet_tf as pn
    from packnet_tf import layers
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    assert "tensorflow_model_optimization" not in sys.modules
    trunk = keras.Sequential([keras.Input((4,)),
                              layers.PackedDense(6, name="fc")])
    model = pn.PackNetModel(trunk, max_tasks=2)
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    pn.train_task(model, "a", (x, np.arange(8) % 2), num_classes=2,
                  epochs=1, finetune_epochs=1, batch_size=4,
                  gradual={"end_step": 2, "frequency": 1}, verbose=0)
    assert "tensorflow_model_optimization" in sys.modules  # it was used
    assert model.owned_counts() == {"fc/kernel": 12}
    print("ENV", repr(os.environ.get("TF_USE_LEGACY_KERAS")), repr(before))
    print("TF_KERAS", tf.keras.Model.__module__)
""")


@pytest.mark.slow
@pytest.mark.parametrize("value", [None, "0"])
def test_environment_is_unchanged_after_a_gradual_run(value):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop(LEGACY_KERAS_ENV, None)
    if value is not None:
        env[LEGACY_KERAS_ENV] = value
    result = subprocess.run([sys.executable, "-c", ENV_CHECK], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"ENV {value!r} {value!r}" in result.stdout
    # tf.keras stayed Keras 3: tfmot's import did not route it to tf_keras.
    assert "TF_KERAS keras.src." in result.stdout


def test_the_config_knows_the_same_timing_keys():
    import inspect

    from packnet_tf.cli import schema
    from packnet_tf.training.gradual import TIMING_KEYS, polynomial_decay

    assert tuple(schema.GRADUAL_KEYS) == TIMING_KEYS
    assert TIMING_KEYS == tuple(
        inspect.signature(polynomial_decay).parameters)[1:]
