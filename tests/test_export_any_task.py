"""The `any_task` signatures of a multi-task SavedModel: infer_task's answers
where no Keras or packnet_tf is installed."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from conftest import (density_model, model_outputs, packed_model,
                      two_data_sets, wide_trunk)

import packnet_tf as pn
from packnet_tf import export
from packnet_tf.inference.task_inference import task_scores

A_NAMES = ("cat", "dog", "emu")
B_NAMES = tuple(f"class {i}" for i in range(7))
KEYS = {"any_task", "any_task_pixels", "any_task_images"}


def _pixels(count, seed=0):
    """Random images, each at its own brightness (the tasks' confidence
    varies with it: the batch mixes chosen tasks)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(count, 8, 8, 3))
    return (pixels * rng.uniform(0, 1, size=(count, 1, 1, 1))).astype(
        np.uint8)


@pytest.fixture(scope="module")
def model():
    """Three tasks on 0-1 pixels (a and b with class names), heads of 3, 7
    and 2 classes: the top 5 of task c is padded."""
    model = packed_model(wide_trunk(), classes=(3, 7, 2), seed=0)
    model.set_input_contract("a", pn.InputContract(class_names=A_NAMES))
    model.set_input_contract("b", pn.InputContract(class_names=B_NAMES))
    model.set_input_contract("c", pn.InputContract())
    return model


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    base = tmp_path_factory.mktemp("any_task")
    export.saved_model(model, base, layout="multi")
    export.saved_model(model, base)
    return base


def test_the_multi_layout_serves_any_task_and_per_task_does_not(exported):
    multi = tf.saved_model.load(str(exported / "multi_model" / "1"))
    assert KEYS <= set(multi.signatures)
    assert [t.decode() for t in multi.any_task_tasks().numpy()] == [
        "a", "b", "c"]
    assert multi.any_task_score().numpy() == b"entropy"
    alone = tf.saved_model.load(str(exported / "a" / "1"))
    assert not KEYS & set(alone.signatures)


def test_any_task_answers_as_infer_task(model, exported):
    multi = tf.saved_model.load(str(exported / "multi_model" / "1"))
    pixels = _pixels(16)
    x = pixels.astype("float32") / 255.0
    expected = pn.infer_task(model, x)
    assert len(set(expected.task)) > 1  # a mixed batch: a real choice
    for key, feed in (("any_task", {"inputs": x}),
                      ("any_task_pixels", {"pixels": pixels}),
                      ("any_task_images", {"image_bytes": [
                          tf.io.encode_png(p).numpy() for p in pixels]})):
        out = multi.signatures[key](**feed)
        np.testing.assert_array_equal(
            [t.decode() for t in out["task"].numpy()], expected.task, key)
        np.testing.assert_array_equal(out["class_ids"].numpy()[:, 0],
                                      expected.class_ids, key)
        np.testing.assert_array_equal(
            [n.decode() for n in out["class_names"].numpy()[:, 0]],
            expected.class_names, key)
        np.testing.assert_allclose(out["task_scores"].numpy(),
                                   expected.task_scores, atol=1e-5)
        np.testing.assert_allclose(out["scores"].numpy()[:, 0],
                                   [expected.probabilities[t][i].max()
                                    for i, t in enumerate(expected.task)],
                                   atol=1e-5)


def test_a_narrow_tasks_top_k_is_padded(model, exported):
    multi = tf.saved_model.load(str(exported / "multi_model" / "1"))
    x = _pixels(64, seed=5).astype("float32") / 255.0
    out = multi.signatures["any_task"](inputs=x)
    rows = out["task"].numpy() == b"c"
    assert rows.any()
    assert out["class_ids"].shape[1] == 5
    np.testing.assert_array_equal(out["class_ids"].numpy()[rows, 2:], -1)
    assert set(out["class_names"].numpy()[rows, 2:].ravel()) == {b""}
    np.testing.assert_array_equal(out["scores"].numpy()[rows, 2:], 0.0)


