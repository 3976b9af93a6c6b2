"""`prune(fraction, keep=...)`: kernels a task keeps whole, read by later
tasks (depthwise kernels of a MobileNet; README, "Batch norm after
pruning")."""

import keras
import numpy as np
import pytest
from cli_support import make_npz_tasks, run_cli, tiny_config, write_config
from conftest import conv_bn_trunk

import packnet_tf as pn
from packnet_tf import layers
from packnet_tf.core import planning
from packnet_tf.training import phases

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _model():
    keras.utils.set_random_seed(0)
    model = pn.PackNetModel(conv_bn_trunk(), max_tasks=3)
    model.add_task("a", num_classes=2)
    return model


def test_kept_kernels_lose_nothing_and_the_others_their_exact_share():
    model = _model()
    owned = model.owned_counts()
    freed = model.prune(0.5, keep=["dw/*"])
    assert freed == {"conv/kernel": round(0.5 * owned["conv/kernel"]),
                     "dw/depthwise_kernel": 0,
                     "dense/kernel": round(0.5 * owned["dense/kernel"])}
    assert model.owned_counts()["dw/depthwise_kernel"] == owned[
        "dw/depthwise_kernel"]


def test_a_later_task_reads_a_kept_layer_and_trains_the_rest(task_data):
    model = _model()
    x, y, _ = task_data[0]
    model.compile("adam", LOSS)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    model.prune(0.5, keep=["*/depthwise_kernel"])
    model.recalibrate_batch_norm(x)
    model.end_task()
    assert model.capacity().full_layers() == ["dw"]
    probe = task_data[2][0][:6]
    first = keras.ops.convert_to_numpy(model(probe, training=False))
    x2, y2, classes = task_data[1]
    result = pn.train_task(model, "b", (x2, y2), num_classes=classes,
                           epochs=1, prune_fraction=0.5, batch_size=16,
                           verbose=0)
    owned = model.owned_counts()
    assert owned["dw/depthwise_kernel"] == 0 and owned["conv/kernel"] > 0
    assert result.task.state == "frozen"
    model.use_task("a")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model(probe, training=False)), first)
    assert set(model.verify().values()) == {0.0}


@pytest.mark.parametrize("keep, error, match", [
    (["nothing*"], ValueError, "matches no packed kernel"),
    ("dw/*", TypeError, "list of patterns"),
    ([3], TypeError, "list of patterns"),
])
def test_bad_keep_changes_nothing(keep, error, match):
    model = _model()
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(error, match=match):
        model.prune(0.5, keep=keep)
    assert model.active_task.state == "training"
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, new.numpy())


def test_recipe_keeps_only_with_a_one_shot_prune():
    assert phases.Recipe(prune_keep=["dw/*"]).prune_keep == ("dw/*",)
    assert phases.Recipe(prune_keep=["dw/*"],
                         prune_fraction="auto").prune_keep == ("dw/*",)
    with pytest.raises(ValueError, match="does not combine with `gradual`"):
        phases.Recipe(prune_keep=["dw/*"], gradual={"end_step": 2})
    # Nothing kept is what gradual pruning does.
    assert phases.Recipe(prune_keep=[], gradual={"end_step": 2}
                         ).prune_keep == ()
    with pytest.raises(ValueError, match="list of patterns"):
        phases.Recipe(prune_keep="dw/*")


def test_default_keep_names_only_depthwise_kernels_present():
    assert planning.DEFAULT_PRUNE_KEEP == ("*/depthwise_kernel",)
    assert planning.default_keep(["conv/kernel", "dw/depthwise_kernel"]) == (
        "*/depthwise_kernel",)
    assert planning.default_keep(["conv/kernel", "dense/kernel"]) == ()


def _owned_fractions(model, task_id=1):
    """`{"layer/kernel": share the task owns}` of every packed kernel."""
    return {key: float(np.mean(owner.numpy() == task_id))
            for key, _, owner in model._kernels()}


@pytest.mark.parametrize("prune_keep, dw_owned", [
    (None, 1.0),                      # the default: depthwise kept whole
    ([], 0.5),                        # every kernel pruned
    (["conv/kernel"], 0.5),           # what is named, only
])
def test_train_task_keeps_depthwise_kernels_by_default(task_data, prune_keep,
                                                       dw_owned):
    keras.utils.set_random_seed(0)
    model = pn.PackNetModel(conv_bn_trunk(), max_tasks=2)
    x, y, classes = task_data[0]
    pn.train_task(model, "a", (x, y), num_classes=classes, epochs=1,
                  finetune_epochs=1, prune_fraction=0.5,
                  prune_keep=prune_keep, verbose=0)
    owned = _owned_fractions(model)
    assert owned["dw/depthwise_kernel"] == pytest.approx(dw_owned, abs=0.02)
    conv = 1.0 if prune_keep == ["conv/kernel"] else 0.5
    assert owned["conv/kernel"] == pytest.approx(conv, abs=0.02)
    assert owned["dense/kernel"] == pytest.approx(0.5, abs=0.01)


def test_a_network_without_depthwise_kernels_is_pruned_everywhere(task_data):
    keras.utils.set_random_seed(0)
    trunk = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Flatten(),
                              layers.PackedDense(8, name="dense")])
    model = pn.PackNetModel(trunk, max_tasks=2)
    x, y, classes = task_data[0]
    pn.train_task(model, "a", (x, y), num_classes=classes, epochs=1,
                  finetune_epochs=1, prune_fraction=0.5, verbose=0)
    assert _owned_fractions(model) == {"dense/kernel": 0.5}


@pytest.mark.parametrize("value, says", [
    (["nothing*"], "prune_keep: The `keep` pattern 'nothing*' matches no"),
    ("dw", "prune_keep: expected a list of patterns"),
])
def test_a_bad_prune_keep_is_a_config_error(tmp_path, value, says):
    make_npz_tasks(tmp_path)
    config = tiny_config(tmp_path)
    config["tasks"][0]["prune_keep"] = value
    code, _, err = run_cli("train", write_config(tmp_path / "run.yaml",
                                                 config))
    assert code == 2
    assert says in err


@pytest.mark.slow
def test_a_run_resumed_with_a_new_task_after_a_kept_layer(tmp_path):
    """A task that kept a layer whole leaves it full; a later run adding a
    task is not refused for it (the new task reads that layer and trains
    the others), as `add_task` allows. Found by pretrained-3 with
    `prune_keep: ["*/depthwise_kernel"]`."""
    make_npz_tasks(tmp_path, tasks=(("a", 2), ("b", 3)))
    config = tiny_config(tmp_path, tasks=(("a", 2),), max_tasks=2)
    config["network"]["conv"] = [4]
    config["defaults"].update(prune_fraction=0.5, epochs=1,
                              prune_keep=["conv1/kernel"])
    code, _, err = run_cli("train", write_config(tmp_path / "run.yaml",
                                                 config), "--quiet")
    assert code == 0, err
    config["tasks"].append({"name": "b", "data": "b.npz"})
    code, _, err = run_cli("train", write_config(tmp_path / "run.yaml",
                                                 config), "--quiet")
    assert code == 0, err
    model = keras.saving.load_model(tmp_path / "out" / "model.keras")
    assert [t.state for t in model.tasks] == ["frozen", "frozen"]
    assert model.capacity().full_layers() == ["conv1"]
