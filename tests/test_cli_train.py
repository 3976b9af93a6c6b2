"""`packnet-tf train`: phases, resuming, new tasks, NaN stops, TensorBoard."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from cli_support import (fingerprints, make_npz_tasks, run_cli, tiny_config,
                         write_config)

from packnet_tf.io import checkpoint


@pytest.fixture
def workdir(tmp_path):
    make_npz_tasks(tmp_path)
    return tmp_path


def two_tasks(workdir, **top):
    """Tasks a and b, both pruned by half (b is not the last of a plan)."""
    config = tiny_config(workdir, tasks=(("a", 2), ("b", 3)), **top)
    config["defaults"].update(prune_fraction=0.5, epochs=1)
    return config


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One run of three tasks with TensorBoard logs: (folder, stdout)."""
    folder = tmp_path_factory.mktemp("full")
    make_npz_tasks(folder)
    config = tiny_config(folder)
    config["tasks"][0]["validation"] = True
    path = write_config(folder / "run.yaml", config)
    code, out, err = run_cli("train", path, "--quiet", "--log-dir",
                             folder / "logs")
    assert code == 0, err
    return folder, path, out


def _phase_lines(out, task):
    return [line.split("]", 1)[1].split()[0] for line in out.splitlines()
            if line.startswith("[task ") and f" {task}]" in line]


@pytest.mark.slow
def test_a_run_trains_every_phase_and_reports(full_run):
    workdir, path, out = full_run
    assert _phase_lines(out, "a") == ["train", "prune", "finetune", "end"]
    assert _phase_lines(out, "b") == ["train", "prune", "finetune", "end"]
    # The last task of an "equal" plan is not pruned.
    assert _phase_lines(out, "c") == ["train", "end"]
    assert "freed 365 of its 548 weights (66.7%)" in out
    # `validation: true` evaluates the test split every epoch.
    assert "val_accuracy" in out.split("[task 1/3 a] train")[1].split("\n")[0]
    assert "val_accuracy" not in out.split("[task 2/3 b] train")[1].split(
        "\n")[0]
    assert "Test accuracy right after each task and now:" in out
    assert "Who owns the network:" in out
    model = checkpoint.load_model(workdir / "out" / "model.keras")
    assert [t.state for t in model.tasks] == ["frozen"] * 3
    assert model.verify() == {"a": 0.0, "b": 0.0, "c": 0.0}
    record = json.loads((workdir / "out" / "model.run.json").read_text())
    assert record["last_phase"] == {"task": "c", "phase": "end"}
    assert record["model_sha256"] == checkpoint.file_digest(
        workdir / "out" / "model.keras")
    assert [e["phase"] for e in record["log"]] == [
        "train", "prune", "finetune", "end"] * 2 + ["train", "end"]
    # The table's two columns agree: finished tasks never change.
    table = out.split("right after", 1)[1].split("Who owns")[0]
    assert table.count("False") == 3 and "True" not in table
    # Running it again trains nothing.
    code, again, _ = run_cli("train", path, "--quiet")
    assert code == 0
    assert "Resuming" in again and "3 of 3 tasks finished" in again
    assert all(_phase_lines(again, t) == ["done"] for t in "abc")


@pytest.mark.slow
def test_the_final_report_has_the_accuracy_matrix_and_metrics(full_run):
    workdir, path, out = full_run
    record = json.loads((workdir / "out" / "model.run.json").read_text())
    rows = record["accuracy_matrix"]
    assert list(rows) == ["a", "b", "c"]
    assert list(rows["b"]) == ["a", "b"] and list(rows["c"]) == ["a", "b",
                                                                 "c"]
    # PackNet: an earlier task's accuracy never moves.
    assert rows["a"]["a"] == rows["b"]["a"] == rows["c"]["a"]
    metrics = record["continual_metrics"]
    assert metrics["bwt"] == 0.0 and metrics["max_forgetting"] == 0.0
    assert metrics["final"] == [rows["c"][t] for t in ("a", "b", "c")]
    assert "Accuracy matrix (row: after training the task" in out
    assert "BWT +0.0000" in out and "forgetting mean 0.0000" in out


@pytest.mark.slow
def test_adding_a_task_trains_only_the_new_one(workdir):
    config = tiny_config(workdir, max_tasks=3)
    config["defaults"].update(prune_fraction=0.5, epochs=1)
    first = dict(config, tasks=config["tasks"][:1])
    path = write_config(workdir / "run.yaml", first)
    assert run_cli("train", path, "--quiet")[0] == 0
    before = fingerprints(workdir / "out" / "model.keras")
    config["tasks"] = config["tasks"][:2]
    write_config(path, config)
    code, out, err = run_cli("train", path, "--quiet")
    assert code == 0, err
    assert _phase_lines(out, "a") == ["done"]
    assert _phase_lines(out, "b") == ["train", "prune", "finetune", "end"]
    after = fingerprints(workdir / "out" / "model.keras")
    assert after["a"] == before["a"]
    model = checkpoint.load_model(workdir / "out" / "model.keras")
    assert model.verify() == {"a": 0.0, "b": 0.0}


