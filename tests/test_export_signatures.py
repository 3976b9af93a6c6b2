"""Raw-input signatures: `task_<name>_pixels`, `task_<name>_images`, class outputs.

A small packed model whose tasks carry input contracts ("unit" with class
names, a `keras.applications` preprocessing, none at all) is exported; each
signature must give what the model gives on the inputs the training
pipeline would have made (`tf.image.resize`, then the preprocessing).
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from test_export_plain import (
    FLOAT_TOLERANCE,
    model_outputs,
    packed_model,
    wide_trunk,
)

import packnet_tf as pn
from packnet_tf import export

A_NAMES = ("cat", "dog", "emu")
#: Task b: 7 classes, so the top-k outputs list 5.
B_NAMES = tuple(f"class {i}" for i in range(7))
OUTPUTS = {"logits", "outputs", "probabilities", "class_ids", "class_names",
           "scores"}


@pytest.fixture(scope="module")
def model():
    """Tasks a ("unit"), b (mobilenet_v2, no resizing), c (no contract)."""
    model = packed_model(wide_trunk(), classes=(3, 7, 2))
    model.set_input_contract("a", pn.InputContract(class_names=A_NAMES))
    model.set_input_contract("b", {"preprocess": "mobilenet_v2",
                                   "resize": None, "class_names": B_NAMES})
    return model


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    base = tmp_path_factory.mktemp("signatures")
    export.saved_model(model, base)
    export.saved_model(model, base, layout="multi")
    return base


def _pixels(count, height=8, width=8, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(count, height, width, channels),
                        dtype=np.uint8)


def _expected(model, task, pixels, preprocess):
    """The model's logits on pixels prepared as `data.batches` does."""
    x = tf.cast(pixels, tf.float32)
    if tuple(x.shape[1:3]) != (8, 8):
        x = tf.image.resize(x, (8, 8))
    return model_outputs(model, task, preprocess(x).numpy())


def _png(pixels):
    return [tf.io.encode_png(p).numpy() for p in pixels]


def _signature(base, folder, key):
    return tf.saved_model.load(str(base / folder / "1")).signatures[key]


def test_each_task_gets_raw_input_signatures_with_a_contract(exported):
    for folder, keys in {
        "a": {"serving_default", "task_a", "task_a_pixels", "task_a_images"},
        "c": {"serving_default", "task_c"},
        "multi_model": {"task_a", "task_a_pixels", "task_a_images",
                        "task_b", "task_b_pixels", "task_b_images",
                        "task_c"},
    }.items():
        loaded = tf.saved_model.load(str(exported / folder / "1"))
        assert set(loaded.signatures) == keys, folder
        for key, function in loaded.signatures.items():
            assert set(function.structured_outputs) == OUTPUTS, key
    inputs = {key: list(_signature(exported, "a", key)
                        .structured_input_signature[1])
              for key in ("task_a", "task_a_pixels", "task_a_images")}
    assert inputs == {"task_a": ["inputs"], "task_a_pixels": ["pixels"],
                      "task_a_images": ["image_bytes"]}


@pytest.mark.parametrize("folder", ["a", "multi_model"])
def test_pixels_of_any_size_are_resized_and_scaled_in_the_graph(
        model, exported, folder):
    function = _signature(exported, folder, "task_a_pixels")
    for height, width in ((8, 8), (13, 10), (5, 6)):
        pixels = _pixels(4, height, width, seed=height)
        logits = function(pixels=pixels)["logits"].numpy()
        np.testing.assert_allclose(
            logits, _expected(model, "a", pixels, lambda x: x / 255.0),
            rtol=0, atol=FLOAT_TOLERANCE, err_msg=f"{height}x{width}")


def test_encoded_images_decode_like_the_pixels(model, exported):
    pixels = _pixels(5, 11, 9, seed=3)
    images = _signature(exported, "a", "task_a_images")
    raw = _signature(exported, "a", "task_a_pixels")
    from_png = images(image_bytes=tf.constant(_png(pixels)))
    np.testing.assert_array_equal(from_png["logits"].numpy(),
                                  raw(pixels=pixels)["logits"].numpy())
    jpeg = [tf.io.encode_jpeg(p).numpy() for p in pixels]
    decoded = np.stack([tf.io.decode_jpeg(j).numpy() for j in jpeg])
    np.testing.assert_allclose(
        images(image_bytes=tf.constant(jpeg))["logits"].numpy(),
        _expected(model, "a", decoded, lambda x: x / 255.0),
        rtol=0, atol=FLOAT_TOLERANCE)


