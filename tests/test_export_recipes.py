"""The deployment recipes in export/: LiteRT runner and TF Serving requests.

No TF Serving server can run here, so the request helpers are checked
against the exported SavedModel itself: the request is read the way the
server reads it and run on the signature it names.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from packnet_tf import export

from test_export_plain import (
    FLOAT_TOLERANCE,
    model_outputs,
    packed_model,
    probe_inputs,
    wide_trunk,
)

RECIPES = pathlib.Path(__file__).resolve().parents[1] / "export"
TASKS = ("a", "b", "c")

#: Runs the LiteRT runner where TensorFlow, Keras and packnet_tf cannot be
#: imported, as on a device.
DEVICE = (
    "import runpy, sys\n"
    "for name in ('tensorflow', 'keras', 'tf_keras', 'packnet_tf'):\n"
    "    sys.modules[name] = None\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def _load_recipe(name):
    spec = importlib.util.spec_from_file_location(
        name, RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model():
    return packed_model(wide_trunk(), classes=(4, 3, 5))


def _run_runner(*args, fails=False):
    result = subprocess.run(
        [sys.executable, "-c", DEVICE, str(RECIPES / "litert_run.py"),
         *map(str, args)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if fails:
        assert result.returncode != 0, result.stdout
        return result.stderr
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("\t") for line in result.stdout.splitlines()
            if line.count("\t") == 2]
    return rows


def _top(picks):
    return [p.split(" (")[0] for p in picks.split("  ")]


@pytest.mark.slow
def test_litert_runner_prints_top_k_per_task_for_a_npy_batch(model,
                                                              tmp_path):
    path = export.tflite(model, tmp_path / "all.tflite")
    x = probe_inputs(model, count=4)
    np.save(tmp_path / "batch.npy", x)
    rows = _run_runner(path, tmp_path / "batch.npy", "--top-k", "2")
    assert [row[0] for row in rows] == [t for t in TASKS for _ in range(4)]
    for task in TASKS:
        expected = np.argsort(-model_outputs(model, task, x), axis=1)[:, :2]
        got = [_top(r[2]) for r in rows if r[0] == task]
        assert got == [[str(i) for i in row] for row in expected]
    rows = _run_runner(path, tmp_path / "batch.npy", "--task", "b")
    assert {row[0] for row in rows} == {"b"}
    assert all(len(_top(row[2])) == 3 for row in rows)  # b has 3 classes


def test_litert_runner_task_auto_prints_infer_tasks_choice(model, tmp_path):
    import packnet_tf as pn

    path = export.tflite(model, tmp_path / "all.tflite")
    x = probe_inputs(model, count=6)
    np.save(tmp_path / "batch.npy", x)
    rows = _run_runner(path, tmp_path / "batch.npy", "--task", "auto",
                       "--top-k", "1")
    expected = pn.infer_task(model, x)
    assert [row[0] for row in rows] == list(expected.task)
    assert [_top(row[2]) for row in rows] == [
        [str(c)] for c in expected.class_ids]
    (tmp_path / "all.tasks.txt").unlink()
    message = _run_runner(path, tmp_path / "batch.npy", "--task", "auto",
                          fails=True)
    assert "all.tasks.txt" in message and "missing" in message
    one = export.tflite(model, tmp_path / "a.tflite", task="a")
    message = _run_runner(one, tmp_path / "batch.npy", "--task", "auto",
                          fails=True)
    assert "needs an any_task signature" in message


@pytest.mark.slow
def test_litert_runner_reads_image_files(model, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    names = []
    for index in range(3):
        pixels = rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
        name = tmp_path / f"image{index}.png"
        Image.fromarray(pixels).save(name)
        names.append(name)
    path = export.tflite(model, tmp_path / "a.tflite", task="a")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"a": ["cat", "dog", "owl", "fox"]}))
    rows = _run_runner(path, *names, "--top-k", "1", "--labels", labels)
    # The same decoding and resizing as the runner, then the packed model.
    x = np.stack([
        np.asarray(Image.open(n).convert("RGB").resize((8, 8),
                   Image.BILINEAR), dtype=np.float32) / 255 for n in names])
    best = model_outputs(model, "a", x).argmax(axis=1)
    assert [row[1] for row in rows] == [n.name for n in names]
    assert [_top(row[2]) for row in rows] == [
        [["cat", "dog", "owl", "fox"][i]] for i in best]


def _serve(base, model_name, signature, inputs, version=None):
    """What TF Serving does with a request: load, pick the signature, run."""
    folder = base / model_name
    version = version or max(int(v) for v in os.listdir(folder))
    loaded = tf.saved_model.load(str(folder / str(version)))
    function = loaded.signatures[signature]
    return function(**{k: tf.constant(v, tf.float32)
                       for k, v in inputs.items()})


def test_rest_request_runs_on_the_exported_signature(model, tmp_path):
    client = _load_recipe("serving_client")
    export.saved_model(model, tmp_path, tasks=["b"])
    x = probe_inputs(model)
    url, body = client.rest_request("localhost:8501", "b", x, version=1)
    assert url == "http://localhost:8501/v1/models/b/versions/1:predict"
    request = json.loads(body)
    outputs = _serve(tmp_path, "b", request["signature_name"],
                     request["inputs"], version=1)
    reply = json.dumps({"outputs": outputs["outputs"].numpy().tolist()})
    np.testing.assert_allclose(
        client.parse_rest_reply(reply), model_outputs(model, "b", x),
        rtol=0, atol=FLOAT_TOLERANCE)


def test_grpc_request_runs_on_the_multi_task_signature(model, tmp_path):
    client = _load_recipe("serving_client")
    from tensorflow_serving.apis import predict_pb2

    export.saved_model(model, tmp_path, layout="multi")
    x = probe_inputs(model)
    sent = client.grpc_request("multi_model", x, signature="task_c")
    request = predict_pb2.PredictRequest.FromString(sent.SerializeToString())
    inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    outputs = _serve(tmp_path, request.model_spec.name,
                     request.model_spec.signature_name, inputs)
    np.testing.assert_allclose(
        outputs["outputs"].numpy(), model_outputs(model, "c", x), rtol=0,
        atol=FLOAT_TOLERANCE)


@pytest.fixture(scope="module")
def labelled():
    """Tasks with input contracts: a ("unit", named classes), b (ids)."""
    import packnet_tf as pn

    model = packed_model(wide_trunk(), classes=(4, 3))
    model.set_input_contract("a", pn.InputContract(
        class_names=("cat", "dog", "owl", "fox")))
    model.set_input_contract("b", pn.InputContract("mobilenet_v2"))
    return model


@pytest.mark.slow
def test_litert_runner_feeds_raw_pixels_and_reads_labels_files(labelled,
                                                               tmp_path):
    from PIL import Image

    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)
    names = []
    for index, image in enumerate(pixels):
        names.append(tmp_path / f"image{index}.png")
        Image.fromarray(image).save(names[-1])
    path = export.tflite(labelled, tmp_path / "a8.tflite", task="a",
                         inputs="pixels", quantize="int8",
                         representative_data=rng.integers(
                             0, 256, (64, 8, 8, 3)).astype("float32"))
    rows = _run_runner(path, *names, "--top-k", "1")
    # What the file itself answers on the raw pixels (PNG is lossless).
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner(
        "task_a_pixels")
    best = runner(pixels=pixels)["outputs"].argmax(axis=1)
    assert [row[0] for row in rows] == ["a"] * 3
    # Class names come from a.labels.txt beside the file.
    assert [_top(row[2]) for row in rows] == [
        [["cat", "dog", "owl", "fox"][i]] for i in best]
    np.save(tmp_path / "floats.npy", pixels / 255.0)
    result = subprocess.run(
        [sys.executable, "-c", DEVICE, str(RECIPES / "litert_run.py"),
         str(path), str(tmp_path / "floats.npy")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "reads raw uint8 pixels" in result.stderr


def test_rest_images_request_as_tf_serving_parses_it(labelled, tmp_path):
    import base64

    client = _load_recipe("serving_client")
    export.saved_model(labelled, tmp_path, tasks=["a"])
    pixels = np.random.default_rng(3).integers(0, 256, (4, 10, 9, 3),
                                               dtype=np.uint8)
    files = [tf.io.encode_png(p).numpy() for p in pixels]
    url, body = client.rest_images_request(
        "localhost:8501", "a", files, client.images_signature("a"))
    assert url == "http://localhost:8501/v1/models/a:predict"
    request = json.loads(body)
    # TF Serving turns each {"b64": ...} into the bytes it encodes.
    inputs = {key: tf.constant([base64.b64decode(v["b64"]) for v in values])
              for key, values in request["inputs"].items()}
    loaded = tf.saved_model.load(str(tmp_path / "a" / "1"))
    outputs = loaded.signatures[request["signature_name"]](**inputs)
    reply = json.dumps({"outputs": {
        k: (v.numpy().astype(str) if v.dtype == tf.string else v.numpy())
        .tolist() for k, v in outputs.items()}})
    names, scores = client.parse_rest_classes(reply)
    x = tf.image.resize(tf.cast(pixels, tf.float32), (8, 8)) / 255.0
    best = model_outputs(labelled, "a", x.numpy()).argmax(axis=1)
    assert list(names[:, 0]) == [["cat", "dog", "owl", "fox"][i]
                                 for i in best]
    assert scores.shape == (4, 4)


def test_grpc_images_request_runs_on_the_multi_task_signature(labelled,
                                                              tmp_path):
    client = _load_recipe("serving_client")
    from tensorflow_serving.apis import predict_pb2

    export.saved_model(labelled, tmp_path, layout="multi")
    pixels = np.random.default_rng(4).integers(0, 256, (3, 8, 8, 3),
                                               dtype=np.uint8)
    files = [tf.io.encode_png(p).numpy() for p in pixels]
    sent = client.grpc_images_request("multi_model", files, "task_b_images")
    request = predict_pb2.PredictRequest.FromString(sent.SerializeToString())
    inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    loaded = tf.saved_model.load(str(tmp_path / "multi_model" / "1"))
    outputs = loaded.signatures[request.model_spec.signature_name](
        **{k: tf.constant(v) for k, v in inputs.items()})
    x = pixels.astype("float32") / 127.5 - 1.0
    np.testing.assert_allclose(
        outputs["logits"].numpy(), model_outputs(labelled, "b", x), rtol=0,
        atol=FLOAT_TOLERANCE)
    assert outputs["class_names"].numpy()[0, 0].decode() in ("0", "1", "2")


@pytest.mark.parametrize("size_in, size_out", [
    ((32, 32), (8, 8)), ((7, 5), (32, 24)), ((30, 17), (30, 9))],
    ids=["shrink", "grow", "one-axis"])
def test_litert_runner_resizes_as_the_training_pipeline(size_in, size_out):
    # Pillow's BILINEAR smooths when it shrinks; training resizes with
    # TensorFlow's bilinear method, which the runner repeats in NumPy.
    runner = _load_recipe("litert_run")
    pixels = np.random.default_rng(0).integers(
        0, 256, size_in + (3,)).astype(np.uint8)
    expected = tf.image.resize(pixels.astype(np.float32), size_out).numpy()
    np.testing.assert_allclose(runner.resize_bilinear(pixels, *size_out),
                               expected, rtol=0, atol=1e-3)


def test_litert_runner_keeps_a_float_task_named_like_a_pixels_signature(
        tmp_path):
    """A float task literally named `cam_pixels` (signature
    `task_cam_pixels`, input `inputs`) is not taken for task `cam`'s pixels
    signature: only a `pixels` input drops the suffix."""
    from conftest import fake_train

    from packnet_tf.export.signatures import PIXELS_NAME

    runner = _load_recipe("litert_run")
    assert runner.PIXELS_INPUT == PIXELS_NAME  # the script cannot import it
    assert runner.task_of("task_cam_pixels", "inputs") == "cam_pixels"
    assert runner.task_of("task_cam_pixels", PIXELS_NAME) == "cam"
    import packnet_tf as pn

    model = pn.PackNetModel(wide_trunk(), max_tasks=2)
    model.add_task("cam_pixels", num_classes=3)
    fake_train(model, np.random.default_rng(0))
    model.prune(0.5)
    model.end_task(recalibrate=False)  # weights written by hand
    path = export.tflite(model, tmp_path / "one.tflite")
    x = probe_inputs(model, count=2)
    np.save(tmp_path / "batch.npy", x)
    rows = _run_runner(path, tmp_path / "batch.npy", "--task", "cam_pixels")
    assert [row[0] for row in rows] == ["cam_pixels", "cam_pixels"]
    expected = np.argsort(-model_outputs(model, "cam_pixels", x), axis=1)
    assert [_top(r[2]) for r in rows] == [
        [str(i) for i in row] for row in expected]


@pytest.mark.slow
def test_litert_runner_refuses_bombs_and_unreadable_files(model, tmp_path):
    """Named and refused from the header, before anything is decoded."""
    from test_hostile_input import png_bomb

    path = export.tflite(model, tmp_path / "a.tflite", task="a")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb())
    err = _run_runner(path, bomb, fails=True)
    assert "bomb.png: declares 16000 x 16000 pixels; expected at most " \
        "16,000,000 (--max-image-pixels)" in err
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    err = _run_runner(path, junk, fails=True)
    assert "junk.png: not a readable image file" in err
    err = _run_runner(path, junk, "--max-image-pixels", "10", fails=True)
    assert "junk.png" in err


def test_litert_runner_default_limit_is_the_exports():
    from packnet_tf.data import ImageLimits

    spec = importlib.util.spec_from_file_location(
        "litert_run", RECIPES / "litert_run.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    assert runner.MAX_IMAGE_PIXELS == ImageLimits().max_image_pixels
