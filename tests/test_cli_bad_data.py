"""`packnet-tf` on bad data: stopped before training, named, or skipped;
an error inside a phase leaves the model whole and the run resumable."""

import json

import keras
import numpy as np
import pytest
from cli_support import (fingerprints, make_npz_tasks, run_cli, tiny_config,
                         write_config)
from test_data_checks import write_bad_folder, zip_folder

from packnet_tf.cli import progress
from packnet_tf.io import checkpoint

MODEL = ("out", "model.keras")


def _phase_lines(out, task):
    return [line.split("]", 1)[1].split()[0] for line in out.splitlines()
            if line.startswith("[task ") and f" {task}]" in line]


@pytest.fixture
def workdir(tmp_path):
    make_npz_tasks(tmp_path, tasks=(("a", 2),))
    write_bad_folder(tmp_path / "pets")
    zip_folder(tmp_path / "pets", tmp_path / "pets.zip")
    return tmp_path


def _config(workdir, pets="pets", **defaults):
    config = tiny_config(workdir, tasks=(("a", 2), ("pets", 2)), max_tasks=2)
    config["defaults"].update(prune_fraction=0.5, epochs=1, **defaults)
    config["tasks"][1]["data"] = pets
    return config


@pytest.fixture
def trained_a(workdir):
    """A run that finished task a; returns (config, path, model digest)."""
    config = _config(workdir)
    only_a = dict(config, tasks=config["tasks"][:1])
    path = write_config(workdir / "run.yaml", only_a)
    code, _, err = run_cli("train", path, "--quiet")
    assert code == 0, err
    return config, path, checkpoint.file_digest(workdir.joinpath(*MODEL))


@pytest.mark.slow
@pytest.mark.parametrize("pets", ["pets", "pets.zip"])
def test_bad_files_stop_the_run_before_training(workdir, trained_a, pets):
    config, path, digest = trained_a
    config["tasks"][1]["data"] = pets
    write_config(path, config)
    code, out, err = run_cli("train", path, "--quiet")
    assert code == 2
    line = err.strip()
    assert "\n" not in line
    assert line.startswith(f"packnet-tf train: error: {path}: tasks[1].data:"
                           " task 'pets': 4 file(s) of image folder ")
    for name in ("train/cat/truncated.jpg", "train/dog/truncated.png",
                 "train/dog/empty.jpg", "test/cat/notes.jpg"):
        assert name in line
    assert "split 'train': 3 of 11" in line and "split 'test': 1 of 9" in line
    assert "[task" not in out  # nothing trained
    assert checkpoint.file_digest(workdir.joinpath(*MODEL)) == digest


@pytest.mark.slow
def test_skip_trains_on_the_rest_and_reports_the_count(workdir):
    path = write_config(workdir / "run.yaml",
                        _config(workdir, pets="pets.zip",
                                on_bad_files="skip"))
    code, out, err = run_cli("train", path, "--quiet")
    assert code == 0, err
    assert ("pets: image folder" in out and "8/8 examples (train/test), "
            "prune 50.0%; bad files left out: 3 in train, 1 in test") in out
    record = json.loads((workdir / "out" / "model.run.json").read_text())
    assert record["skipped_files"]["pets"]["train"]["count"] == 3
    assert record["skipped_files"]["pets"]["test"] == {
        "count": 1, "checked": 9, "first": ["test/cat/notes.jpg"]}
    assert _phase_lines(out, "pets") == ["train", "prune", "finetune", "end"]
    # Checked files are cached beside the model: good ones only.
    cache = json.loads((workdir / "out" / "model.data-check.json")
                       .read_text())
    assert len(cache["good"]) == 16


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_npz_with_nan_or_inf_stops_before_training(workdir, value):
    arrays = dict(np.load(workdir / "a.npz"))
    arrays["x_train"][7, 0, 0, 0] = value
    np.savez(workdir / "a.npz", **arrays)
    path = write_config(workdir / "run.yaml", _config(workdir))
    code, out, err = run_cli("train", path, "--quiet")
    assert code == 2
    assert "tasks[0].data: task 'a': npz:" in err
    assert "x_train has NaN or infinite values in 1 example(s) (first at " \
           "index 7)" in err
    assert not workdir.joinpath(*MODEL).exists()


