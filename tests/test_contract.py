"""Input contracts: checked when set, saved with the model, absent in old files."""

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_export_plain import FLOAT_TOLERANCE, model_outputs

import packnet_tf as pn
from packnet_tf import export, layers
from packnet_tf.core.contract import InputContract, as_contract
from packnet_tf.io import checkpoint


def _trunk(channels=3):
    return keras.Sequential([
        keras.Input((6, 6, channels)),
        layers.PackedConv2D(4, 3, padding="same", name="conv"),
        keras.layers.Flatten(),
        layers.PackedDense(8, activation="relu", name="dense"),
    ], name="trunk")


@pytest.fixture
def model():
    keras.utils.set_random_seed(0)
    model = pn.PackNetModel(_trunk(), max_tasks=3)
    model.add_task("a", num_classes=2, input_contract=InputContract(
        "mobilenet_v2", class_names=("left", "right")))
    model.prune(0.5)
    model.end_task()
    return model


@pytest.mark.parametrize("fields, match", [
    ({"preprocess": "auto"}, "Expected `preprocess` in"),
    ({"preprocess": "no_such_model"}, "Expected `preprocess` in"),
    ({"resize": "cubic"}, "Expected `resize` in"),
    ({"class_names": ("a", "a")}, "distinct"),
    ({"class_names": ("a", "b\nc")}, "one-line"),
    ({"class_names": "ab"}, "non-empty list"),
    ({"from_logits": 1}, "True or False"),
    ({"pixels": "yes"}, "True or False"),
], ids=["auto", "unknown", "resize", "repeated", "newline", "string",
        "from_logits", "pixels"])
def test_bad_fields_are_refused(fields, match):
    with pytest.raises(ValueError, match=match):
        InputContract(**fields)


def test_as_contract_takes_contracts_dicts_and_none():
    contract = InputContract("vgg16", resize=None, class_names=["x"])
    assert contract.class_names == ("x",)
    assert as_contract(contract) is contract
    assert as_contract(contract.to_config()) == contract
    assert as_contract(None) is None
    with pytest.raises(ValueError, match="Unknown input contract key"):
        as_contract({"preprocess": "unit", "size": 3})
    with pytest.raises(TypeError, match="InputContract, a dict"):
        as_contract("unit")


def test_the_contract_must_fit_the_head_and_the_trunk():
    model = pn.PackNetModel(_trunk(channels=1), max_tasks=2)
    with pytest.raises(ValueError, match="head of 3 outputs .* names 2"):
        model.add_task("a", num_classes=3, input_contract={
            "class_names": ["x", "y"]})
    # Caffe-style preprocessing reorders 3 channels: not on a grey trunk.
    with pytest.raises(ValueError, match="preprocess='vgg16' does not work"):
        model.add_task("a", num_classes=2,
                       input_contract={"preprocess": "vgg16"})
    assert model.tasks == []
    model.add_task("a", num_classes=2, input_contract={"preprocess": "unit"})
    with pytest.raises(ValueError, match="Unknown task 'z'"):
        model.set_input_contract("z", None)


def test_contract_is_saved_and_settable_on_a_finished_task(model, tmp_path):
    path = checkpoint.save_model(model, tmp_path / "m.keras")
    loaded = checkpoint.load_model(path)
    assert loaded.tasks[0].input_contract == model.tasks[0].input_contract
    assert loaded.tasks[0].input_contract.preprocess == "mobilenet_v2"
    info = loaded.set_input_contract("a", {"preprocess": "unit"})
    assert info.input_contract.class_names is None
    assert loaded.verify() == {"a": 0.0}  # metadata, not weights


def test_a_task_trained_on_floats_exports_no_raw_pixel_signatures(
        tmp_path):
    keras.utils.set_random_seed(0)
    model = pn.PackNetModel(_trunk(), max_tasks=2)
    model.add_task("f", num_classes=2, input_contract=InputContract(
        "none", class_names=("x", "y"), pixels=False))
    model.end_task()
    assert "float inputs, not pixels" in model.tasks[0].input_contract \
        .describe()
    folder = export.saved_model(model, tmp_path / "serving",
                                tasks=["f"])["f"]
    signatures = tf.saved_model.load(str(folder)).signatures
    assert sorted(signatures) == ["serving_default", "task_f"]
    out = signatures["task_f"](inputs=tf.zeros((1, 6, 6, 3)))
    assert out["class_names"].dtype == tf.string
    with pytest.raises(ValueError, match=r"task\(s\) \['f'\] were trained "
                       "on float inputs that are not 0-255 pixels"):
        export.tflite(model, tmp_path / "f.tflite", task="f",
                      inputs="pixels")
    assert not (tmp_path / "f.tflite").exists()


