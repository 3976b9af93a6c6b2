"""`packnet-tf eval --task auto`: the task inferred over mixed test data."""

import json

import keras
import numpy as np
import pytest
import yaml
from cli_support import make_npz_tasks, run_cli

import packnet_tf as pn
from packnet_tf.cli import networks
from packnet_tf.inference.task_inference import calibrate
from packnet_tf.io import checkpoint

NETWORK = {"type": "cnn", "input_shape": [8, 8, 1], "conv": [4, "pool"],
           "dense": [8]}
TASKS = (("a", 2), ("b", 3))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Finished tasks a (2 classes) and b (3), their data, their config.

    Trained a little, so the tasks' answers differ in confidence."""
    folder = tmp_path_factory.mktemp("auto_eval")
    paths = make_npz_tasks(folder, tasks=TASKS, n_test=40)
    keras.utils.set_random_seed(0)
    model = networks.build_network(NETWORK, max_tasks=3)
    for name, classes in TASKS:
        model.add_task(name, num_classes=classes)
        with np.load(paths[name]) as data:
            model.compile(keras.optimizers.Adam(0.01),
                          keras.losses.SparseCategoricalCrossentropy(
                              from_logits=True))
            model.fit(data["x_train"], data["y_train"], epochs=2,
                      batch_size=32, verbose=0)
        model.prune(0.5)
        model.end_task()
        with np.load(paths[name]) as data:
            calibrate(model, name, data["x_train"])
    checkpoint.save_model(model, folder / "model.keras")
    config = {"model": "model.keras", "network": NETWORK,
              "tasks": [{"name": name, "data": f"{name}.npz"}
                        for name, _ in TASKS]}
    (folder / "run.yaml").write_text(yaml.safe_dump(config))
    return folder


def _auto(saved, *flags):
    code, out, err = run_cli(
        "eval", saved / "model.keras", "--task", "auto", "--json",
        "--data", f"a={saved / 'a.npz'}", "--data", f"b={saved / 'b.npz'}",
        *flags)
    assert code == 0, err
    return json.loads(out)


def _expected(saved, per="example", group=None, score="entropy",
              calibrated=False):
    """The confusion table and accuracies from the library directly."""
    model = checkpoint.load_model(saved / "model.keras")
    rows, right, oracle = [], {}, {}
    for name, _ in TASKS:
        with np.load(saved / f"{name}.npz") as data:
            x, y = data["x_test"], data["y_test"]
        row = {"a": 0, "b": 0}
        hits = 0
        for start in range(0, len(x), group or len(x)):
            part = slice(start, start + group) if group else slice(None)
            result = pn.infer_task(model, x[part], per=per, score=score,
                                   calibrated=calibrated)
            for task, cls, label in zip(result.task, result.class_ids,
                                        y[part]):
                row[task] += 1
                hits += task == name and cls == label
        rows.append([row["a"], row["b"], 0])
        right[name] = hits / len(x)
        model.use_task(name)
        oracle[name] = float(np.mean(
            np.argmax(model.predict(x, verbose=0), axis=-1) == y))
    return rows, right, oracle


@pytest.mark.parametrize("per,group", [("example", None), ("batch", 8)])
def test_the_report_is_what_infer_task_answers(saved, per, group):
    flags = ["--per", per] + (["--batch-size", str(group)] if group else [])
    report = _auto(saved, *flags)
    rows, right, oracle = _expected(saved, per, group)
    assert report["tasks"] == ["a", "b"] and report["columns"] == [
        "a", "b", ""]
    assert report["confusion"] == rows
    assert report["counts"] == [40, 40]
    assert report["end_to_end"] == pytest.approx(right)
    assert report["oracle"] == pytest.approx(oracle)
    assert report["task_accuracy"] == pytest.approx(
        {"a": rows[0][0] / 40, "b": rows[1][1] / 40})
    if per == "batch":  # a group of 8 same-task examples answers as one
        assert all(n % 8 == 0 for row in rows for n in row)


def test_score_statistics_is_infer_tasks_answer(saved):
    report = _auto(saved, "--score", "statistics", "--per", "batch",
                   "--batch-size", "8")
    rows, right, _ = _expected(saved, "batch", 8, score="statistics")
    assert report["confusion"] == rows
    assert report["end_to_end"] == pytest.approx(right)


def test_with_the_task_given_it_is_evals_own_accuracy(saved):
    report = _auto(saved)
    for name, _ in TASKS:
        code, out, err = run_cli("eval", saved / "model.keras", "--task",
                                 name, "--data", saved / f"{name}.npz")
        assert code == 0, err
        accuracy = float(out.split("accuracy ")[1].split(",")[0])
        assert report["oracle"][name] == pytest.approx(accuracy, abs=1e-4)


def test_config_reads_the_same_data(saved):
    code, out, err = run_cli("eval", saved / "model.keras", "--task", "auto",
                             "--json", "--config", saved / "run.yaml")
    assert code == 0, err
    by_config = json.loads(out)
    assert by_config["confusion"] == _auto(saved)["confusion"]