def test_each_task_reads_its_own_preprocessing(tmp_path):
    """Tasks that prepare pixels differently: no float `any_task`; the
    pixel signature runs each task on its own inputs."""
    model = packed_model(wide_trunk(), classes=(3, 4), seed=1)
    model.set_input_contract("a", pn.InputContract())
    model.set_input_contract("b", {"preprocess": "mobilenet_v2"})
    export.saved_model(model, tmp_path, layout="multi")
    multi = tf.saved_model.load(str(tmp_path / "multi_model" / "1"))
    assert "any_task" not in multi.signatures
    pixels = _pixels(12, seed=2)
    out = multi.signatures["any_task_pixels"](pixels=pixels)
    inputs = {"a": pixels / 255.0, "b": pixels / 127.5 - 1.0}
    scores = np.stack([task_scores(tf.nn.softmax(model_outputs(
        model, t, inputs[t].astype("float32"))), "entropy").numpy()
        for t in ("a", "b")], axis=1)
    np.testing.assert_allclose(out["task_scores"].numpy(), scores,
                               atol=1e-5)
    np.testing.assert_array_equal(
        out["task"].numpy(), np.array([b"a", b"b"])[scores.argmax(axis=1)])


#: Runs in a fresh process where Keras and packnet_tf cannot be imported.
CONSUMER = textwrap.dedent("""
    import sys
    for name in ("keras", "tf_keras", "packnet_tf"):
        sys.modules[name] = None
    import numpy as np
    import tensorflow as tf

    root = sys.argv[1]
    pixels = np.load(f"{root}/pixels.npy")
    served = tf.saved_model.load(f"{root}/multi_model/1")
    images = [tf.io.encode_png(p).numpy() for p in pixels]
    for key, feed in (("any_task", {"inputs": pixels / np.float32(255)}),
                      ("any_task_pixels", {"pixels": pixels}),
                      ("any_task_images", {"image_bytes": images})):
        out = served.signatures[key](**feed)
        np.save(f"{root}/{key}_task.npy", out["task"].numpy().astype(str))
        np.save(f"{root}/{key}_names.npy",
                out["class_names"].numpy()[:, 0].astype(str))
""")


@pytest.mark.slow
def test_a_client_without_keras_gets_infer_tasks_answers(model, exported):
    pixels = _pixels(16, seed=7)
    np.save(exported / "pixels.npy", pixels)
    (exported / "consumer.py").write_text(CONSUMER)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, str(exported / "consumer.py"), str(exported)],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = pn.infer_task(model, pixels.astype("float32") / 255.0)
    for key in sorted(KEYS):
        np.testing.assert_array_equal(
            np.load(exported / f"{key}_task.npy"), expected.task, key)
        np.testing.assert_array_equal(
            np.load(exported / f"{key}_names.npy"), expected.class_names,
            key)


@pytest.mark.parametrize("layout, inputs", [
    ("shared", "float"), ("stacked", "float"), ("shared", "pixels")])
def test_a_multi_task_tflite_file_answers_as_infer_task(model, tmp_path,
                                                        layout, inputs):
    from ai_edge_litert.interpreter import Interpreter

    path = export.tflite(model, tmp_path / "abc.tflite", layout=layout,
                         inputs=inputs)
    assert (tmp_path / "abc.tasks.txt").read_text() == "a\nb\nc\n"
    pixels = _pixels(16)
    x = pixels.astype("float32") / 255.0
    expected = pn.infer_task(model, x)
    interpreter = Interpreter(model_path=str(path))
    if inputs == "float":
        out = interpreter.get_signature_runner("any_task")(inputs=x)
    else:
        out = interpreter.get_signature_runner("any_task_pixels")(
            pixels=pixels)
    np.testing.assert_array_equal(
        np.array(["a", "b", "c"])[out["task_index"]], expected.task)
    np.testing.assert_array_equal(out["class_ids"][:, 0], expected.class_ids)
    np.testing.assert_allclose(out["task_scores"], expected.task_scores,
                               atol=1e-5)
    assert out["class_ids"].shape == (16, 5)


