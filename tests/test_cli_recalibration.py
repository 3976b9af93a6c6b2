"""The `packnet-tf` runner freezes each task with the population batch-norm
statistics of its final network (issue 29); `recalibrate: false` keeps the
statistics training left."""

import keras
import numpy as np
import pytest
from cli_support import make_npz_tasks, run_cli, tiny_config, write_config
from test_recalibration import STATISTICS_TOLERANCE, _bn_inputs, _stored


def _run(folder, **defaults):
    make_npz_tasks(folder)
    config = tiny_config(folder, tasks=(("a", 2), ("b", 3)))
    # One batch of all 96 training examples: population statistics are
    # then exactly those of each batch norm's inputs on the whole split.
    config["defaults"].update(prune_fraction=0.5, epochs=2, batch_size=96,
                              **defaults)
    code, out, err = run_cli("train", write_config(folder / "run.yaml",
                                                   config), "--quiet")
    assert code == 0, err
    return keras.saving.load_model(folder / "out" / "model.keras")


def _largest_gap(model, task, x):
    model.use_task(task)
    task_id = [t.name for t in model.tasks].index(task) + 1
    gaps = []
    for (mean, variance), inputs in zip(_stored(model, task_id),
                                        _bn_inputs(model, x)):
        axes = tuple(range(inputs.ndim - 1))
        gaps.append(max(np.max(np.abs(mean - inputs.mean(axis=axes))),
                        np.max(np.abs(variance - inputs.var(axis=axes)))))
    return max(gaps)


@pytest.mark.slow
def test_each_task_is_frozen_with_population_statistics(tmp_path):
    model = _run(tmp_path)
    for task in ("a", "b"):
        x = np.load(tmp_path / f"{task}.npz")["x_train"]
        assert _largest_gap(model, task, x) <= STATISTICS_TOLERANCE, task
    assert set(model.verify().values()) == {0.0}


@pytest.mark.slow
def test_recalibrate_false_keeps_the_statistics_training_left(tmp_path):
    model = _run(tmp_path, recalibrate=False)
    x = np.load(tmp_path / "a.npz")["x_train"]
    assert _largest_gap(model, "a", x) > 1e-3


@pytest.mark.parametrize("key, value, says", [
    ("recalibrate", "yes", "recalibrate: expected true or false"),
    ("recalibrate_steps", 0, "recalibrate_steps: expected an int >= 1"),
])
def test_bad_recalibration_keys_are_config_errors(tmp_path, key, value,
                                                  says):
    config = tiny_config(tmp_path)
    config["defaults"][key] = value
    code, _, err = run_cli("train", write_config(tmp_path / "run.yaml",
                                                 config))
    assert code == 2
    assert says in err