@pytest.mark.slow
def test_nan_loss_stops_the_phase_and_keeps_the_last_state(workdir):
    data = dict(np.load(workdir / "b.npz"))
    # Finite (NaN in the file is refused before training: test_data_checks)
    # but so large that the forward pass overflows to inf, then NaN.
    data["x_train"][5] = 3e38
    np.savez(workdir / "b_nan.npz", **data)
    config = two_tasks(workdir)
    config["tasks"][1]["data"] = "b_nan.npz"
    path = write_config(workdir / "run.yaml", config)
    code, out, err = run_cli("train", path, "--quiet")
    assert code == 3
    assert "Task 'b', train: the loss became nan at epoch 1" in err
    assert "keeps the state before it" in err
    model = checkpoint.load_model(workdir / "out" / "model.keras")
    assert [(t.name, t.state) for t in model.tasks] == [("a", "frozen")]
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())
    kept = fingerprints(workdir / "out" / "model.keras")
    # Fixed data: the same command resumes with task b.
    config["tasks"][1]["data"] = "b.npz"
    write_config(path, config)
    code, out, err = run_cli("train", path, "--quiet")
    assert code == 0, err
    assert _phase_lines(out, "a") == ["done"]
    assert fingerprints(workdir / "out" / "model.keras")["a"] == kept["a"]


@pytest.mark.slow
def test_killed_between_model_and_record_redoes_only_the_finetune(
        workdir, monkeypatch):
    """The one ambiguous state: fine-tuned, but the record says pruned."""
    path = write_config(workdir / "run.yaml", two_tasks(workdir))
    real_write = checkpoint.write_json

    class Killed(BaseException):
        pass

    def write_json(target, data):
        if data["last_phase"] == {"task": "b", "phase": "finetune"}:
            raise Killed  # the model file is written, the record is not
        real_write(target, data)

    monkeypatch.setattr(checkpoint, "write_json", write_json)
    with pytest.raises(Killed):
        run_cli("train", path, "--quiet")
    monkeypatch.setattr(checkpoint, "write_json", real_write)
    model = checkpoint.load_model(workdir / "out" / "model.keras")
    assert [t.state for t in model.tasks] == ["frozen", "pruned"]
    code, out, err = run_cli("train", path, "--quiet")
    assert code == 0, err
    assert _phase_lines(out, "b") == ["resume", "finetune", "end"]
    assert "from state 'pruned'" in out


@pytest.mark.slow
def test_a_record_matching_the_model_skips_the_finished_finetune(
        workdir, monkeypatch):
    path = write_config(workdir / "run.yaml", two_tasks(workdir))

    class Killed(BaseException):
        pass

    def end_task(self, recalibrate=True):
        raise Killed  # after the fine-tune phase was saved and recorded

    from packnet_tf.core.model import PackNetModel

    with monkeypatch.context() as patch:
        patch.setattr(PackNetModel, "end_task", end_task)
        with pytest.raises(Killed):
            run_cli("train", path, "--quiet")
    code, out, err = run_cli("train", path, "--quiet")
    assert code == 0, err
    assert _phase_lines(out, "a") == ["resume", "end"]


@pytest.mark.slow
def test_log_dir_holds_losses_and_capacity_per_task(full_run):
    logs = full_run[0] / "logs"
    tags = {}
    for event_file in (logs / "run").glob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(event_file)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(event.step)
    for name in ("a", "b", "c", "free"):
        assert f"capacity/{name}" in tags
    assert {"accuracy/a", "accuracy/b", "accuracy/c"} <= set(tags)
    assert list((logs / "a" / "train").rglob("events.out.tfevents.*"))
    assert list((logs / "b" / "finetune").rglob("events.out.tfevents.*"))


@pytest.mark.parametrize("setting", [None, True])
def test_the_autotune_key_reaches_every_pipeline(workdir, monkeypatch,
                                                 setting):
    from packnet_tf.cli import runner

    seen = []

    def recording(*args, **kwargs):
        seen.append(kwargs["autotune"])
        return batches(*args, **kwargs)

    batches = runner.batches
    monkeypatch.setattr(runner, "batches", recording)
    config = tiny_config(workdir, tasks=(("a", 2),))
    config["defaults"].update(epochs=1, prune_fraction=0.5)
    if setting is not None:
        config["defaults"]["autotune"] = setting
    code, out, err = run_cli("train", write_config(workdir / "run.yaml",
                                                   config), "--quiet")
    assert code == 0, out + err
    assert seen and set(seen) == {bool(setting)}, seen


def test_an_optimizer_xla_cannot_compile_stops_with_the_config_fix(
        workdir):
    from test_fused_update import HostSGD

    keras.saving.register_keras_serializable("packnet_tests")(HostSGD)
    config = tiny_config(workdir, tasks=(("a", 2),))
    config["defaults"].update(epochs=1, prune_fraction=0.5,
                              optimizer="packnet_tests>HostSGD")
    path = write_config(workdir / "run.yaml", config)
    code, out, err = run_cli("train", path, "--quiet")
    assert code == 3, out + err
    assert ("FusedUpdateError: PackNetModel(fused_update=True), the default,"
            in err), err
    assert f"Fix: add `fused_update: false` to {path}" in err, err
    config["fused_update"] = False  # the fix the message names
    code, out, err = run_cli("train", write_config(path, config), "--quiet")
    assert code == 0, out + err
    assert checkpoint.load_model(workdir / "out" / "model.keras"
                                 ).fused_update is False