def test_the_printed_table(saved):
    code, out, err = run_cli("eval", saved / "model.keras", "--task", "auto",
                             "--config", saved / "run.yaml", "--score",
                             "confidence")
    assert code == 0, err
    rows, _, _ = _expected(saved, score="confidence")
    lines = out.splitlines()
    assert lines[0].startswith("task inferred per example by confidence")
    assert "80 examples of 2 tasks" in lines[0]
    assert lines[1].split() == ["true", "\\", "chosen", "a", "b"]
    assert lines[2].split() == ["a", str(rows[0][0]), str(rows[0][1])]
    assert lines[3].split() == ["b", str(rows[1][0]), str(rows[1][1])]
    assert lines[-1].startswith("mean")


def test_a_threshold_of_one_rejects_every_example(saved):
    report = _auto(saved, "--reject-threshold", "1.0")
    assert report["confusion"] == [[0, 0, 40], [0, 0, 40]]
    assert report["rejected"] == {"a": 1.0, "b": 1.0}
    assert report["end_to_end"] == {"a": 0.0, "b": 0.0}


@pytest.mark.parametrize("flags,message", [
    (["--data", "a.npz"], "give each task's data as TASK=SPEC"),
    (["--data", "zz=a.npz"], "give each task's data as TASK=SPEC"),
    (["--data", "a=a.npz"], "tasks ['b'] have none"),
    (["--data", "a=a.npz", "--data", "a=a.npz", "--data", "b=b.npz"],
     "given data twice"),
    ([], "needs every task's data"),
    (["--config", "run.yaml", "--data", "a=a.npz"], "not both"),
    (["--config", "run.yaml", "--classes", "x,y"], "--classes picks one"),
    (["--config", "run.yaml", "--reject-threshold", "2"],
     "--reject-threshold 2.0: expected a score in [0, 1]"),
    (["--config", "run.yaml", "--batch-size", "0"], "--batch-size 0"),
    (["--data", "a=a.npz", "--data", "b=a.npz"],
     "2 classes, but task 'b' has a head of 3"),
])
def test_bad_flags_are_one_line_errors(saved, monkeypatch, flags, message):
    monkeypatch.chdir(saved)
    code, out, err = run_cli("eval", "model.keras", "--task", "auto",
                             *flags)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flags,named", [
    (["--config", "run.yaml"], "--config"),
    (["--per", "batch"], "--per batch"),
    (["--json"], "--json"),
    (["--calibrated"], "--calibrated"),
])
def test_auto_only_flags_are_refused_for_one_task(saved, monkeypatch, flags,
                                                   named):
    monkeypatch.chdir(saved)
    code, _, err = run_cli("eval", "model.keras", "--task", "a", "--data",
                           "a.npz", *flags)
    assert code == 2 and f"{named}: for --task auto only" in err


def test_one_task_takes_one_data_flag(saved, monkeypatch):
    monkeypatch.chdir(saved)
    code, _, err = run_cli("eval", "model.keras", "--task", "a", "--data",
                           "a.npz", "--data", "b.npz")
    assert code == 2 and "give its data once with --data SPEC" in err


def test_one_folder_of_every_tasks_images(tmp_path):
    """`--data ROOT`: an image folder per task, found by the task's name."""
    import tensorflow as tf

    root = tmp_path / "mixed"
    for task, classes in TASKS:
        for label in range(classes):
            folder = root / task / "test" / f"c{label}"
            folder.mkdir(parents=True)
            for i in range(2):
                pixels = np.full((8, 8, 1), 40 * label + 7 * i + (
                    task == "b") * 100, np.uint8)
                (folder / f"{i}.png").write_bytes(
                    tf.io.encode_png(pixels).numpy())
    keras.utils.set_random_seed(0)
    model = networks.build_network(NETWORK, max_tasks=3)
    for name, classes in TASKS:
        model.add_task(name, num_classes=classes, input_contract={
            "pixels": True, "preprocess": "unit",
            "class_names": [f"c{k}" for k in range(classes)]})
        model.prune(0.5)
        model.end_task()
    path = checkpoint.save_model(model, tmp_path / "model.keras")
    code, out, err = run_cli("eval", path, "--task", "auto", "--json",
                             "--data", root)
    assert code == 0, err
    report = json.loads(out)
    assert report["counts"] == [4, 6]
    code, out, err = run_cli("eval", path, "--task", "auto", "--json",
                             "--data", f"a={root / 'a'}",
                             "--data", f"b={root / 'b'}")
    assert code == 0, err
    assert json.loads(out)["confusion"] == report["confusion"]
    code, _, err = run_cli("eval", path, "--task", "auto", "--data",
                           tmp_path)
    assert code == 2 and "one image folder per task" in err


def test_calibrated_is_infer_tasks_calibrated_answer(saved, tmp_path):
    report = _auto(saved, "--calibrated", "--per", "batch",
                   "--batch-size", "8")
    rows, right, _ = _expected(saved, "batch", 8, calibrated=True)
    assert report["calibrated"] is True
    assert report["confusion"] == rows
    assert report["end_to_end"] == pytest.approx(right)
    # A model whose tasks never recorded their quantiles: a clear error.
    model = checkpoint.load_model(saved / "model.keras")
    for name, _ in TASKS:
        model.set_score_reference(name, None)
    path = checkpoint.save_model(model, tmp_path / "uncalibrated.keras")
    code, _, err = run_cli("eval", path, "--task", "auto", "--calibrated",
                           "--config", saved / "run.yaml")
    assert code == 2 and "have none" in err and "calibrate(" in err
    assert len(err.strip().splitlines()) == 1
