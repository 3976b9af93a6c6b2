"""export.saved_model: TF Serving layout, signatures, exactness, versions, errors."""

import importlib
import os
import types

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.config import model_server_config_pb2
from test_checkpoint import record_syncs
from test_export_plain import (FLOAT_TOLERANCE, every_kind_trunk,
                               model_outputs, packed_model, probe_inputs)

import packnet_tf as pn
from packnet_tf import export
from packnet_tf.core.trunk import packed_layers
from packnet_tf.export import to_saved_model

TASKS = ("a", "b", "c")


@pytest.fixture(scope="module")
def model():
    return packed_model(every_kind_trunk(), training_task="d")


def _run(path, signature, x):
    loaded = tf.saved_model.load(path)
    function = loaded.signatures[signature]
    return function(inputs=tf.constant(x))["outputs"].numpy()


def _checkpoint_dtypes(path):
    reader = tf.train.load_checkpoint(
        os.path.join(path, "variables", "variables"))
    return reader.get_variable_to_dtype_map()


def _needs_xla(path):
    """Whether any function of the SavedModel must be XLA-compiled.

    TF Serving runs such functions only with --xla_cpu_compilation_enabled.
    """
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as file:
        proto.ParseFromString(file.read())
    library = proto.meta_graphs[0].graph_def.library
    return any(
        function.attr["_XlaMustCompile"].b for function in library.function)


def _listing(root):
    return sorted(
        os.path.relpath(os.path.join(folder, name), root)
        for folder, dirs, files in os.walk(root) for name in dirs + files)


def test_per_task_layout_serves_each_task_as_a_plain_network(model, tmp_path):
    base = tmp_path / "exported"
    paths = export.saved_model(model, base)
    assert paths == {t: str(base / t / "1") for t in TASKS}
    x = probe_inputs(model)
    for task in TASKS:
        path = paths[task]
        assert os.path.isfile(os.path.join(path, "saved_model.pb"))
        loaded = tf.saved_model.load(path)
        assert set(loaded.signatures) == {"serving_default", f"task_{task}"}
        function = loaded.signatures["serving_default"]
        _, inputs = function.structured_input_signature
        assert list(inputs) == ["inputs"]
        # `outputs` stays for clients of the first exports, next to
        # `logits` and the class outputs (test_export_signatures.py).
        assert set(function.structured_outputs) == {
            "outputs", "logits", "probabilities", "class_ids",
            "class_names", "scores"}
        for signature in ("serving_default", f"task_{task}"):
            np.testing.assert_allclose(
                _run(path, signature, x), model_outputs(model, task, x),
                rtol=0, atol=FLOAT_TOLERANCE)
        assert not _needs_xla(path)
        # Masks are baked in: no owner tensor and no per-task slot is stored.
        dtypes = _checkpoint_dtypes(path)
        assert tf.uint8 not in dtypes.values()
        assert not any("owner" in name for name in dtypes)


def test_multi_layout_shares_one_copy_of_the_weights(model, tmp_path):
    path = export.saved_model(model, tmp_path / "exported", layout="multi")
    assert path == str(tmp_path / "exported" / "multi_model" / "1")
    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures) == {f"task_{t}" for t in TASKS} | {
        "any_task"}
    assert not _needs_xla(path)
    x = probe_inputs(model)
    for task in TASKS:
        np.testing.assert_allclose(
            _run(path, f"task_{task}", x), model_outputs(model, task, x),
            rtol=0, atol=FLOAT_TOLERANCE)
    # One copy of the kernels plus their uint8 owners, the per-task slots
    # and the heads; nothing twice.
    budget = 0
    for layer in packed_layers(model.trunk):
        for _, kernel, owner in layer.packed_kernels():
            budget += kernel.numpy().nbytes + owner.numpy().nbytes
        budget += sum(v.numpy().nbytes for v in layer.per_task_variables())
    budget += sum(w.numpy().nbytes for h in model.heads[:3] for w in h.weights)
    reader = tf.train.load_checkpoint(
        os.path.join(path, "variables", "variables"))
    tensors = {name: reader.get_tensor(name)
               for name in reader.get_variable_to_shape_map()}
    graph = tensors.pop("_CHECKPOINTABLE_OBJECT_GRAPH")
    stored = sum(np.asarray(t).nbytes for t in tensors.values())
    assert stored <= budget
    # The file holds those tensors and the object graph, nothing else.
    data = os.path.join(path, "variables",
                        "variables.data-00000-of-00001")
    assert os.path.getsize(data) <= stored + len(graph) + 64