def test_a_second_process_on_the_same_run_is_refused(workdir):
    model_path = workdir / "out" / "model.keras"
    with checkpoint.RunLock(model_path):
        path = write_config(workdir / "run.yaml", tiny_config(workdir))
        code, _, err = run_cli("train", path, "--quiet")
    assert code == 3 and "Another process is training" in err


@pytest.mark.slow
def test_a_saved_model_continues_as_the_network(workdir):
    """`network: {type: file}`: earlier tasks kept, new ones trained."""
    first = two_tasks(workdir, max_tasks=3)
    first["tasks"] = first["tasks"][:1]
    path = write_config(workdir / "first.yaml", first)
    assert run_cli("train", path, "--quiet")[0] == 0
    before = fingerprints(workdir / "out" / "model.keras")
    second = two_tasks(workdir, model="next/model.keras")
    second["network"] = {"type": "file", "path": "out/model.keras"}
    path = write_config(workdir / "second.yaml", second)
    code, out, err = run_cli("train", path, "--quiet")
    assert code == 0, err
    assert _phase_lines(out, "a") == ["done"]
    assert _phase_lines(out, "b") == ["train", "prune", "finetune", "end"]
    after = fingerprints(workdir / "next" / "model.keras")
    assert after["a"] == before["a"]
    # The source file is not modified.
    assert fingerprints(workdir / "out" / "model.keras") == before


#: Dies by SIGKILL at fine-tuning step 10 of task a, after gradual pruning
#: has pruned a part of the way (steps 4 and 8), then runs the command.
_KILLED_MID_FINETUNE = """
import os, signal, sys
from packnet_tf.training import gradual
original = gradual.GradualPruning.on_train_batch_begin
def dying(self, batch, logs=None):
    original(self, batch, logs)
    if self._task == "a" and self.step == 10:
        assert 0 < self.sparsity < 2 / 3, self.history
        os.kill(os.getpid(), signal.SIGKILL)
gradual.GradualPruning.on_train_batch_begin = dying
from packnet_tf.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _owner_counts(model_path):
    """`{"layer/kernel": [count owned by task 0 (free), 1, 2, ...]}`."""
    model = checkpoint.load_model(model_path)
    return {
        f"{layer.name}/{name}": np.bincount(
            owner.numpy().ravel(), minlength=len(model.tasks) + 1).tolist()
        for layer in model._packed()
        for name, _, owner in layer.packed_kernels()
    }


@pytest.mark.slow
def test_gradual_from_the_config_resumes_after_a_kill_mid_finetune(workdir):
    import subprocess
    import sys

    from cli_support import cli_env, run_subprocess

    from packnet_tf.layers.ownership import count_to_keep

    config = tiny_config(workdir)  # "equal": a prunes 2/3, b 1/2, c 0
    config["defaults"].update(epochs=1, finetune_epochs=3,
                              gradual={"end_step": 12, "frequency": 4})
    reference = write_config(workdir / "reference.yaml",
                             dict(config, model="ref/model.keras"))
    done = run_subprocess("train", reference, "--quiet", "--deterministic")
    assert done.returncode == 0, done.stderr
    assert "pruned gradually: freed" in done.stdout

    path = write_config(workdir / "run.yaml", config)
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_MID_FINETUNE, "train", str(path),
         "--quiet", "--deterministic"],
        env=cli_env(), capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr
    model_path = workdir / "out" / "model.keras"
    record = json.loads((workdir / "out" / "model.run.json").read_text())
    assert record["last_phase"] == {"task": "a", "phase": "train"}
    assert [t.state for t in checkpoint.load_model(model_path).tasks] == [
        "training"]

    done = run_subprocess("train", path, "--quiet", "--deterministic")
    assert done.returncode == 0, done.stderr
    assert "resume   from state 'training'" in done.stdout
    record = json.loads((workdir / "out" / "model.run.json").read_text())
    phases = [(e["task"], e["phase"]) for e in record["log"]]
    # No one-shot prune phase: a gradual task prunes while it fine-tunes.
    assert phases == [("a", "train"), ("a", "finetune"), ("a", "end"),
                      ("b", "train"), ("b", "finetune"), ("b", "end"),
                      ("c", "train"), ("c", "end")]
    # The resumed run is the uninterrupted one, bit for bit ...
    assert fingerprints(model_path) == fingerprints(
        workdir / "ref" / "model.keras")
    assert checkpoint.load_model(model_path).verify() == {
        "a": 0.0, "b": 0.0, "c": 0.0}
    # ... and every kernel reached the planned sparsity exactly.
    for key, counts in _owner_counts(model_path).items():
        size = sum(counts)
        keep_a = count_to_keep(size, 2 / 3)
        keep_b = count_to_keep(size - keep_a, 0.5)
        assert counts == [0, keep_a, keep_b, size - keep_a - keep_b], key