def test_keras_applications_preprocessing_and_top_k(model, exported):
    pixels = _pixels(6, seed=4)
    out = _signature(exported, "b", "task_b_pixels")(pixels=pixels)
    mobilenet = keras.applications.mobilenet_v2.preprocess_input
    expected = _expected(model, "b", pixels, mobilenet)
    np.testing.assert_allclose(out["logits"].numpy(), expected, rtol=0,
                               atol=FLOAT_TOLERANCE)
    probabilities = out["probabilities"].numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-6)
    ids = out["class_ids"].numpy()
    assert ids.shape == (6, 5) and ids.dtype == np.int32
    np.testing.assert_array_equal(ids[:, 0], expected.argmax(axis=1))
    np.testing.assert_array_equal(
        ids, np.argsort(-expected, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(
        out["scores"].numpy(), np.take_along_axis(probabilities, ids, 1),
        rtol=0, atol=0)
    names = out["class_names"].numpy().astype(str)
    np.testing.assert_array_equal(names, np.asarray(B_NAMES)[ids])
    # A task without a contract names its classes by id.
    x = np.zeros((2, 8, 8, 3), np.float32)
    plain = _signature(exported, "c", "task_c")(inputs=x)
    assert set(plain["class_names"].numpy().ravel().astype(str)) <= {
        "0", "1"}
    assert plain["class_ids"].shape == (2, 2)


@pytest.mark.parametrize("key, feed, match", [
    ("task_a_pixels", {"pixels": _pixels(2, channels=1)}, "3 channel"),
    ("task_a_pixels", {"pixels": _pixels(0)}, "empty batch"),
    ("task_a_images", {"image_bytes": tf.constant([b"not an image"])},
     "JPEG, PNG, GIF or BMP"),
    ("task_a_images", {"image_bytes": tf.constant([], tf.string)},
     "empty batch"),
    ("task_b_pixels", {"pixels": _pixels(1, 9, 8)},
     "trained without resizing"),
], ids=["channels", "empty-pixels", "undecodable", "empty-images",
        "size-without-resize"])
def test_bad_input_gets_a_clear_error(exported, key, feed, match):
    folder = key.split("_")[1]
    function = _signature(exported, folder, key)
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        function(**feed)


def _runner(path, key):
    return Interpreter(model_path=str(path)).get_signature_runner(key)


def test_tflite_pixel_file_preprocesses_inside(model, tmp_path):
    path = export.tflite(model, tmp_path / "b.tflite", task="b",
                         inputs="pixels")
    runner = _runner(path, "task_b_pixels")
    (detail,) = runner.get_input_details().values()
    assert detail["dtype"] == np.uint8
    assert list(detail["shape_signature"]) == [-1, 8, 8, 3]
    pixels = _pixels(5, seed=7)
    expected = _expected(
        model, "b", pixels, keras.applications.mobilenet_v2.preprocess_input)
    np.testing.assert_allclose(runner(pixels=pixels)["outputs"], expected,
                               rtol=0, atol=FLOAT_TOLERANCE)
    labels = (tmp_path / "b.labels.txt").read_text().splitlines()
    assert labels == list(B_NAMES)


def test_tflite_int8_pixel_file_is_integer_only(model, tmp_path):
    rng = np.random.default_rng(0)
    calibration = rng.integers(0, 256, size=(64, 8, 8, 3)).astype("float32")
    path = export.tflite(model, tmp_path / "a8.tflite", task="a",
                         inputs="pixels", quantize="int8",
                         representative_data=calibration)
    interpreter = Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner("task_a_pixels")
    (inputs,) = runner.get_input_details().values()
    (outputs,) = runner.get_output_details().values()
    # Scale 1, zero point 0: the uint8 input is the pixel values.
    assert inputs["dtype"] == np.uint8 and inputs["quantization"] == (1.0, 0)
    assert outputs["dtype"] == np.int8
    floats = [d for d in interpreter.get_tensor_details()
              if d["dtype"] == np.float32]
    assert floats == []
    pixels = _pixels(8, seed=9)
    scale, zero = outputs["quantization"]
    dequantized = (runner(pixels=pixels)["outputs"].astype("float32")
                   - zero) * scale
    expected = _expected(model, "a", pixels, lambda x: x / 255.0)
    assert np.abs(dequantized - expected).max() < 0.1 * np.abs(
        expected).max() + 4 * scale


def test_tflite_multi_task_pixel_file_and_labels(model, tmp_path):
    path = export.tflite(model, tmp_path / "ab.tflite", tasks=["a", "b"],
                         inputs="pixels")
    pixels = _pixels(3, seed=11)
    interpreter = Interpreter(model_path=str(path))
    assert sorted(interpreter.get_signature_list()) == [
        "any_task_pixels", "task_a_pixels", "task_b_pixels"]
    out = interpreter.get_signature_runner("task_a_pixels")(pixels=pixels)
    np.testing.assert_allclose(
        out["outputs"], _expected(model, "a", pixels, lambda x: x / 255.0),
        rtol=0, atol=FLOAT_TOLERANCE)
    assert sorted(os.listdir(tmp_path)) == [
        "a.labels.txt", "ab.tasks.txt", "ab.tflite", "b.labels.txt"]
    assert (tmp_path / "a.labels.txt").read_text() == "cat\ndog\nemu\n"


def test_tflite_pixels_need_a_contract(model, tmp_path):
    with pytest.raises(ValueError, match="task\\(s\\) \\['c'\\] have none"):
        export.tflite(model, tmp_path / "c.tflite", task="c",
                      inputs="pixels")
    with pytest.raises(ValueError, match="Expected `inputs` in"):
        export.tflite(model, tmp_path / "c.tflite", task="c", inputs="rgb")
    assert os.listdir(tmp_path) == []


def test_multi_layout_refuses_colliding_signature_keys(tmp_path):
    keras.utils.set_random_seed(0)
    model = pn.PackNetModel(wide_trunk(), max_tasks=2, name="clash")
    # Task "x" with a contract has `task_x_pixels`: so is task "x_pixels".
    for name in ("x", "x_pixels"):
        model.add_task(name, num_classes=2, input_contract={})
        model.prune(0.5)
        model.end_task(recalibrate=False)  # pruned without data
    with pytest.raises(ValueError, match="'task_x_pixels' is taken"):
        export.saved_model(model, tmp_path / "multi", layout="multi")
    assert not (tmp_path / "multi").exists()
    assert set(export.saved_model(model, tmp_path / "per_task")) == {
        "x", "x_pixels"}


def test_tflite_multi_task_int8_pixel_file(model, tmp_path):
    rng = np.random.default_rng(5)
    calibration = rng.integers(0, 256, size=(32, 8, 8, 3)).astype("float32")
    path = export.tflite(model, tmp_path / "ab8.tflite", tasks=["a", "b"],
                         inputs="pixels", quantize="int8",
                         representative_data={"a": calibration,
                                              "b": calibration[:16]})
    interpreter = Interpreter(model_path=str(path))
    # No `any_task_pixels`: int8 outputs are not probabilities.
    assert sorted(interpreter.get_signature_list()) == [
        "task_a_pixels", "task_b_pixels"]
    for key in ("task_a_pixels", "task_b_pixels"):
        runner = interpreter.get_signature_runner(key)
        (inputs,) = runner.get_input_details().values()
        assert inputs["dtype"] == np.uint8
        assert inputs["quantization"] == (1.0, 0)
        out = runner(pixels=_pixels(2, seed=6))["outputs"]
        assert out.dtype == np.int8 and out.shape[0] == 2


def test_probability_heads_give_finite_logits_where_p_is_zero():
    """A saturated softmax head (p exactly 0) gives finite `logits` (JSON
    has no -inf) whose softmax is the head's probabilities."""
    from packnet_tf.export.signatures import TINY, head_outputs

    p = tf.constant([[1.0, 0.0, 0.0], [0.25, 0.75, 0.0]])
    out = head_outputs(p, 3, pn.InputContract(from_logits=False))
    logits = out["logits"].numpy()
    assert np.all(np.isfinite(logits))
    np.testing.assert_array_equal(logits[0, 1:], np.log(np.float32(TINY)))
    np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), p.numpy(),
                               atol=1e-7)
    np.testing.assert_array_equal(out["probabilities"].numpy(), p.numpy())
    np.testing.assert_array_equal(out["class_ids"].numpy()[:, 0], [0, 1])
