"""Each bad config: one line naming file and key, exit 2, nothing trained."""

import copy
import json

import numpy as np
import pytest
from cli_support import make_npz_tasks, run_cli, tiny_config, write_config

from packnet_tf.cli import networks
from packnet_tf.io import checkpoint


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cfg")
    make_npz_tasks(folder)
    rgb = folder / "rgb.npz"
    np.savez(rgb, x_train=np.zeros((4, 8, 8, 3), "float32"),
             y_train=np.array([0, 1, 0, 1]),
             x_test=np.zeros((2, 8, 8, 3), "float32"),
             y_test=np.array([0, 1]))
    return folder


def _edit(config, path, value):
    """Sets `config[path...] = value`; `path` like ("tasks", 0, "data")."""
    target = config
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


def _bad(workdir, name, expected_key, match, edit=None, config=None):
    config = copy.deepcopy(config or tiny_config(workdir))
    if edit:
        edit(config)
    path = write_config(workdir / f"{name}.yaml", config)
    code, out, err = run_cli("train", path)
    assert code == 2, out + err
    line = err.strip()
    assert "\n" not in line, err
    prefix = f"packnet-tf train: error: {path}: {expected_key}: "
    assert line.startswith(prefix), line
    assert match in line[len(prefix):], line
    assert not (workdir / "out" / "model.keras").exists()
    return line


CASES = [
    ("unknown_top", "epoch", "unknown key",
     lambda c: _edit(c, ("epoch",), 3)),
    ("unknown_task_key", "tasks[1].epoch", "unknown key",
     lambda c: _edit(c, ("tasks", 1, "epoch"), 3)),
    ("unknown_network_key", "network.widths", "unknown key",
     lambda c: _edit(c, ("network", "widths"), [3])),
    ("unknown_data_key", "tasks[0].data.dowload", "Unknown key 'dowload'",
     lambda c: _edit(c, ("tasks", 0, "data"),
                     {"tfds": "mnist", "dowload": True})),
    ("missing_npz", "tasks[2].data", "No .npz file at",
     lambda c: _edit(c, ("tasks", 2, "data"), "nothing.npz")),
    ("missing_folder", "tasks[1].data.folder", "no such folder or file",
     lambda c: _edit(c, ("tasks", 1, "data"), {"folder": "no/such/dir"})),
    ("shape", "tasks[1].data",
     "task 'b': npz:", lambda c: _edit(c, ("tasks", 1, "data"), "rgb.npz")),
    ("label_count", "tasks[1].num_classes",
     "5, but the data of task 'b'",
     lambda c: _edit(c, ("tasks", 1, "num_classes"), 5)),
    ("duplicate", "tasks[2].name", "A task named 'a' already exists",
     lambda c: _edit(c, ("tasks", 2, "name"), "a")),
    ("bad_name", "tasks[0].name", "Expected a task name",
     lambda c: _edit(c, ("tasks", 0, "name"), "a b")),
    ("tfds_not_prepared", "tasks[0].data.tfds",
     "tfds:mnist is not prepared in",
     lambda c: _edit(c, ("tasks", 0, "data"),
                     {"tfds": "mnist", "data_dir": "empty_tfds"})),
    ("bad_plan", "defaults.prune_fraction", "one prune fraction per",
     lambda c: _edit(c, ("defaults", "prune_fraction"), [0.5, 0.5])),
    ("task_plan", "tasks[0].prune_fraction", "a task takes a number",
     lambda c: _edit(c, ("tasks", 0, "prune_fraction"), "equal")),
    ("too_few_max_tasks", "max_tasks", "fewer than the 3 tasks",
     lambda c: _edit(c, ("max_tasks",), 2)),
    ("bad_network", "network.type", "expected one of",
     lambda c: _edit(c, ("network", "type"), "transformer")),
    ("bad_epochs", "defaults.epochs", "expected an int >= 0",
     lambda c: _edit(c, ("defaults", "epochs"), -1)),
    ("bad_optimizer", "tasks[0].optimizer", "Could not interpret",
     lambda c: _edit(c, ("tasks", 0, "optimizer"), "adamm")),
    ("bad_preprocess", "tasks[0].preprocess", "Unknown preprocess",
     lambda c: _edit(c, ("tasks", 0, "preprocess"), "vgg99")),
    ("preprocess_misfit", "tasks[0].preprocess",
     "preprocess='vgg16' does not work on the trunk's input shape (8, 8, 1)",
     lambda c: _edit(c, ("tasks", 0, "preprocess"), "vgg16")),
    ("gradual_key", "defaults.gradual.speed", "unknown key",
     lambda c: _edit(c, ("defaults", "gradual"), {"end_step": 4,
                                                   "speed": 2})),
    ("gradual_no_end", "tasks[1].gradual.end_step", "missing",
     lambda c: _edit(c, ("tasks", 1, "gradual"), {"frequency": 2})),
    ("gradual_type", "tasks[0].gradual", "expected PolynomialDecay timings",
     lambda c: _edit(c, ("tasks", 0, "gradual"), 0.5)),
    ("gradual_frequency", "defaults.gradual.frequency",
     "expected an int >= 1", lambda c: _edit(
         c, ("defaults", "gradual"), {"end_step": 4, "frequency": 0})),
    ("gradual_too_long", "tasks[0].gradual",
     "final sparsity at step 1000, but fine-tuning takes",
     lambda c: _edit(c, ("tasks", 0, "gradual"), {"end_step": 1000})),
    ("gradual_no_finetune", "tasks[0].gradual", "finetune_epochs >= 1",
     lambda c: (_edit(c, ("tasks", 0, "gradual"), {"end_step": 2}),
                _edit(c, ("tasks", 0, "finetune_epochs"), 0))),
    ("free_init", "network.free_init", "expected one of ['zero', "
     "'previous', 'initializer']",
     lambda c: _edit(c, ("network", "free_init"), "glorot")),
    ("bad_autotune", "defaults.autotune", "expected true or false. "
     "Received: 'yes'", lambda c: _edit(c, ("defaults", "autotune"), "yes")),
    ("bad_fused_update", "fused_update", "expected true (the masked update "
     "compiled by XLA) or false", lambda c: _edit(c, ("fused_update",), "no")),
    ("no_model", "model", "missing", lambda c: c.pop("model")),
    ("no_tasks", "tasks", "missing", lambda c: c.pop("tasks")),
]