def test_versions_side_by_side_and_models_config(model, tmp_path):
    base = tmp_path / "exported"
    export.saved_model(model, base, tasks=["a", "b"], version=1)
    export.saved_model(model, base, tasks="a", version=2)
    export.saved_model(model, base, version=3, layout="multi")
    assert sorted(os.listdir(base / "a")) == ["1", "2"]
    assert sorted(os.listdir(base / "b")) == ["1"]
    with open(base / "models.config") as file:
        config = text_format.Parse(
            file.read(), model_server_config_pb2.ModelServerConfig())
    served = {c.name: c for c in config.model_config_list.config}
    assert sorted(served) == ["a", "b", "multi_model"]
    for name, entry in served.items():
        assert entry.base_path == str(base / name)
        assert entry.model_platform == "tensorflow"
    with pytest.raises(FileExistsError, match="version=3"):
        export.saved_model(model, base, tasks="a", version=2)
    # What is left: the versions and the config, no staging folder.
    assert sorted(os.listdir(base)) == ["a", "b", "models.config",
                                        "multi_model"]


def test_bad_input_is_refused_before_anything_is_written(model, tmp_path):
    base = tmp_path / "new"
    with pytest.raises(pn.TaskStateError, match="Only finished tasks.*'d'"):
        export.saved_model(model, base, tasks=["a", "d"])
    with pytest.raises(ValueError, match="Unknown task.*'zebra'"):
        export.saved_model(model, base, tasks=["zebra"])
    with pytest.raises(ValueError, match="layout"):
        export.saved_model(model, base, layout="stacked")
    with pytest.raises(ValueError, match="version"):
        export.saved_model(model, base, version=-1)
    assert not base.exists()

    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(FileExistsError, match="not an export directory"):
        export.saved_model(model, not_a_folder)
    other = tmp_path / "other"
    (other / "a").mkdir(parents=True)
    (other / "a" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an export directory"):
        export.saved_model(model, other)
    assert _listing(other) == ["a", os.path.join("a", "notes.txt")]


def test_a_failed_export_leaves_nothing_behind(model, tmp_path, monkeypatch):
    base = tmp_path / "exported"
    export.saved_model(model, base, tasks="a")
    before = _listing(base)
    config = (base / "models.config").read_text()
    real_save = tf.saved_model.save
    calls = []

    def save_then_fail(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(to_saved_model.tf.saved_model, "save",
                        save_then_fail)
    with pytest.raises(OSError, match="disk full"):
        export.saved_model(model, base, tasks=["b", "c"], version=1)
    assert _listing(base) == before
    assert (base / "models.config").read_text() == config
    calls.clear()
    with pytest.raises(OSError, match="disk full"):
        export.saved_model(model, tmp_path / "fresh", tasks=["b", "c"])
    assert not (tmp_path / "fresh").exists()


def test_a_dead_writers_models_config_temporary_does_not_block(
        model, tmp_path, monkeypatch):
    base = tmp_path / "exported"
    export.saved_model(model, base, tasks="a")
    dead_pid = 2 ** 22 + 12345  # above Linux's pid_max default
    stale = base / f"models.config.tmp-{dead_pid}"
    stale.write_text("model_config_list {")
    events = record_syncs(monkeypatch)
    export.saved_model(model, base, tasks="b")
    assert not stale.exists()
    assert sorted(os.listdir(base)) == ["a", "b", "models.config"]
    # The staged SavedModel reaches the disk before its rename, then the
    # folder it moved into; then models.config, whose rename is fsynced
    # with the export folder.
    renamed = events.index("rename folder")
    assert set(events[:renamed]) == {"file", "dir"}
    assert events[:renamed].count("file") >= 2  # saved_model.pb, variables
    assert events[renamed:] == ["rename folder", "dir",
                                "file", "rename", "dir"]


@pytest.mark.parametrize("function, module", [
    ("saved_model", "to_saved_model"), ("tflite", "to_tflite")])
def test_export_functions_do_not_shadow_their_modules(function, module):
    imported = importlib.import_module(f"packnet_tf.export.{module}")
    assert isinstance(imported, types.ModuleType)
    public = getattr(export, function)
    assert callable(public) and not isinstance(public, types.ModuleType)
    assert public is getattr(imported, function)
    assert getattr(export, module) is imported
