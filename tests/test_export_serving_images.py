"""Serving what clients have: JPEG bytes and raw pixels of real CIFAR-10 images.

Two models are trained and exported through the command line on
split-cifar10 classes read in place from `../shared/data/cifar10_jpg.zip`:
an RGB one at 24x24 (so every image is resized in the graph) with a task in
[0, 1] ("auto") and a task with `mobilenet_v2` preprocessing ([-1, 1]), and a
greyscale one at 32x32. A fresh process where Keras and packnet_tf cannot be
imported sends the test images' JPEG bytes to `task_<name>_images` and their
decoded uint8 arrays to `task_<name>_pixels` (per-task and multi layout), a
REST body built by export/serving_client.py the way TF Serving parses it,
and trunk-size pixels to the pixel TFLite files. Every float export must
give the top-1 class of `packnet-tf eval`'s pipeline on every image, and
the accuracy `packnet-tf eval` prints; int8 files >= 99% of them.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
from cli_support import ROOT, run_cli, write_config

from packnet_tf.data import batches, from_spec
from packnet_tf.io import checkpoint

pytestmark = pytest.mark.slow

#: Beside the checkout, as in CI (shared/data/README.md).
DATA = ROOT.parent / "shared" / "data" / "cifar10_jpg.zip"
#: Model -> (input shape, {task: (classes, preprocess)}).
MODELS = {
    "rgb": ([24, 24, 3], {"vehicles": (["airplane", "automobile"], "auto"),
                          "pets": (["bird", "ship", "truck"], "mobilenet_v2")}),
    "grey": ([32, 32, 1], {"ships": (["ship", "truck"], "auto")}),
}
INT8_AGREEMENT = 0.99
#: Images per request.
CHUNK = 250

#: Runs in the fresh process: Keras, tf_keras and packnet_tf unimportable.
CONSUMER = textwrap.dedent("""
    import base64, json, sys, zipfile
    for name in ("keras", "tf_keras", "packnet_tf"):
        sys.modules[name] = None
    import numpy as np
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    job = json.load(open(sys.argv[1]))
    archive = zipfile.ZipFile(job["data"])
    results = {}

    def run(function, **feed):
        return {k: v.numpy() for k, v in function(**feed).items()}

    for task in job["tasks"]:
        name, channels = task["name"], task["channels"]
        height, width = task["size"]
        files = [archive.read(m) for m in task["members"]]
        pixels = np.stack([tf.io.decode_jpeg(f, channels=channels).numpy()
                           for f in files])
        # What an app does before a TFLite pixel file: resize to its size.
        trunk = tf.cast(tf.round(tf.clip_by_value(tf.image.resize(
            pixels, (height, width)), 0, 255)), tf.uint8).numpy()
        out = {}
        for layout, folder in task["saved"].items():
            signatures = tf.saved_model.load(folder).signatures
            images = signatures[f"task_{name}_images"]
            raw = signatures[f"task_{name}_pixels"]
            ids, names, ids_pixels, ids_trunk = [], [], [], []
            for i in range(0, len(files), %(chunk)d):
                got = run(images, image_bytes=tf.constant(files[i:i + %(chunk)d]))
                ids.append(got["class_ids"][:, 0])
                names += [n.decode() for n in got["class_names"][:, 0]]
                ids_pixels.append(run(raw, pixels=pixels[i:i + %(chunk)d])
                                  ["class_ids"][:, 0])
                ids_trunk.append(run(raw, pixels=trunk[i:i + %(chunk)d])
                                 ["class_ids"][:, 0])
            out[layout] = {"images": np.concatenate(ids).tolist(),
                           "names": names,
                           "pixels": np.concatenate(ids_pixels).tolist(),
                           "trunk": np.concatenate(ids_trunk).tolist()}
        # The REST body as TF Serving parses it: each {"b64": ...} is bytes.
        body = json.load(open(task["rest"]))
        feed = {key: tf.constant([base64.b64decode(v["b64"]) for v in values])
                for key, values in body["inputs"].items()}
        served = tf.saved_model.load(task["saved"]["per_task"])
        got = run(served.signatures[body["signature_name"]], **feed)
        out["rest"] = [n.decode() for n in got["class_names"][:, 0]]
        for kind, path in task["tflite"].items():
            runner = Interpreter(model_path=path).get_signature_runner(
                f"task_{name}_pixels")
            best = [runner(pixels=trunk[i:i + %(chunk)d])["outputs"]
                    .argmax(axis=1) for i in range(0, len(trunk), %(chunk)d)]
            out[kind] = np.concatenate(best).tolist()
        # Bad input: a clear error, not a crash.
        errors = {}
        other = 4 - channels
        wrong = np.zeros((1, 8, 8, other), np.uint8)
        for case, function, feed in [
                ("channels", raw, {"pixels": wrong}),
                ("empty", raw, {"pixels": np.zeros((0, 8, 8, channels),
                                                   np.uint8)}),
                ("undecodable", images,
                 {"image_bytes": tf.constant([b"<html>not found</html>"])})]:
            try:
                function(**feed)
                errors[case] = None
            except tf.errors.InvalidArgumentError as error:
                errors[case] = error.message
        out["errors"] = errors
        results[name] = out
    loaded = sorted(n for n, m in sys.modules.items()
                    if m is not None and n.split(".")[0] in
                    ("keras", "tf_keras", "packnet_tf"))
    results["loaded"] = loaded
    json.dump(results, open(sys.argv[2], "w"))