def test_one_task_and_int8_files_have_no_any_task(model, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    path = export.tflite(model, tmp_path / "a.tflite", task="a")
    assert not any("any_task" in key for key in Interpreter(
        model_path=str(path)).get_signature_list())
    assert not (tmp_path / "a.tasks.txt").exists()


# -- any_task_score="statistics": each task's input density ----------------


@pytest.fixture(scope="module")
def densities():
    """Two tasks with their input densities (`conftest.density_model`) and
    inputs near both."""
    a, b = two_data_sets(12, seed=3)
    # Mixed examples near both tasks: every score matters, not only its sign.
    return density_model(), np.concatenate([a, b, 0.5 * (a + b)])


def test_a_multi_savedmodel_chooses_by_statistics(densities, tmp_path):
    model, x = densities
    export.saved_model(model, tmp_path, layout="multi",
                       any_task_score="statistics")
    multi = tf.saved_model.load(str(tmp_path / "multi_model" / "1"))
    assert multi.any_task_score().numpy() == b"statistics"
    # Each density stored once, as variables every signature reads.
    for stored, task in zip(multi.densities, model.tasks):
        np.testing.assert_array_equal(stored["precision"].numpy(), np.float32(
            task.input_density["precision"]))
    expected = pn.infer_task(model, x, score="statistics")
    entropy = pn.infer_task(model, x)
    assert not np.array_equal(expected.task, entropy.task)  # a real choice
    out = multi.signatures["any_task"](inputs=x)
    np.testing.assert_array_equal(
        [t.decode() for t in out["task"].numpy()], expected.task)
    np.testing.assert_allclose(out["task_scores"].numpy(),
                               expected.task_scores, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(out["class_ids"].numpy()[:, 0],
                                  expected.class_ids)
    # The task's own signatures are untouched by the rule.
    np.testing.assert_allclose(
        multi.signatures["task_a"](inputs=x)["logits"].numpy(),
        model_outputs(model, "a", x), atol=1e-5)


def test_a_shared_tflite_file_chooses_by_statistics(densities, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    model, x = densities
    path = export.tflite(model, tmp_path / "ab.tflite",
                         any_task_score="statistics")
    expected = pn.infer_task(model, x, score="statistics")
    out = Interpreter(model_path=str(path)).get_signature_runner(
        "any_task")(inputs=x)
    np.testing.assert_array_equal(
        np.array(["a", "b"])[out["task_index"]], expected.task)
    np.testing.assert_allclose(out["task_scores"], expected.task_scores,
                               rtol=1e-4, atol=1e-6)


def test_statistics_exports_refuse_what_cannot_carry_them(densities, model,
                                                          tmp_path):
    calibrated, _ = densities
    with pytest.raises(ValueError, match=r"tasks \['a', 'b', 'c'\] have "
                       "none.*calibrate\\(model, task, x\\)"):
        export.saved_model(model, tmp_path / "s", layout="multi",
                           any_task_score="statistics")
    with pytest.raises(ValueError, match="only layout='multi' has them"):
        export.saved_model(calibrated, tmp_path / "s",
                           any_task_score="statistics")
    with pytest.raises(ValueError, match="Expected `any_task_score` in "
                       r"\('entropy', 'statistics'\). Received: "
                       "any_task_score='density'"):
        export.saved_model(calibrated, tmp_path / "s", layout="multi",
                           any_task_score="density")
    with pytest.raises(ValueError, match="needs layout='shared'.*"
                       "Received: layout='stacked'"):
        export.tflite(calibrated, tmp_path / "ab.tflite", layout="stacked",
                      any_task_score="statistics")
    with pytest.raises(ValueError, match="this file has none.*Received: 1 "
                       "task"):
        export.tflite(calibrated, tmp_path / "a.tflite", task="a",
                      any_task_score="statistics")
    assert not any(tmp_path.iterdir())  # nothing half-written
