"""prune_fraction="auto": the largest fraction within the accuracy tolerance."""

import keras
import numpy as np
import pytest

import packnet_tf as pn
from packnet_tf.training import auto_prune, phases

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _weights(model):
    return [keras.ops.convert_to_numpy(w).copy() for w in model.weights]


def _trained(trunk, task_data):
    model = pn.PackNetModel(trunk, max_tasks=2)
    x, y, classes = task_data[0]
    model.add_task("a", num_classes=classes)
    model.compile("adam", LOSS)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    return model


def test_picks_the_largest_fraction_within_tolerance_and_undoes_trials(
        trunk, task_data):
    model = _trained(trunk, task_data)
    start = sum(model.owned_counts().values())
    before = _weights(model)

    def accuracy():  # a constructed task: loses 2 points per 100% pruned
        pruned = 1 - sum(model.owned_counts().values()) / start
        return 0.9 - 0.02 * pruned

    recoveries = []
    result = auto_prune.choose_fraction(
        model, accuracy, lambda: recoveries.append(1), tolerance=0.005)
    # 0.3 would lose 0.6 points, 0.2 loses 0.4: the largest within 0.5.
    assert result.fraction == 0.2
    assert [f for f, _ in result.trials] == [0.9, 0.8, 0.7, 0.6, 0.5, 0.4,
                                             0.3, 0.2]
    assert len(recoveries) == len(result.trials)
    assert result.unpruned_accuracy == pytest.approx(0.9)
    for fraction, trial in result.trials:
        within = result.unpruned_accuracy - trial <= 0.005
        assert within == (fraction <= result.fraction)  # never past it
    # Every trial was undone: weights, owners and the task's state.
    for a, b in zip(before, _weights(model)):
        np.testing.assert_array_equal(a, b)
    assert model.active_task.state == "training"
    assert sum(model.owned_counts().values()) == start


def test_nothing_within_tolerance_prunes_nothing(trunk, task_data):
    model = _trained(trunk, task_data)
    start = sum(model.owned_counts().values())

    def accuracy():
        return sum(model.owned_counts().values()) / start  # any prune hurts

    result = auto_prune.choose_fraction(model, accuracy, lambda: None,
                                        tolerance=0.0, candidates=[0.5, 0.1])
    assert result.fraction == 0.0 and len(result.trials) == 2


def _auto_run(trunk_fn, task_data):
    keras.utils.set_random_seed(0)
    model = pn.PackNetModel(trunk_fn(), max_tasks=2)
    x, y, classes = task_data[0]
    result = pn.train_task(
        model, "a", (x[:32], y[:32]), num_classes=classes, epochs=1,
        batch_size=16, prune_fraction="auto", auto_tolerance=0.05,
        auto_candidates=[0.9, 0.5, 0.2], validation_data=(x[32:], y[32:]),
        verbose=0)
    return model, result


def test_train_task_auto_is_deterministic_and_prunes_the_choice(task_data):
    from conftest import conv_bn_trunk

    first, a = _auto_run(conv_bn_trunk, task_data)
    second, b = _auto_run(conv_bn_trunk, task_data)
    assert a.auto == b.auto
    assert a.auto.fraction in (0.0, 0.9, 0.5, 0.2)
    for w1, w2 in zip(_weights(first), _weights(second)):
        np.testing.assert_array_equal(w1, w2)
    # The chosen fraction of every kernel but the depthwise one, which the
    # trials and the prune keep whole by default.
    owners = {f"{layer.name}/{name}": o.numpy()
              for layer in first.trunk.layers
              for name, _, o in getattr(layer, "packed_kernels", list)()}
    dw = owners.pop("dw/depthwise_kernel")
    assert np.all(dw == 1)
    owned = sum(np.sum(o == 1) for o in owners.values())
    total = sum(o.size for o in owners.values())
    assert owned == pytest.approx(total * (1 - a.auto.fraction), abs=3)
    assert first.tasks[0].state == "frozen"