""") % {"chunk": CHUNK}


def _config(kind):
    shape, tasks = MODELS[kind]
    return {
        "model": f"{kind}.keras", "seed": 0,
        "network": {"type": "cnn", "input_shape": shape,
                    "conv": [8, "pool", 16, "pool"], "dense": [32]},
        "defaults": {"epochs": 1, "finetune_epochs": 0, "batch_size": 64,
                     "prune_fraction": 0.5},
        "tasks": [{"name": name, "preprocess": preprocess,
                   "data": {"folder": str(DATA), "classes": classes,
                            "test_split": None}}
                  for name, (classes, preprocess) in tasks.items()],
    }


def _members(classes):
    """The test images of `classes` in the order the folder source reads."""
    with zipfile.ZipFile(DATA) as archive:
        names = archive.namelist()
    members, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(n for n in names if n.startswith(f"test/{name}/")
                       and n.endswith(".jpg"))
        members += found
        labels += [label] * len(found)
    return members, np.asarray(labels)


def _pipeline_top1(model_path, task, classes):
    """Top-1 ids and labels on the test split, read as `packnet-tf eval`."""
    model = checkpoint.load_model(model_path)
    contract = next(t for t in model.tasks if t.name == task).input_contract
    source = from_spec({"folder": str(DATA), "classes": classes,
                        "train_split": "test", "test_split": None})
    shape = tuple(model.trunk.inputs[0].shape[1:])
    data = batches(source, "test", shape, batch_size=256, shuffle=False,
                   preprocess=contract.preprocess, resize=True)
    model.use_task(task)
    ids, labels = [], []
    for x, y in data:
        ids.append(np.argmax(model(x, training=False).numpy(), axis=1))
        labels.append(y.numpy())
    return np.concatenate(ids), np.concatenate(labels)


def _eval_accuracy(model_path, task):
    code, out, err = run_cli("eval", model_path, "--task", task, "--data",
                             DATA)
    assert code == 0, err
    found = re.search(r"\((\d+) examples\): accuracy (\d\.\d{4})", out)
    return int(found.group(1)), found.group(2)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from test_export_recipes import _load_recipe

    client = _load_recipe("serving_client")
    root = tmp_path_factory.mktemp("cifar_serving")
    job = {"data": str(DATA), "tasks": []}
    expected = {}
    for kind in MODELS:
        config = write_config(root / f"{kind}.yaml", _config(kind))
        code, _, err = run_cli("train", config, "--quiet")
        assert code == 0, err
        model = root / f"{kind}.keras"
        for args in (["--saved-model", root / f"serving_{kind}"],
                     ["--saved-model", root / f"multi_{kind}", "--layout",
                      "multi"],
                     ["--tflite-dir", root / f"lite_{kind}",
                      "--tflite-inputs", "pixels"],
                     ["--tflite-dir", root / f"lite8_{kind}",
                      "--tflite-inputs", "pixels", "--quantize", "int8",
                      "--data", DATA]):
            code, _, err = run_cli("export", model, *args)
            assert code == 0, err
        shape, tasks = MODELS[kind]
        for name, (classes, _) in tasks.items():
            members, labels = _members(classes)
            ids, pipeline_labels = _pipeline_top1(model, name, classes)
            np.testing.assert_array_equal(pipeline_labels, labels)
            count, accuracy = _eval_accuracy(model, name)
            assert count == len(members)
            expected[name] = {"ids": ids, "labels": labels,
                              "classes": classes, "accuracy": accuracy}
            _, body = client.rest_images_request(
                "localhost:8501", name, [zipfile.ZipFile(DATA).read(m)
                                         for m in members[::250]],
                client.images_signature(name))
            (root / f"{name}.rest.json").write_text(body)
            job["tasks"].append({
                "name": name, "channels": shape[2], "size": shape[:2],
                "members": members, "rest": str(root / f"{name}.rest.json"),
                "saved": {"per_task": str(root / f"serving_{kind}" / name
                                          / "1"),
                          "multi": str(root / f"multi_{kind}" / "packnet"
                                       / "1")},
                "tflite": {"lite": str(root / f"lite_{kind}"
                                       / f"{name}.tflite"),
                           "lite8": str(root / f"lite8_{kind}"
                                        / f"{name}.tflite")}})
    (root / "job.json").write_text(json.dumps(job))
    (root / "consumer.py").write_text(CONSUMER)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, str(root / "consumer.py"), str(root / "job.json"),
         str(root / "results.json")], capture_output=True, text=True,
        env=env, timeout=600, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, expected, json.loads((root / "results.json").read_text())


def test_the_consumer_ran_without_keras_or_packnet(served):
    _, _, results = served
    assert results["loaded"] == []


@pytest.mark.parametrize("task", ["vehicles", "pets", "ships"])
@pytest.mark.parametrize("layout", ["per_task", "multi"])
def test_images_and_pixels_give_evals_classes(served, task, layout):
    _, expected, results = served
    want = expected[task]
    got = results[task][layout]
    for kind in ("images", "pixels"):
        np.testing.assert_array_equal(got[kind], want["ids"],
                                      err_msg=f"{kind} vs eval's pipeline")
    assert got["names"] == [want["classes"][i] for i in want["ids"]]
    accuracy = np.mean(np.asarray(got["images"]) == want["labels"])
    assert f"{accuracy:.4f}" == want["accuracy"]


@pytest.mark.parametrize("task", ["vehicles", "pets", "ships"])
def test_rest_body_with_b64_jpegs_gives_the_classes(served, task):
    _, expected, results = served
    want = expected[task]
    assert results[task]["rest"] == [
        want["classes"][i] for i in want["ids"][::250]]


@pytest.mark.parametrize("task", ["vehicles", "pets", "ships"])
def test_pixel_tflite_files_agree_with_the_model(served, task):
    root, expected, results = served
    got = results[task]
    reference = np.asarray(got["per_task"]["trunk"])
    np.testing.assert_array_equal(got["lite"], reference)
    agreement = np.mean(np.asarray(got["lite8"]) == reference)
    assert agreement >= INT8_AGREEMENT, agreement
    kind = "grey" if task == "ships" else "rgb"
    for folder in (f"lite_{kind}", f"lite8_{kind}"):
        labels = (root / folder / f"{task}.labels.txt").read_text()
        assert labels.splitlines() == expected[task]["classes"]


@pytest.mark.parametrize("task", ["pets", "ships"])
def test_bad_input_gets_a_clear_error_without_keras(served, task):
    _, _, results = served
    errors = results[task]["errors"]
    channels = 1 if task == "ships" else 3
    assert f"with {channels} channel(s)" in errors["channels"]
    assert "empty batch" in errors["empty"]
    assert "JPEG, PNG, GIF or BMP" in errors["undecodable"]