@pytest.mark.parametrize("name, key, match, edit", CASES,
                         ids=[c[0] for c in CASES])
def test_bad_config(workdir, name, key, match, edit):
    (workdir / "empty_tfds").mkdir(exist_ok=True)
    _bad(workdir, name, key, match, edit)


def test_shape_error_says_which_task_and_what_shape(workdir):
    line = _bad(workdir, "shape2", "tasks[1].data", "",
                lambda c: _edit(c, ("tasks", 1, "data"), "rgb.npz"))
    assert "task 'b'" in line and "(8, 8, 3)" in line
    assert "input (8, 8, 1)" in line and "3 channels" in line


def test_unparsable_and_missing_files(workdir):
    path = workdir / "broken.yaml"
    path.write_text("tasks: [\n")
    code, _, err = run_cli("train", path)
    assert code == 2 and f"{path}: does not parse" in err
    code, _, err = run_cli("train", workdir / "absent.yaml")
    assert code == 2 and "no such config file" in err


def _saved(workdir, classes=(2, 3)):
    """A saved model holding tasks a and b (untrained) for resume checks."""
    config = tiny_config(workdir)
    model = networks.build_network(config["network"], max_tasks=3)
    for name, count in zip("ab", classes):
        model.add_task(name, num_classes=count)
        model.prune(0.5)
        model.end_task(recalibrate=False)  # untrained: no data
    path = workdir / "saved" / "model.keras"
    checkpoint.save_model(model, path)
    return path


def test_resume_with_other_label_count(workdir):
    model = _saved(workdir, classes=(2, 4))
    config = tiny_config(workdir, model=str(model))
    _bad(workdir, "resume_labels", "tasks[1].data",
         "task 'b' in", config=config)


def test_resume_with_tasks_reordered(workdir):
    model = _saved(workdir)
    config = tiny_config(workdir, model=str(model))
    config["tasks"] = [config["tasks"][1], config["tasks"][0]]
    _bad(workdir, "resume_order", "tasks", "holds tasks ['a', 'b'] in this "
         "order", config=config)


def test_resume_with_other_max_tasks(workdir):
    model = _saved(workdir)
    config = tiny_config(workdir, model=str(model), max_tasks=5)
    _bad(workdir, "resume_max", "max_tasks", "cannot change", config=config)


def test_corrupt_model_file(workdir):
    path = workdir / "corrupt" / "model.keras"
    path.parent.mkdir()
    path.write_bytes(b"PK\x03\x04 not really")
    config = tiny_config(workdir, model=str(path))
    _bad(workdir, "corrupt", "model", "not a complete .keras file",
         config=config)


def test_full_network_cannot_take_a_new_task(workdir):
    config = tiny_config(workdir)
    model = networks.build_network(config["network"], max_tasks=3)
    model.add_task("a", num_classes=2)
    model.end_task()  # never pruned: owns everything
    path = workdir / "full" / "model.keras"
    checkpoint.save_model(model, path)
    config = tiny_config(workdir, model=str(path))
    _bad(workdir, "full", "tasks[1]", "no free weights left for task 'b'",
         config=config)


def test_resume_with_a_changed_network(workdir):
    model = _saved(workdir)
    record = model.with_name("model.run.json")
    network = dict(tiny_config(workdir)["network"], dense=[16])
    record.write_text(json.dumps({"network": network}))
    config = tiny_config(workdir, model=str(model))
    _bad(workdir, "resume_network", "network", "differs from the network",
         config=config)


def test_a_plain_keras_file_is_converted_with_its_own_task(workdir):
    import keras

    from packnet_tf.cli.config import load_config
    from packnet_tf.cli.prepare import prepare

    plain = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
        keras.layers.Flatten(), keras.layers.Dense(2, name="classifier")])
    checkpoint.save_model(plain, workdir / "plain.keras")
    config = tiny_config(workdir, model="conv/model.keras")
    config["network"] = {"type": "file", "path": "plain.keras",
                         "first_task": "a"}
    path = write_config(workdir / "plain.yaml", config)
    plan = prepare(load_config(path))
    assert not plan.resumed
    assert [(t.name, t.num_classes, t.state) for t in plan.model.tasks] == [
        ("a", 2, "training")]
    assert [t.name for t in plan.tasks] == ["a", "b", "c"]
    # The first task's head is the file's classifier: b.npz has 3 classes.
    config["tasks"][0]["data"] = "b.npz"
    path = write_config(workdir / "plain.yaml", config)
    _bad(workdir, "plain_labels", "tasks[0].data", "has a head of 2",
         config=config)
