"""Quantized LiteRT files agree with the model on real images (CIFAR-10).

The issue's bound: dynamic-range and full-int8 files give the model's top-1
class on >= 99% of a test batch of the benchmark data; float16 logits are
within 1e-2. A small network is trained briefly on two split-cifar10 tasks
(the data is read in place from the shared zip).
"""

import pathlib
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

import packnet_tf as pn
from packnet_tf import export
from packnet_tf import layers

pytestmark = pytest.mark.slow

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / (
    "cifar10_jpg.zip")
#: Two split-cifar10-5 tasks (shared/data/README.md).
TASKS = {"t1": ("airplane", "automobile"), "t2": ("bird", "cat")}
TRAIN_PER_CLASS = 1500
TEST_PER_CLASS = 500
AGREEMENT = 0.99
FLOAT16_TOLERANCE = 1e-2


def _read(archive, split, classes, per_class):
    """Images in [0, 1] and labels of `classes`, decoded from the zip."""
    images, labels = [], []
    for label, name in enumerate(classes):
        prefix = f"{split}/{name}/"
        files = sorted(n for n in archive.namelist()
                       if n.startswith(prefix) and n.endswith(".jpg"))
        for file in files[:per_class]:
            images.append(tf.io.decode_jpeg(archive.read(file)).numpy())
            labels.append(label)
    x = np.stack(images).astype("float32") / 255.0
    y = np.asarray(labels)
    order = np.random.default_rng(0).permutation(len(y))
    return x[order], y[order]


@pytest.fixture(scope="module")
def trained():
    if not DATA.exists():
        pytest.fail(f"The benchmark data is missing: {DATA}")
    keras.utils.set_random_seed(0)
    trunk = keras.Sequential([
        keras.Input((32, 32, 3)),
        layers.PackedConv2D(16, 3, padding="same", name="conv1"),
        # Momentum 0.9: the moving statistics settle within brief training.
        layers.TaskBatchNormalization(momentum=0.9, name="bn1"),
        keras.layers.ReLU(),
        keras.layers.MaxPooling2D(),
        layers.PackedConv2D(32, 3, padding="same", activation="relu",
                            name="conv2"),
        keras.layers.MaxPooling2D(),
        layers.PackedConv2D(32, 3, padding="same", activation="relu",
                            name="conv3"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        layers.PackedDense(64, activation="relu", name="dense"),
    ])
    model = pn.PackNetModel(trunk, max_tasks=2)
    data = {}
    with zipfile.ZipFile(DATA) as archive:
        for task, classes in TASKS.items():
            train = _read(archive, "train", classes, TRAIN_PER_CLASS)
            data[task] = (train, _read(archive, "test", classes,
                                       TEST_PER_CLASS))
            pn.train_task(model, task, train, num_classes=2, epochs=3,
                          prune_fraction=0.5, finetune_epochs=1,
                          batch_size=64, verbose=0)
    return model, data


def _lite_outputs(path, task, x):
    runner = Interpreter(model_path=str(path)).get_signature_runner(
        f"task_{task}")
    return np.concatenate([
        runner(inputs=x[i:i + 250])["outputs"] for i in range(0, len(x), 250)])


@pytest.mark.parametrize("quantize", ["dynamic", "int8"])
def test_quantized_files_agree_on_the_top_class(trained, tmp_path, quantize):
    model, data = trained
    for task in TASKS:
        (x_train, _), (x_test, _) = data[task]
        path = export.tflite(model, tmp_path / f"{task}.tflite", task=task,
                             quantize=quantize,
                             representative_data=x_train[:200])
        model.use_task(task)
        expected = model.predict(x_test, batch_size=250, verbose=0)
        got = _lite_outputs(path, task, x_test)
        agreement = np.mean(got.argmax(1) == expected.argmax(1))
        assert agreement >= AGREEMENT, (task, agreement)


def test_multi_task_int8_and_float16_files(trained, tmp_path):
    model, data = trained
    int8 = export.tflite(
        model, tmp_path / "int8.tflite", quantize="int8",
        representative_data={t: d[0][0][:200] for t, d in data.items()})
    half = export.tflite(model, tmp_path / "half.tflite", quantize="float16")
    for task in TASKS:
        x_test = data[task][1][0]
        model.use_task(task)
        expected = model.predict(x_test, batch_size=250, verbose=0)
        agreement = np.mean(
            _lite_outputs(int8, task, x_test).argmax(1) == expected.argmax(1))
        assert agreement >= AGREEMENT, (task, agreement)
        np.testing.assert_allclose(
            _lite_outputs(half, task, x_test), expected, rtol=0,
            atol=FLOAT16_TOLERANCE)
