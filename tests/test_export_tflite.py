"""export.tflite: one task per file or one file for all, quantized, sparse; errors.

Files run through the LiteRT interpreter (`ai_edge_litert`), not the
deprecated `tf.lite.Interpreter`.
"""

import os

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from test_checkpoint import record_syncs
from test_export_plain import (
    FLOAT_TOLERANCE,
    every_kind_trunk,
    model_outputs,
    packed_model,
    probe_inputs,
    wide_trunk,
)

import packnet_tf as pn
from packnet_tf import export
from packnet_tf.export.checks import select_tasks
from packnet_tf.export.to_tflite import convert

#: Max |float16 file - model| on logits (the issue's bound).
FLOAT16_TOLERANCE = 1e-2


@pytest.fixture(scope="module")
def model():
    return packed_model(every_kind_trunk(), training_task="d")


@pytest.fixture(scope="module")
def wide():
    """Weights dwarf the graph here, so file sizes compare weights."""
    return packed_model(wide_trunk(), classes=(2, 2, 2))


def _interpreter(path, delegates=True):
    resolver = (OpResolverType.AUTO if delegates
                else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    return Interpreter(model_path=str(path),
                       experimental_op_resolver_type=resolver)


def _run(interpreter, task, x):
    runner = interpreter.get_signature_runner(f"task_{task}")
    return runner(inputs=x)["outputs"]


def test_one_task_files_match_the_model(model, tmp_path):
    x = probe_inputs(model)
    for task in ("a", "c"):
        path = export.tflite(model, tmp_path / f"{task}.tflite", task=task)
        assert path == str(tmp_path / f"{task}.tflite")
        interpreter = _interpreter(path)
        signatures = interpreter.get_signature_list()
        assert signatures == {
            f"task_{task}": {"inputs": ["inputs"], "outputs": ["outputs"]}}
        np.testing.assert_allclose(
            _run(interpreter, task, x), model_outputs(model, task, x),
            rtol=0, atol=FLOAT_TOLERANCE)


def test_float16_file_is_within_its_tolerance(model, tmp_path):
    x = probe_inputs(model)
    path = export.tflite(model, tmp_path / "b16.tflite", task="b",
                         quantize="float16")
    np.testing.assert_allclose(
        _run(_interpreter(path), "b", x), model_outputs(model, "b", x),
        rtol=0, atol=FLOAT16_TOLERANCE)


def test_multi_task_file_matches_every_task(model, tmp_path):
    x = probe_inputs(model)
    path = export.tflite(model, tmp_path / "all.tflite", tasks=["a", "b", "c"])
    interpreter = _interpreter(path)
    assert sorted(interpreter.get_signature_list()) == [
        "any_task", "task_a", "task_b", "task_c"]
    for task in ("a", "b", "c"):
        np.testing.assert_allclose(
            _run(interpreter, task, x), model_outputs(model, task, x),
            rtol=0, atol=FLOAT_TOLERANCE, err_msg=f"task {task}")


def test_multi_task_file_keeps_one_copy_of_the_weights(wide, tmp_path):
    one = os.path.getsize(export.tflite(wide, tmp_path / "c.tflite", task="c"))
    shared = os.path.getsize(export.tflite(wide, tmp_path / "all.tflite"))
    stacked = os.path.getsize(export.tflite(
        wide, tmp_path / "stacked.tflite", layout="stacked"))
    # Kernels once plus uint8 owners: 1.25 networks, against one network
    # per task when each signature has its own baked copy.
    assert shared < 1.35 * one
    assert stacked > 2.9 * one
    assert shared == len(convert(wide, select_tasks(wide, None),
                                 layout="shared"))
    x = probe_inputs(wide)
    for name in ("all.tflite", "stacked.tflite"):
        interpreter = _interpreter(tmp_path / name)
        for task in ("a", "b", "c"):
            np.testing.assert_allclose(
                _run(interpreter, task, x), model_outputs(wide, task, x),
                rtol=0, atol=FLOAT_TOLERANCE, err_msg=f"{name} task {task}")


def test_sparse_files_shrink_for_early_tasks(wide, tmp_path):
    x = probe_inputs(wide)
    sizes = {}
    for task in ("a", "c"):
        path = export.tflite(wide, tmp_path / f"{task}.tflite", task=task,
                             sparse=True)
        sizes[task] = os.path.getsize(path)
        np.testing.assert_allclose(
            _run(_interpreter(path, delegates=False), task, x),
            model_outputs(wide, task, x), rtol=0, atol=FLOAT_TOLERANCE)
    dense = os.path.getsize(export.tflite(wide, tmp_path / "a_dense.tflite",
                                          task="a"))
    # Task a sees half of the weights, task c seven eighths.
    assert sizes["a"] < 0.8 * dense
    assert sizes["a"] < sizes["c"]


@pytest.mark.parametrize("quantize", ["dynamic", "int8"])
def test_quantized_files_store_int8_weights(wide, tmp_path, quantize):
    float_size = os.path.getsize(export.tflite(wide, tmp_path / "f.tflite",
                                               task="b"))
    x = probe_inputs(wide, count=32)
    path = export.tflite(wide, tmp_path / "q.tflite", task="b",
                         quantize=quantize, representative_data=x)
    assert os.path.getsize(path) < 0.35 * float_size
    interpreter = _interpreter(path)
    details = interpreter.get_signature_runner("task_b").get_input_details()
    assert details["inputs"]["dtype"] == np.float32  # float interface
    outputs = _run(interpreter, "b", x)
    assert outputs.shape == (32, 2) and np.all(np.isfinite(outputs))


def test_multi_task_int8_takes_data_per_task(wide, tmp_path):
    x = probe_inputs(wide, count=16)
    path = export.tflite(
        wide, tmp_path / "q.tflite", tasks=["a", "b"], quantize="int8",
        representative_data={"a": x, "b": x[:8]})
    assert sorted(_interpreter(path).get_signature_list()) == [
        "task_a", "task_b"]
    with pytest.raises(ValueError, match="Missing: \\['b'\\]"):
        export.tflite(wide, tmp_path / "q2.tflite", tasks=["a", "b"],
                      quantize="int8", representative_data={"a": x})
    with pytest.raises(ValueError, match="Expected representative inputs"):
        export.tflite(wide, tmp_path / "q3.tflite", task="a",
                      quantize="int8", representative_data=x[:, :4])
    # The failed exports left nothing; the good one its labels beside it.
    assert sorted(os.listdir(tmp_path)) == [
        "a.labels.txt", "b.labels.txt", "q.tflite"]


def test_bad_input_is_refused(model, tmp_path):
    target = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match="needs `representative_data`|pass "
                       "`representative_data`"):
        export.tflite(model, target, task="a", quantize="int8")
    with pytest.raises(ValueError, match="quantize"):
        export.tflite(model, target, task="a", quantize="int4")
    with pytest.raises(ValueError, match="not both"):
        export.tflite(model, target, task="a", tasks=["b"])
    with pytest.raises(ValueError, match="Expected `layout`.*'packed'"):
        export.tflite(model, target, layout="packed")
    with pytest.raises(ValueError, match="needs constant kernels.*"
                       "layout='stacked'"):
        export.tflite(model, target, quantize="dynamic", layout="shared")
    with pytest.raises(ValueError, match="Unknown task"):
        export.tflite(model, target, task="zebra")
    with pytest.raises(pn.TaskStateError, match="Only finished tasks"):
        export.tflite(model, target, tasks=["a", "d"])
    with pytest.raises(FileExistsError, match="is a folder"):
        export.tflite(model, tmp_path, task="a")
    notes = tmp_path / "notes.tflite"
    notes.write_text("not a model")
    with pytest.raises(FileExistsError, match="not a TFLite file"):
        export.tflite(model, notes, task="a")
    assert notes.read_text() == "not a model"
    assert sorted(os.listdir(tmp_path)) == ["notes.tflite"]


def test_an_existing_file_is_replaced_atomically(model, tmp_path,
                                                 monkeypatch):
    target = tmp_path / "m.tflite"
    export.tflite(model, target, task="a")
    first = target.read_bytes()
    export.tflite(model, target, task="b")
    assert target.read_bytes() != first
    second = target.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("rename failed")

    # The write fails at the last step: the old file stays, no staging file.
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="rename failed"):
        export.tflite(model, target, task="c")
    assert target.read_bytes() == second
    # No staging file, and no labels for "c": they follow the model file.
    assert sorted(os.listdir(tmp_path)) == [
        "a.labels.txt", "b.labels.txt", "m.tflite"]


def test_the_file_and_its_labels_are_fsynced_before_and_after_renaming(
        model, tmp_path, monkeypatch):
    events = record_syncs(monkeypatch)
    export.tflite(model, tmp_path / "m.tflite", task="a")
    # The model file, then its labels file: each whole on disk, renamed,
    # and the rename itself on disk.
    assert events == ["file", "rename", "dir"] * 2
    assert sorted(os.listdir(tmp_path)) == ["a.labels.txt", "m.tflite"]