def test_an_unprepared_tfds_split_stops_before_training(workdir):
    config = _config(workdir)
    config["tasks"][1]["data"] = {"tfds": "mnist",
                                  "data_dir": str(workdir / "tfds")}
    path = write_config(workdir / "run.yaml", config)
    code, _, err = run_cli("train", path, "--quiet")
    assert code == 2
    assert ("tasks[1].data.tfds: task 'pets': tfds:mnist is not prepared "
            "in ") in err
    assert "Prepare it once with `tfds build mnist" in err
    assert not workdir.joinpath(*MODEL).exists()


class _Raises(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            raise RuntimeError("disk went away")


@pytest.mark.slow
def test_an_error_inside_fit_keeps_the_last_state_and_resumes(
        workdir, monkeypatch):
    config = _config(workdir, pets="pets", on_bad_files="skip")
    path = write_config(workdir / "run.yaml", config)
    real = progress.Reporter.fit_callbacks

    def failing(self, task, phase):
        extra = [_Raises()] if (task, phase) == ("pets", "train") else []
        return real(self, task, phase) + extra

    monkeypatch.setattr(progress.Reporter, "fit_callbacks", failing)
    code, out, err = run_cli("train", path, "--quiet")
    assert code == 3
    model_path = workdir.joinpath(*MODEL)
    assert err.strip() == (
        f"packnet-tf train: stopped: Task 'pets', train: RuntimeError: disk "
        f"went away. {model_path} keeps its state after task 'a', end (the "
        "last complete one); fix the cause and re-run the same command to "
        "resume (data files are checked again first). The traceback is in "
        f"{model_path.with_name('model.error.log')}.")
    assert "disk went away" in model_path.with_name(
        "model.error.log").read_text()
    # The file is the one the record describes, whole, with task a only.
    record = json.loads(model_path.with_name("model.run.json").read_text())
    assert checkpoint.file_digest(model_path) == record["model_sha256"]
    assert [(t.name, t.state) for t in checkpoint.load_model(
        model_path).tasks] == [("a", "frozen")]
    kept = fingerprints(model_path)["a"]
    with checkpoint.RunLock(model_path):  # no lock left behind
        pass
    monkeypatch.setattr(progress.Reporter, "fit_callbacks", real)
    code, out, err = run_cli("train", path, "--quiet")
    assert code == 0, err
    assert _phase_lines(out, "a") == ["done"]
    assert _phase_lines(out, "pets") == ["train", "prune", "finetune", "end"]
    assert fingerprints(model_path)["a"] == kept
    assert not model_path.with_name("model.error.log").exists()


@pytest.mark.slow
def test_eval_and_export_check_their_data(workdir, trained_a):
    model = workdir.joinpath(*MODEL)
    # Task a reads 8x8 grey images: the pets folder fits, decoded to grey.
    args = ("--task", "a", "--data", workdir / "pets", "--split", "train",
            "--classes", "cat,dog")
    code, out, err = run_cli("eval", model, *args)
    assert code == 2
    assert "--data" in err and "train/dog/empty.jpg" in err
    code, out, err = run_cli("eval", model, *args, "--on-bad-files", "skip")
    assert code == 0, err
    assert "left out 3 file(s) that cannot be decoded: split 'train'" in out
    assert "(8 examples)" in out
    code, _, err = run_cli("export", model, "--tflite", workdir / "a.tflite",
                           "--quantize", "int8", *args[2:])
    assert code == 2 and "train/cat/truncated.jpg" in err
    assert not (workdir / "a.tflite").exists()
