"""Where a new task's free weights start: zero, previous values, or drawn."""

import keras
import numpy as np
import pytest

import packnet_tf as pn
from packnet_tf import layers
from packnet_tf.io import checkpoint

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _kernels(model):
    """`{"layer/kernel": (values, owners)}` as NumPy arrays."""
    return {
        f"{layer.name}/{name}": (kernel.numpy().copy(), owner.numpy().copy())
        for layer in model.trunk.layers
        for name, kernel, owner in getattr(layer, "packed_kernels", list)()
    }


def _first_task(model, data):
    x, y, classes = data
    model.add_task("a", num_classes=classes)
    model.compile("adam", LOSS)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    before_prune = _kernels(model)
    model.prune(0.5)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    model.recalibrate_batch_norm(x)
    model.end_task()
    return before_prune


def _outputs(model, task, probe):
    model.use_task(task)
    return keras.ops.convert_to_numpy(model(probe, training=False))


def _separable_trunk():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((6, 6, 2)),
        layers.PackedSeparableConv2D(4, 3, name="sep"),
        keras.layers.Flatten(),
        layers.PackedDense(5, name="dense"),
    ])


@pytest.mark.parametrize("free_init", ["zero", "previous", "initializer"])
@pytest.mark.parametrize("which", ["conv_bn", "separable"])
def test_each_start_keeps_earlier_tasks_and_starts_as_documented(
        trunk, task_data, probe, free_init, which):
    base = trunk if which == "conv_bn" else _separable_trunk()
    model = pn.PackNetModel(base, max_tasks=3, free_init=free_init)
    assert len(model._released) == (
        len(_kernels(model)) if free_init == "previous" else 0)
    before_prune = _first_task(model, task_data[0])
    frozen = _kernels(model)
    outputs_a = _outputs(model, "a", probe)
    keras.utils.set_random_seed(7)
    model.add_task("b", num_classes=3)
    started = _kernels(model)
    for key, (values, owners) in started.items():
        claimed = frozen[key][1] == 0
        assert np.all(owners[claimed] == 2) and np.all(owners[~claimed] == 1)
        # Task a's entries: bit for bit what they were.
        np.testing.assert_array_equal(values[~claimed],
                                      frozen[key][0][~claimed])
        if free_init == "zero":
            assert np.all(values[claimed] == 0)
        elif free_init == "previous":
            # The value each weight had when `prune` freed it.
            np.testing.assert_array_equal(values[claimed],
                                          before_prune[key][0][claimed])
            assert np.count_nonzero(values[claimed]) == claimed.sum()
        else:
            assert np.count_nonzero(values[claimed]) == claimed.sum()
            assert not np.array_equal(values[claimed],
                                      before_prune[key][0][claimed])
    np.testing.assert_array_equal(_outputs(model, "a", probe), outputs_a)
    x, y, _ = task_data[1]
    model.use_task("b")
    model.compile("adam", LOSS)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    model.prune(0.5)
    model.recalibrate_batch_norm(x)
    model.end_task()
    np.testing.assert_array_equal(_outputs(model, "a", probe), outputs_a)
    assert model.verify() == {"a": 0.0, "b": 0.0}


def test_initializer_draws_are_deterministic_under_a_seed(trunk, task_data):
    draws = []
    for _ in range(2):
        keras.utils.set_random_seed(0)
        model = pn.PackNetModel(layers_trunk(), max_tasks=2,
                                free_init="initializer")
        _first_task(model, task_data[0])
        keras.utils.set_random_seed(3)
        model.add_task("b", num_classes=3)
        draws.append(_kernels(model))
    for key in draws[0]:
        np.testing.assert_array_equal(draws[0][key][0], draws[1][key][0])


def layers_trunk():
    from conftest import conv_bn_trunk

    return conv_bn_trunk()


def test_previous_values_survive_a_save_between_tasks(trunk, task_data,
                                                       tmp_path):
    keras.utils.set_random_seed(0)
    model = pn.PackNetModel(trunk, max_tasks=3, free_init="previous")
    before_prune = _first_task(model, task_data[0])
    path = tmp_path / "m.keras"
    checkpoint.save_model(model, path)
    loaded = checkpoint.load_model(path)
    assert loaded.free_init == "previous"
    loaded.add_task("b", num_classes=3)
    for key, (values, owners) in _kernels(loaded).items():
        claimed = owners == 2
        np.testing.assert_array_equal(values[claimed],
                                      before_prune[key][0][claimed])


def test_a_bad_free_init_says_what_is_allowed(trunk):
    with pytest.raises(ValueError, match=r"`free_init` to be one of "
                                         r"\['zero', 'previous', "
                                         r"'initializer'\].*'glorot'"):
        pn.PackNetModel(trunk, max_tasks=2, free_init="glorot")


def test_the_run_config_builds_with_free_init(tmp_path):
    from cli_support import make_npz_tasks, run_cli, tiny_config, write_config

    from packnet_tf.cli import schema
    from packnet_tf.core.planning import FREE_INITS

    assert schema.FREE_INITS == FREE_INITS
    make_npz_tasks(tmp_path, tasks=(("a", 2), ("b", 3)))
    config = tiny_config(tmp_path, tasks=(("a", 2), ("b", 3)))
    config["network"]["free_init"] = "previous"
    config["defaults"].update(epochs=1, prune_fraction=0.5)
    path = write_config(tmp_path / "run.yaml", config)
    code, out, err = run_cli("train", path, "--quiet")
    assert code == 0, out + err
    model = checkpoint.load_model(tmp_path / "out" / "model.keras")
    assert model.free_init == "previous" and len(model._released) == 2
    assert model.verify() == {"a": 0.0, "b": 0.0}
    # The network a model file was built with cannot change on resume.
    config["network"]["free_init"] = "zero"
    path = write_config(tmp_path / "run.yaml", config)
    code, _, err = run_cli("train", path)
    assert code == 2 and "network: differs from the network" in err


def test_previous_is_the_default_and_old_files_load_as_zero(trunk):
    model = pn.PackNetModel(trunk, max_tasks=2)
    assert model.free_init == "previous" and len(model._released) == 3
    config = model.get_config()
    assert config["free_init"] == "previous"
    del config["free_init"]  # a file written before the option existed
    old = pn.PackNetModel.from_config(config)
    assert old.free_init == "zero" and old._released == []
