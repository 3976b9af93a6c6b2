"""Atomic model files: failed saves change nothing; bad files fail clearly."""

import json
import os
import stat
import zipfile

import keras
import numpy as np
import pytest
from conftest import conv_bn_trunk

import packnet_tf as pn
from packnet_tf.io import atomic, checkpoint
from packnet_tf.io.checkpoint import CheckpointError


@pytest.fixture(scope="module")
def model():
    """A model with one finished task (pruned, fingerprinted; no training:
    these tests are about files)."""
    keras.utils.set_random_seed(0)
    model = pn.PackNetModel(conv_bn_trunk(), max_tasks=3)
    model.add_task("first", num_classes=3)
    model.prune(0.5)
    model.end_task(recalibrate=False)  # pruned without data
    return model


def test_save_then_load_gives_the_same_model(model, tmp_path, probe):
    path = checkpoint.save_model(model, tmp_path / "m.keras")
    loaded = checkpoint.load_model(path)
    assert [t.to_config() for t in loaded.tasks] == [
        t.to_config() for t in model.tasks]
    np.testing.assert_array_equal(loaded.predict(probe, verbose=0),
                                  model.predict(probe, verbose=0))
    assert loaded.verify() == {"first": 0.0}
    assert os.listdir(tmp_path) == ["m.keras"]  # no temporary left


def test_without_optimizer_the_file_holds_no_optimizer_state(model,
                                                             tmp_path):
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    with_state = checkpoint.save_model(model, tmp_path / "a.keras")
    without = checkpoint.save_model(model, tmp_path / "b.keras",
                                    include_optimizer=False)
    assert model.optimizer is not None  # put back after saving
    with zipfile.ZipFile(with_state) as a, zipfile.ZipFile(without) as b:
        assert (b.getinfo("model.weights.h5").file_size
                < a.getinfo("model.weights.h5").file_size)


def test_a_failed_save_leaves_the_old_file_and_no_temporary(
        model, tmp_path, monkeypatch):
    path = checkpoint.save_model(model, tmp_path / "m.keras")
    before = path.read_bytes()

    def disk_full(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"PK\x03\x04 half")  # a partial write, then failure
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(model), "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save_model(model, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.keras"]


def test_stale_temporaries_of_dead_processes_are_removed(model, tmp_path):
    dead_pid = 2 ** 22 + 12345  # above Linux's pid_max default
    stale = tmp_path / f"m.keras.tmp-{dead_pid}.keras"
    stale.write_bytes(b"half a model")
    checkpoint.save_model(model, tmp_path / "m.keras")
    assert not stale.exists()


def test_save_needs_a_keras_suffix(model, tmp_path):
    with pytest.raises(ValueError, match="ending in '.keras'"):
        checkpoint.save_model(model, tmp_path / "m.h5")


def test_write_json_is_whole_or_absent(tmp_path):
    path = tmp_path / "run.json"
    checkpoint.write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        checkpoint.write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["run.json"]


def record_syncs(monkeypatch):
    """Records, in order, each fsync (of a "file" or a "dir") and rename
    (`os.replace`: "rename"; `os.rename`, of folders: "rename folder")."""
    events = []
    fsync, replace, rename = os.fsync, os.replace, os.rename

    def recording_fsync(fd):
        events.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode)
                      else "file")
        fsync(fd)

    def recording_replace(source, target):
        events.append("rename")
        replace(source, target)

    def recording_rename(source, target):
        events.append("rename folder")
        rename(source, target)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    monkeypatch.setattr(os, "rename", recording_rename)
    return events


@pytest.mark.parametrize("write, content", [
    (atomic.write_bytes, b"\x00\x01"),
    (atomic.write_text, "caf\u00e9\n"),
    (atomic.write_json, {"a": 1}),
])
def test_atomic_writes_fsync_the_file_then_rename_then_fsync_the_folder(
        tmp_path, monkeypatch, write, content):
    events = record_syncs(monkeypatch)
    write(tmp_path / "f", content)
    assert events == ["file", "rename", "dir"]
    assert os.listdir(tmp_path) == ["f"]


def test_write_text_is_utf8_without_newline_translation(tmp_path):
    atomic.write_text(tmp_path / "labels.txt", "caf\u00e9\r\nb\n")
    assert (tmp_path / "labels.txt").read_bytes() == b"caf\xc3\xa9\r\nb\n"


def test_fsync_tree_flushes_every_file_and_folder(tmp_path, monkeypatch):
    (tmp_path / "v" / "variables").mkdir(parents=True)
    (tmp_path / "v" / "saved_model.pb").write_bytes(b"pb")
    (tmp_path / "v" / "variables" / "data").write_bytes(b"data")
    events = record_syncs(monkeypatch)
    atomic.fsync_tree(tmp_path / "v")
    # Bottom-up: a folder after what it holds.
    assert events == ["file", "dir", "file", "dir"]


def test_is_temporary_knows_the_temporaries_of_one_file():
    assert atomic.is_temporary("models.config.tmp-123", "models.config")
    assert atomic.is_temporary("m.tflite.tmp-9.tflite", "m.tflite")
    assert not atomic.is_temporary("models.config", "models.config")
    assert not atomic.is_temporary("models.config.tmp-x", "models.config")
    assert not atomic.is_temporary("other.tmp-123", "models.config")


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="No model file at"):
        checkpoint.load_model(tmp_path / "none.keras")


def test_not_a_keras_file(tmp_path):
    path = tmp_path / "weights.h5"
    path.write_bytes(b"\x89HDF")
    with pytest.raises(CheckpointError, match="is not a .keras model file"):
        checkpoint.load_model(path)


def test_truncated_file(model, tmp_path):
    path = checkpoint.save_model(model, tmp_path / "m.keras")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError,
                       match=r"not a complete \.keras file.*truncated"):
        checkpoint.load_model(path)


def test_corrupt_member(model, tmp_path):
    path = checkpoint.save_model(model, tmp_path / "m.keras")
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("model.weights.h5")
    data = bytearray(path.read_bytes())
    # Flip bytes inside the stored weights; the central directory survives.
    start = info.header_offset + 30 + len(info.filename) + 64
    data[start:start + 16] = bytes(255 - b for b in data[start:start + 16])
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt .keras file"):
        checkpoint.load_model(path)


def test_a_zip_that_is_not_a_model(tmp_path):
    path = tmp_path / "other.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="lacks config.json"):
        checkpoint.load_model(path)


def test_a_plain_keras_model_is_not_a_packnet_model(tmp_path):
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = checkpoint.save_model(plain, tmp_path / "plain.keras")
    with pytest.raises(CheckpointError, match="holds a Sequential, not a"):
        checkpoint.load_model(path)
    assert isinstance(checkpoint.load_model(path, packnet_only=False),
                      keras.Sequential)


def test_bad_content_is_one_clear_error(model, tmp_path):
    path = checkpoint.save_model(model, tmp_path / "m.keras")
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    members["config.json"] = b'{"class_name": "NoSuchLayer", "config": {}}'
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(CheckpointError, match="could not be loaded as a"):
        checkpoint.load_model(path)
