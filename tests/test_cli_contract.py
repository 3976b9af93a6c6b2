"""`packnet-tf train` records input contracts; eval, info, export read them."""

import json

import numpy as np
import pytest
import tensorflow as tf
from cli_support import run_cli, write_config

from packnet_tf.io import checkpoint

CLASSES = ("left", "middle", "right")
#: The task learns a subset, in this label order.
SUBSET = ["right", "left"]


def _image_folder(root, size=12, per_class=6):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 60, (size, size, 3)) + 90 * label
                (root / split / name / f"{i}.png").write_bytes(
                    tf.io.encode_png(pixels.astype(np.uint8)).numpy())
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("contract")
    _image_folder(folder / "images")
    config = {
        "model": "model.keras", "seed": 0,
        "network": {"type": "cnn", "input_shape": [8, 8, 3],
                    "conv": [4, "pool"], "dense": [8]},
        "defaults": {"epochs": 1, "finetune_epochs": 0, "batch_size": 4,
                     "preprocess": "mobilenet_v2"},
        "tasks": [{"name": "sides", "data": {"folder": "images",
                                             "classes": SUBSET}}],
    }
    path = write_config(folder / "run.yaml", config)
    code, _, err = run_cli("train", path, "--quiet")
    assert code == 0, err
    return folder


def test_train_records_the_contract_and_info_shows_it(trained):
    model = checkpoint.load_model(trained / "model.keras")
    contract = model.tasks[0].input_contract
    assert contract.to_config() == {
        "preprocess": "mobilenet_v2", "resize": "bilinear",
        "class_names": SUBSET, "from_logits": True, "pixels": True}
    code, out, _ = run_cli("info", trained / "model.keras")
    assert code == 0
    assert "inputs: preprocess mobilenet_v2, resize bilinear; right, left" \
        in out
    _, out, _ = run_cli("info", trained / "model.keras", "--json")
    task = json.loads(out)["tasks"][0]
    assert task["input_contract"]["class_names"] == SUBSET
    code, out, _ = run_cli("verify", trained / "model.keras")
    assert code == 0 and "input contracts fit the model" in out


def test_eval_needs_no_preprocess_or_classes(trained):
    model, data = trained / "model.keras", trained / "images"
    code, implied, err = run_cli("eval", model, "--task", "sides",
                                 "--data", data)
    assert code == 0, err
    code, explicit, err = run_cli(
        "eval", model, "--task", "sides", "--data", data,
        "--preprocess", "mobilenet_v2", "--classes", ",".join(SUBSET))
    assert code == 0, err
    assert implied == explicit and "(12 examples)" in implied
    # The flags still override: another preprocessing, another result.
    code, other, _ = run_cli("eval", model, "--task", "sides", "--data",
                             data, "--preprocess", "none")
    assert code == 0 and other != implied


def test_eval_says_when_the_data_lacks_the_tasks_classes(trained, tmp_path):
    folder = tmp_path / "other"
    for split in ("train", "test"):
        for name in ("up", "down"):
            (folder / split / name).mkdir(parents=True)
            (folder / split / name / "0.png").write_bytes(tf.io.encode_png(
                np.zeros((8, 8, 3), np.uint8)).numpy())
    code, _, err = run_cli("eval", trained / "model.keras", "--task",
                           "sides", "--data", folder)
    assert code == 2
    assert "Unknown class 'right'" in err and "--classes" in err
    code, _, err = run_cli("eval", trained / "model.keras", "--task",
                           "sides", "--data", folder, "--classes", "up,down")
    assert code == 0, err


def test_export_pixel_tflite_and_labels(trained, tmp_path):
    code, _, err = run_cli(
        "export", trained / "model.keras", "--tflite-dir", tmp_path,
        "--tflite-inputs", "pixels", "--quantize", "int8", "--data",
        trained / "images")
    assert code == 0, err
    assert (tmp_path / "sides.labels.txt").read_text() == "right\nleft\n"
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(tmp_path / "sides.tflite")) \
        .get_signature_runner("task_sides_pixels")
    (detail,) = runner.get_input_details().values()
    assert detail["dtype"] == np.uint8 and detail["quantization"] == (1.0, 0)