def test_auto_needs_validation_data_and_no_schedule(trunk, task_data):
    model = pn.PackNetModel(trunk, max_tasks=2)
    x, y, classes = task_data[0]
    with pytest.raises(ValueError, match="pass `validation_data` \\(held "
                                         "out from training, not the test"):
        pn.train_task(model, "a", (x, y), num_classes=classes,
                      prune_fraction="auto", verbose=0)
    assert model.tasks == []
    with pytest.raises(ValueError, match="does not combine with `gradual`"):
        phases.Recipe(prune_fraction="auto", gradual={"end_step": 2})
    with pytest.raises(ValueError, match="`auto_tolerance` to be a number"):
        phases.Recipe(prune_fraction="auto", auto_tolerance=2)
    with pytest.raises(ValueError, match="`auto_candidates` to be a "):
        phases.Recipe(prune_fraction="auto", auto_candidates=[1.5])


@pytest.mark.slow
def test_the_run_config_prunes_by_held_out_accuracy(tmp_path):
    import json

    from cli_support import (fingerprints, make_npz_tasks, run_subprocess,
                             tiny_config, write_config)

    from packnet_tf.io import checkpoint

    make_npz_tasks(tmp_path, tasks=(("a", 2), ("b", 3)))
    config = tiny_config(tmp_path, tasks=(("a", 2), ("b", 3)))
    config["defaults"].update(epochs=2, prune_fraction=0.5)
    config["tasks"][0].update(prune_fraction="auto", auto_tolerance=0.1,
                              auto_candidates=[0.9, 0.6, 0.3],
                              auto_holdout=4)
    outputs = []
    for run in ("one", "two"):
        path = write_config(tmp_path / f"{run}.yaml",
                            dict(config, model=f"{run}/model.keras"))
        # A fresh process: --deterministic sets TensorFlow's op
        # determinism for the whole process (it would turn XLA off in
        # later tests here).
        done = run_subprocess("train", path, "--quiet", "--deterministic")
        code, out, err = done.returncode, done.stdout, done.stderr
        assert code == 0, out + err
        assert "prune auto (within 0.1 of the accuracy on 1 in 4" in out
        outputs.append(out)
    record = json.loads((tmp_path / "one" / "model.run.json").read_text())
    auto = record["auto_prune"]["a"]
    assert auto["tolerance"] == 0.1
    assert [t[0] for t in auto["trials"]][-1] == auto["fraction"] or (
        auto["fraction"] == 0.0)
    for fraction, accuracy in auto["trials"]:
        assert (auto["unpruned_accuracy"] - accuracy <= 0.1) == (
            fraction == auto["fraction"])
    assert f"auto     prune fraction {auto['fraction']:.0%}" in outputs[0]
    model = checkpoint.load_model(tmp_path / "one" / "model.keras")
    owners = [o.numpy() for layer in model.trunk.layers
              for _, _, o in getattr(layer, "packed_kernels", list)()]
    owned_a = sum(int((o == 1).sum()) for o in owners)
    total = sum(o.size for o in owners)
    assert owned_a == pytest.approx(total * (1 - auto["fraction"]), abs=2)
    # Deterministic: the second run chose and trained the same.
    assert fingerprints(tmp_path / "one" / "model.keras") == fingerprints(
        tmp_path / "two" / "model.keras")


@pytest.mark.parametrize("key, value, match", [
    ("auto_tolerance", 1.5, "`auto_tolerance` to be a number in [0, 1)"),
    ("auto_candidates", [0.5, 1.0], "`auto_candidates` to be a non-empty"),
    ("auto_holdout", 1, "expected an int >= 2"),
])
def test_bad_auto_settings_name_the_key(tmp_path, key, value, match):
    from cli_support import make_npz_tasks, run_cli, tiny_config, write_config

    make_npz_tasks(tmp_path)
    config = tiny_config(tmp_path)
    config["tasks"][0].update(prune_fraction="auto", **{key: value})
    path = write_config(tmp_path / "bad.yaml", config)
    code, _, err = run_cli("train", path)
    assert code == 2
    assert f"{path}: tasks[0].{key}: " in err and match in err