def test_the_cli_records_pixels_by_the_data(tmp_path):
    from packnet_tf import data
    from packnet_tf.cli.contracts import trained_on_pixels

    x = np.zeros((4, 6, 6, 3))
    y = np.array([0, 1, 0, 1])
    floats = data.ArraySource({"train": (x.astype("float32"), y)},
                              test_split=None)
    ints = data.ArraySource({"train": (x.astype("uint8"), y)},
                            test_split=None)
    assert not trained_on_pixels(floats, "none")
    assert trained_on_pixels(floats, "unit")  # 0-255 values stored as floats
    assert trained_on_pixels(ints, "none")


def _strip_contracts(source, target):
    """Writes `source` as a file from before contracts (no such key)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            data = old.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                for task in config["config"]["tasks"]:
                    del task["input_contract"]
                data = json.dumps(config).encode()
            new.writestr(item, data)
    return target


def test_an_old_file_loads_and_exports_as_before(model, tmp_path):
    saved = checkpoint.save_model(model, tmp_path / "new.keras")
    old = checkpoint.load_model(_strip_contracts(saved, tmp_path / "old.keras"))
    assert old.tasks[0].input_contract is None
    x = np.random.default_rng(0).normal(size=(3, 6, 6, 3)).astype("float32")
    folder = export.saved_model(old, tmp_path / "served")["a"]
    loaded = tf.saved_model.load(folder)
    assert set(loaded.signatures) == {"serving_default", "task_a"}
    out = loaded.signatures["serving_default"](inputs=x)
    np.testing.assert_allclose(out["outputs"].numpy(),
                               model_outputs(old, "a", x), rtol=0,
                               atol=FLOAT_TOLERANCE)
    np.testing.assert_array_equal(out["logits"].numpy(),
                                  out["outputs"].numpy())
    path = export.tflite(old, tmp_path / "a.tflite", task="a")
    assert (tmp_path / "a.labels.txt").read_text() == "0\n1\n"
    assert path.endswith("a.tflite")


@pytest.mark.parametrize("mode", ["unit", "none", "mobilenet_v2", "vgg16",
                                  "resnet50"])
def test_training_prepares_pixels_with_the_contracts_function(mode):
    """One preprocessing: what the data pipeline trains on is what every
    export computes from the same pixels (both call the contract's)."""
    from packnet_tf.core.contract import preprocess_function
    from packnet_tf.data import ArraySource, batches

    pixels = np.random.default_rng(0).integers(
        0, 256, (4, 6, 6, 3)).astype("uint8")
    source = ArraySource({"train": (pixels, np.arange(4) % 2)},
                         test_split=None)
    x, _ = next(iter(batches(source, "train", (6, 6, 3), batch_size=4,
                             shuffle=False, preprocess=mode)))
    exported = preprocess_function(mode)(tf.constant(pixels, tf.float32))
    np.testing.assert_array_equal(x.numpy(), exported.numpy())


@pytest.mark.parametrize("mode", ["unit", "mobilenet_v2"])
def test_training_and_every_export_read_the_same_image_alike(mode, tmp_path):
    """One preprocessing, end to end: the same PNG image gives the same
    logits through the training pipeline (`packnet_tf.data.batches`), the
    SavedModel's `_pixels` and `_images` signatures and the pixel TFLite
    file (within FLOAT_TOLERANCE: the graphs round differently)."""
    from ai_edge_litert.interpreter import Interpreter

    from packnet_tf.data import ArraySource, batches

    keras.utils.set_random_seed(0)
    trunk = keras.Sequential([
        keras.Input((8, 8, 3)),
        layers.PackedConv2D(4, 3, activation="relu"),
        keras.layers.Flatten(),
        layers.PackedDense(6, activation="relu"),
    ])
    model = pn.PackNetModel(trunk, max_tasks=2)
    model.add_task("t", num_classes=3, input_contract=InputContract(mode))
    model.end_task()
    pixels = np.random.default_rng(1).integers(
        0, 256, (1, 8, 8, 3)).astype("uint8")
    source = ArraySource({"train": (pixels, np.zeros(1, int))},
                         test_split=None)
    x, _ = next(iter(batches(source, "train", (8, 8, 3), batch_size=1,
                             shuffle=False, preprocess=mode)))
    trained = model(x, training=False).numpy()

    export.saved_model(model, tmp_path / "serving")
    signatures = tf.saved_model.load(
        str(tmp_path / "serving" / "t" / "1")).signatures
    png = tf.io.encode_png(pixels[0])
    served = {
        "pixels": signatures["task_t_pixels"](pixels=tf.constant(pixels)),
        "images": signatures["task_t_images"](image_bytes=tf.stack([png])),
    }
    for kind, outputs in served.items():
        np.testing.assert_allclose(outputs["logits"].numpy(), trained,
                                   atol=FLOAT_TOLERANCE, err_msg=kind)
    path = export.tflite(model, tmp_path / "t.tflite", task="t",
                         inputs="pixels")
    runner = Interpreter(model_path=str(path)).get_signature_runner(
        "task_t_pixels")
    np.testing.assert_allclose(runner(pixels=pixels)["outputs"], trained,
                               atol=FLOAT_TOLERANCE, err_msg="tflite")
