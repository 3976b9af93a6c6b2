"""A pretrained network as a headless base task (issue 25): converted
without a classifier, pruned without data, frozen exactly under later
tasks; in a run config as a data-less first task; and every misuse."""

import json

import keras
import numpy as np
import pytest
from cli_support import make_npz_tasks, run_cli, write_config

import packnet_tf as pn
from packnet_tf.errors import TaskStateError


def _backbone(seed=0):
    """Like `keras.applications.*(include_top=False, pooling="avg")`:
    conv, batch norm, depthwise conv, pooled; no classifier."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, padding="same", name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.ReLU(),
        keras.layers.DepthwiseConv2D(3, padding="same", name="dw"),
        keras.layers.GlobalAveragePooling2D(),
    ], name="backbone")
    bn = model.get_layer("bn")
    rng = np.random.default_rng(seed)
    bn.moving_mean.assign(rng.normal(size=4).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 2, 4).astype("float32"))
    return model


def _data(seed, n=64, classes=3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(size=(n, 8, 8, 1)).astype("float32") + y[:, None, None,
                                                             None]
    return x, y


def _base_task():
    backbone = _backbone()
    model = pn.convert(backbone, max_tasks=3, first_task="imagenet")
    return backbone, model


def test_a_backbone_without_classifier_becomes_a_headless_task():
    backbone, model = _base_task()
    task = model.active_task
    assert (task.name, task.headless, task.num_classes) == (
        "imagenet", True, None)
    x, _ = _data(0, n=4)
    # Its outputs are the backbone's features.
    np.testing.assert_allclose(model.predict(x, verbose=0),
                               backbone.predict(x, verbose=0), atol=1e-5)
    owned = sum(model.owned_counts().values())
    freed = sum(model.prune(0.5).values())
    assert freed == owned // 2 or freed == owned - owned // 2
    # No data, no recalibration: the converted statistics are kept.
    assert not model.active_task.statistics_stale
    info = model.end_task()
    assert info.finished and info.headless


def test_later_task_reads_the_frozen_base_exactly_with_adamw():
    _, model = _base_task()
    model.prune(0.5)
    model.end_task()
    kept = {k: v.copy() for k, v in _owned_values(model, 1).items()}
    x, _ = _data(0, n=8)
    model.use_task("imagenet")
    base_before = model.predict(x, verbose=0)
    model.add_task("flowers", num_classes=3)
    model.compile(keras.optimizers.AdamW(1e-2, weight_decay=0.1),
                  keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    model.fit(*_data(1), epochs=2, batch_size=16, verbose=0)
    model.recalibrate_batch_norm(_data(1)[0])
    model.end_task()
    for key, value in _owned_values(model, 1).items():
        np.testing.assert_array_equal(value, kept[key], err_msg=key)
    model.use_task("imagenet")
    np.testing.assert_array_equal(model.predict(x, verbose=0), base_before)
    assert set(model.verify().values()) == {0.0}


def _owned_values(model, task_id):
    values = {}
    for layer in model.trunk.layers:
        for name, kernel, owner in getattr(layer, "packed_kernels",
                                           list)():
            mine = owner.numpy() == task_id
            values[f"{layer.name}/{name}"] = kernel.numpy()[mine]
    return values


def test_a_headless_task_refuses_to_train_evaluate_or_export(tmp_path):
    _, model = _base_task()
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = _data(0, n=8)
    for call in (lambda: model.fit(x, y, verbose=0),
                 lambda: model.train_on_batch(x, y),
                 lambda: model.evaluate(x, y, verbose=0)):
        with pytest.raises(TaskStateError, match=r"Task 'imagenet' has no "
                           r"head: it holds a pretrained network's own "
                           r"weights"):
            call()
    model.prune(0.5)
    model.end_task()
    with pytest.raises(TaskStateError, match=r"cannot be exported"):
        pn.export.saved_model(model, tmp_path / "serving",
                              tasks="imagenet")
    with pytest.raises(TaskStateError, match="no finished task with a head"):
        pn.export.saved_model(model, tmp_path / "serving")
    with pytest.raises(ValueError, match="takes no `num_classes`"):
        model.add_task("x", num_classes=2, headless=True)


def test_a_headless_task_survives_saving(tmp_path):
    _, model = _base_task()
    model.prune(0.5)
    model.end_task()
    model.add_task("a", num_classes=3)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    model.fit(*_data(2), epochs=1, verbose=0)
    model.recalibrate_batch_norm(_data(2)[0])
    model.end_task()
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [(t.name, t.headless, t.num_classes) for t in loaded.tasks] == [
        ("imagenet", True, None), ("a", False, 3)]
    assert set(loaded.verify().values()) == {0.0}
    exported = pn.export.saved_model(loaded, tmp_path / "serving")
    assert sorted(exported) == ["a"]  # {task: its folder}


# -- in a run config ------------------------------------------------------


def _config(folder, base=None, **first):
    """A backbone file without a classifier, a data-less first task and
    one task trained on it."""
    _backbone().save(folder / "backbone.keras")
    make_npz_tasks(folder, tasks=(("a", 3),))
    return {
        "model": "out/model.keras", "seed": 1, "max_tasks": 3,
        "network": {"type": "file", "path": "backbone.keras",
                    "first_task": "imagenet"},
        "defaults": {"epochs": 1, "finetune_epochs": 1, "batch_size": 16,
                     "prune_fraction": 0.5},
        "tasks": [base or {"name": "imagenet", **first},
                  {"name": "a", "data": "a.npz"}],
    }


@pytest.mark.slow
def test_a_run_with_a_data_less_first_task(tmp_path):
    path = write_config(tmp_path / "run.yaml", _config(tmp_path))
    code, out, err = run_cli("train", path, "--quiet")
    assert code == 0, err
    model = keras.saving.load_model(tmp_path / "out" / "model.keras")
    assert [(t.name, t.state, t.headless) for t in model.tasks] == [
        ("imagenet", "frozen", True), ("a", "frozen", False)]
    report = model.capacity()
    free, imagenet, a = report.total
    # The base task keeps half of the convolution and, by default, its
    # depthwise kernel whole (`planning.DEFAULT_PRUNE_KEEP`).
    conv, dw = report.counts["conv"], report.counts["dw"]
    assert conv[1] == pytest.approx(conv.sum() / 2, abs=1)
    assert list(dw) == [0, dw.sum(), 0]
    assert a > 0 and free > 0
    record = json.loads((tmp_path / "out" / "model.run.json").read_text())
    assert record["accuracy"]["imagenet"] is None
    assert record["accuracy"]["a"] is not None
    # The accuracy matrix covers the tasks with data.
    assert record["continual_metrics"]["task_names"] == ["a"]
    code, out, err = run_cli("info", tmp_path / "out" / "model.keras")
    assert code == 0, err
    assert "imagenet" in out and "no head" in out
    code, out, err = run_cli("export", tmp_path / "out" / "model.keras",
                             "--saved-model", tmp_path / "serving")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "serving").iterdir()) == [
        "a", "models.config"]
    assert "imagenet" not in (tmp_path / "serving" / "models.config"
                              ).read_text()
    code, out, err = run_cli("export", tmp_path / "out" / "model.keras",
                             "--task", "imagenet", "--saved-model",
                             tmp_path / "serving2")
    assert code == 2 and "cannot be exported" in err
    code, out, err = run_cli("eval", tmp_path / "out" / "model.keras",
                             "--task", "imagenet", "--data",
                             tmp_path / "a.npz")
    assert code == 2 and "has no head" in err


@pytest.mark.parametrize("change, key, says", [
    ({"tasks": [{"name": "a", "data": "a.npz"}, {"name": "imagenet"}]},
     "tasks[1].data", "missing. Only the first task may leave out"),
    ({"first": {"epochs": 2}}, "tasks[0].epochs",
     "2, but the task has no `data` to train on"),
    ({"first": {"prune_fraction": "auto"}}, "tasks[0].prune_fraction",
     "pruned in one shot by a fixed fraction"),
    ({"first": {"data": "a.npz"}}, "tasks[0].data",
     "task 'imagenet' has no head"),
    ({"network": {"type": "cnn", "input_shape": [8, 8, 1], "conv": [4],
                  "dense": [8]}},
     "tasks[0].data", "must be the network's own first task"),
])
def test_data_less_task_misuse_is_one_config_error(tmp_path, change, key,
                                                   says):
    config = _config(tmp_path, **change.pop("first", {}))
    config.update(change)
    code, out, err = run_cli("train", write_config(tmp_path / "run.yaml",
                                                   config), "--quiet")
    assert code == 2, (out, err)
    assert f"{key}: " in err and says in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out" / "model.keras").exists()


def test_network_weights_are_read_from_the_config_folder(tmp_path):
    from packnet_tf.cli.config import parse_config
    from packnet_tf.cli.prepare import network_record

    config = parse_config(
        {"model": "m.keras",
         "network": {"type": "application", "name": "MobileNet",
                     "weights": "weights/w.h5"},
         "tasks": [{"name": "a", "data": "a.npz"}]},
        tmp_path / "run.yaml", tmp_path)
    assert network_record(config)["weights"] == str(
        tmp_path / "weights" / "w.h5")
    config.network["weights"] = "imagenet"
    assert network_record(config)["weights"] == "imagenet"
