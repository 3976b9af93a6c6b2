"""`convert`: Keras models become PackNetModels with identical outputs."""

import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import randomize_statistics

import packnet_tf as pn
from packnet_tf import layers as packed

#: Converted outputs must match the original's within this (float32).
ATOL = 1e-6


def outputs(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def images(shape, seed=1, count=4):
    return np.random.default_rng(seed).uniform(
        0, 1, (count,) + shape).astype("float32")


def assert_converts_exactly(model, x, **kwargs):
    expected = outputs(model, x)
    converted = pn.convert(model, max_tasks=3, first_task="orig", **kwargs)
    np.testing.assert_allclose(outputs(converted, x), expected, rtol=0,
                               atol=ATOL)
    return converted


def sequential_model():
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(6, 3, padding="same", name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.ReLU(),
        keras.layers.SeparableConv2D(8, 3, name="sep"),
        keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw"),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(16, activation="relu", name="fc"),
        keras.layers.Dense(5, activation="softmax", name="predictions"),
    ], name="seq")


def residual_model():
    """Conv stem, a residual block (two branches joined by Add), a head
    whose softmax is a separate Activation layer."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    y = keras.layers.BatchNormalization(name="bn1")(x)
    y = keras.layers.ReLU()(y)
    y = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(y)
    y = keras.layers.BatchNormalization(name="bn2")(y)
    x = keras.layers.Add()([x, y])
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(4, name="logits")(x)
    out = keras.layers.Activation("softmax", name="probs")(x)
    return keras.Model(inputs, out, name="residual")


def test_sequential_model_converts_with_identical_outputs():
    keras.utils.set_random_seed(0)
    model = randomize_statistics(sequential_model())
    converted = assert_converts_exactly(model, images((8, 8, 3)))
    task = converted.active_task
    assert (task.name, task.task_id, task.num_classes, task.state) == (
        "orig", 1, 5, "training")
    names = {type(l).__name__ for l in converted.trunk.layers}
    assert {"PackedConv2D", "TaskBatchNormalization", "PackedSeparableConv2D",
            "PackedDepthwiseConv2D", "PackedDense"} <= names
    assert not {"Conv2D", "Dense", "BatchNormalization"} & names
    # Task 1 owns every packed weight; its head is the original classifier.
    total = converted.capacity().total
    assert total[0] == 0 and total[1] == sum(
        int(np.prod(w.shape)) for l in model.layers[:-1]
        for w in l.weights if "kernel" in w.name)
    head = converted.heads[0]
    assert isinstance(head, keras.layers.Dense)
    assert head.activation is keras.activations.softmax


def test_functional_residual_model_converts_with_identical_outputs():
    keras.utils.set_random_seed(0)
    model = randomize_statistics(residual_model())
    converted = assert_converts_exactly(model, images((8, 8, 3)))
    # The Activation after the Dense went into the head with it.
    assert [type(l).__name__ for l in converted.heads[0].layers] == [
        "InputLayer", "Dense", "Activation"]
    assert converted.trunk.output.shape == (None, 8)


def test_mobilenetv2_converts_with_identical_outputs():
    keras.utils.set_random_seed(0)
    model = randomize_statistics(keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10))
    converted = assert_converts_exactly(model, images((32, 32, 3)))
    assert converted.active_task.num_classes == 10


def test_resnet50_converts_with_identical_outputs():
    keras.utils.set_random_seed(0)
    model = randomize_statistics(keras.applications.ResNet50(
        input_shape=(32, 32, 3), weights=None, classes=10))
    assert_converts_exactly(model, images((32, 32, 3), count=2))


def test_every_argument_reaches_the_twin():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((9, 9, 4)),
        keras.layers.Conv2D(
            8, (3, 2), strides=(2, 1), padding="same", dilation_rate=1,
            groups=2, activation="relu", use_bias=True,
            kernel_regularizer=keras.regularizers.L2(0.01),
            bias_constraint=keras.constraints.NonNeg(),
            activity_regularizer=keras.regularizers.L1(0.001), name="conv"),
        keras.layers.BatchNormalization(
            momentum=0.9, epsilon=1e-2, center=False, synchronized=True,
            gamma_regularizer=keras.regularizers.L2(0.1), name="bn"),
        keras.layers.DepthwiseConv2D(2, dilation_rate=2, use_bias=False,
                                     name="dw"),
        keras.layers.Reshape((-1, 8)),
        keras.layers.Conv1D(3, 2, padding="causal", name="c1"),
        keras.layers.Flatten(),
        keras.layers.Dense(
            4, activation="tanh", kernel_initializer="he_normal",
            activity_regularizer=keras.regularizers.L1(0.01),
            kernel_constraint=keras.constraints.MaxNorm(2.0), name="fc"),
    ], name="args")
    expected = outputs(model, images((9, 9, 4)))
    converted = pn.convert(model, max_tasks=2)  # no task: trunk only
    trunk = {l.name: l for l in converted.trunk.layers}
    assert "fc" not in trunk  # the final Dense was cut off
    for layer in model.layers[:-1]:
        if not layer.weights:
            continue
        source = layer.get_config()
        twin = trunk[layer.name].get_config()
        for key, value in source.items():
            if key in ("renorm", "renorm_clipping", "renorm_momentum"):
                continue
            assert keras.saving.serialize_keras_object(twin[key]) == (
                keras.saving.serialize_keras_object(value)), (layer.name, key)
        assert twin["max_tasks"] == 2
    assert trunk["conv"].activity_regularizer.get_config() == (
        model.get_layer("conv").activity_regularizer.get_config())
    # The features are the Flatten output; the cut Dense read them.
    converted.add_task("a", num_classes=4)
    features = keras.Model(model.inputs[0], model.layers[-2].output)
    np.testing.assert_allclose(
        outputs(converted.trunk, images((9, 9, 4))),
        outputs(features, images((9, 9, 4))), rtol=0, atol=ATOL)
    assert expected.shape == (4, 4)


def test_first_task_none_gives_free_weights_and_no_task():
    keras.utils.set_random_seed(0)
    model = randomize_statistics(residual_model())
    converted = pn.convert(model, max_tasks=2, first_task=None)
    assert converted.tasks == [] and converted.heads == []
    total = converted.capacity().total
    assert total[0] > 0 and len(total) == 1  # all free
    # The first new task starts from the original weights.
    converted.add_task("new", num_classes=3)
    features = keras.Model(model.inputs[0], model.get_layer("logits").input)
    x = images((8, 8, 3))
    np.testing.assert_allclose(outputs(converted.trunk, x),
                               outputs(features, x), rtol=0, atol=ATOL)


def test_model_without_classifier_converts_whole_or_says_why():
    keras.utils.set_random_seed(0)
    # Like keras.applications with include_top=False, pooling="avg".
    base = randomize_statistics(keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, name="conv"),
        keras.layers.BatchNormalization(name="last_bn"),
        keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(),
    ]))
    x = images((8, 8, 3))
    converted = pn.convert(base, max_tasks=2)
    converted.add_task("a", num_classes=2)
    np.testing.assert_allclose(outputs(converted.trunk, x), outputs(base, x),
                               rtol=0, atol=ATOL)
    # With a first task, a backbone without a classifier becomes a
    # headless task (issue 25; tests/test_headless.py): its outputs are the
    # original's features.
    headless = pn.convert(base, max_tasks=2, first_task="a")
    assert headless.active_task.headless
    assert headless.active_task.num_classes is None
    np.testing.assert_allclose(outputs(headless, x), outputs(base, x),
                               rtol=0, atol=ATOL)


def test_nested_model_and_shared_layer_convert():
    keras.utils.set_random_seed(0)
    block = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, padding="same"),
        keras.layers.BatchNormalization(),
    ], name="block")
    shared = keras.layers.Conv2D(4, 3, padding="same", name="shared")
    inputs = keras.Input((8, 8, 3))
    x = shared(block(inputs))
    x = shared(x)  # the same layer twice: one twin, weights shared
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(3)(x)
    model = randomize_statistics(keras.Model(inputs, out))
    converted = assert_converts_exactly(model, images((8, 8, 3)))
    twins = [l for l in converted.trunk.layers if l.name == "shared"]
    assert len(twins) == 1 and isinstance(twins[0], packed.PackedConv2D)
    nested = converted.trunk.get_layer("block")
    assert isinstance(nested.layers[0], packed.PackedConv2D)


def test_conv_classifier_and_adapted_normalization():
    keras.utils.set_random_seed(0)
    norm = keras.layers.Normalization()
    norm.adapt(images((6, 6, 2), count=16))
    inputs = keras.Input((6, 6, 2))
    x = norm(inputs)
    x = keras.layers.Conv2D(4, 3)(x)
    x = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    x = keras.layers.Conv2D(3, 1, name="conv_preds")(x)  # as MobileNet
    x = keras.layers.Reshape((3,))(x)
    out = keras.layers.Activation("softmax")(x)
    model = keras.Model(inputs, out)
    converted = assert_converts_exactly(model, images((6, 6, 2)))
    frozen = [l for l in converted.trunk.layers
              if isinstance(l, keras.layers.Normalization)]
    assert len(frozen) == 1 and not frozen[0].weights
    assert converted.active_task.num_classes == 3
    # The (batch, 1, 1, 4) map is flattened for the next tasks' Dense heads.
    assert converted.trunk.output.shape == (None, 4)
    converted.prune(0.5)
    converted.end_task(recalibrate=False)  # pruned without data
    converted.add_task("next", num_classes=2)
    assert outputs(converted, images((6, 6, 2))).shape == (4, 2)


def test_batch_norm_axis_as_a_list_of_one_int_converts():
    keras.utils.set_random_seed(0)
    model = randomize_statistics(residual_model())
    x = images((8, 8, 3))
    expected = outputs(model, x)
    # As a layer restored from a Keras 2 config carries it.
    model.get_layer("bn1").axis = [3]
    converted = pn.convert(model, max_tasks=2, first_task="orig")
    assert converted.trunk.get_layer("bn1").axis == 3
    np.testing.assert_allclose(outputs(converted, x), expected, rtol=0,
                               atol=ATOL)


class Scale(keras.layers.Layer):
    """A subclassed layer with a weight."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), initializer="ones")

    def call(self, x):
        return x * self.scale


class MyDense(keras.layers.Dense):
    """A Dense subclass: may compute differently, so it is not converted."""


def _with(layer, input_shape=(6, 4)):
    inputs = keras.Input(input_shape)
    x = layer(inputs)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: keras.Sequential([keras.Input((5,), dtype="int32"),
                                   keras.layers.Embedding(10, 4, name="emb"),
                                   keras.layers.Flatten(),
                                   keras.layers.Dense(2)]),
         r"1 Embedding \('emb'\)"),
        (lambda: _with(keras.layers.LayerNormalization(name="ln")),
         r"1 LayerNormalization \('ln'\)"),
        (lambda: _with(keras.layers.Conv1DTranspose(3, 2, name="up")),
         r"1 Conv1DTranspose \('up'\)"),
        (lambda: _with(Scale(name="scale")), r"1 Scale \('scale'\)"),
        (lambda: _with(MyDense(3, name="mine")), r"1 MyDense \('mine'\)"),
    ],
)
def test_unsupported_layers_are_named(build, match):
    model = build()
    with pytest.raises(pn.UnsupportedLayerError, match=match) as info:
        pn.convert(model, max_tasks=2)
    assert "Supported layers with weights: Dense, Conv1D" in str(info.value)


def test_attention_is_rejected_with_every_class_named():
    inputs = keras.Input((6, 4))
    x = keras.layers.MultiHeadAttention(2, 4, name="mha")(inputs, inputs)
    x = keras.layers.LayerNormalization(name="ln")(x)
    x = keras.layers.Conv2DTranspose(2, 2, name="up")(
        keras.layers.Reshape((6, 4, 1))(x))
    out = keras.layers.Dense(2)(keras.layers.Flatten()(x))
    with pytest.raises(pn.UnsupportedLayerError,
                       match=r"1 MultiHeadAttention \('mha'\); 1 "
                             r"LayerNormalization \('ln'\); 1 "
                             r"Conv2DTranspose \('up'\)"):
        pn.convert(keras.Model(inputs, out), max_tasks=2)


def _dense_model(dense):
    return keras.Sequential([keras.Input((4,)), dense, keras.layers.Dense(2)])


def test_unsupported_batch_norm_arguments_are_errors():
    model = _dense_model(keras.layers.BatchNormalization(renorm=True,
                                                         name="bn"))
    with pytest.raises(pn.UnsupportedLayerError,
                       match=r"'bn' \(BatchNormalization\) has renorm=True, "
                             r"which TaskBatchNormalization does not "
                             r"support"):
        pn.convert(model, max_tasks=2)
    bn = keras.layers.BatchNormalization(name="bn")
    model = _dense_model(bn)
    bn.axis = [0, 1]  # as a Keras 2 config may carry it
    with pytest.raises(pn.UnsupportedLayerError,
                       match=r"'bn' \(BatchNormalization\) normalizes over "
                             r"axes \[0, 1\]"):
        pn.convert(model, max_tasks=2)


def test_lora_and_quantized_dense_are_errors():
    lora = keras.layers.Dense(3, name="lora")
    model = _dense_model(lora)
    lora.enable_lora(2)
    with pytest.raises(pn.UnsupportedLayerError,
                       match=r"'lora' \(Dense\) has lora_rank=2, which "
                             r"PackedDense does not support"):
        pn.convert(model, max_tasks=2)
    quantized = keras.layers.Dense(3, name="q")
    model = _dense_model(quantized)
    quantized.quantize("int8")
    with pytest.raises(pn.UnsupportedLayerError, match=r"'q' \(Dense\) is "
                                                       r"quantized"):
        pn.convert(model, max_tasks=2)


def test_bad_models_and_arguments():
    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match=r"Functional or Sequential model .*"
                                        r"Received: Subclassed"):
        pn.convert(Subclassed(), max_tasks=2)
    with pytest.raises(ValueError, match="is not built"):
        pn.convert(keras.Sequential([keras.layers.Dense(2)]), max_tasks=2)
    a, b = keras.Input((3,)), keras.Input((3,))
    two = keras.Model([a, b], keras.layers.Dense(2)(
        keras.layers.Concatenate()([a, b])))
    with pytest.raises(ValueError, match="Received 2 inputs and 1 outputs"):
        pn.convert(two, max_tasks=2)
    model = residual_model()
    with pytest.raises(ValueError, match=r"max_tasks` to be an int in "
                                         r"\[1, 255\]"):
        pn.convert(model, max_tasks=0)
    with pytest.raises(ValueError, match="Expected a task name"):
        pn.convert(model, max_tasks=2, first_task="bad name")


def test_converted_model_learns_two_more_tasks_and_keeps_task_one(tmp_path):
    keras.utils.set_random_seed(0)
    model = randomize_statistics(residual_model())
    x = images((8, 8, 3), count=16)
    converted = pn.convert(model, max_tasks=3, first_task="orig")
    # Prune without data, then keep task 1 as it now is.
    freed = converted.prune(0.5)
    assert freed == {"stem/kernel": 108, "conv1/kernel": 288}
    converted.end_task(recalibrate=False)  # no data: converted statistics
    task_one = outputs(converted, x)
    rng = np.random.default_rng(0)
    for name in ("second", "third"):
        before = [v.numpy().copy() for v in converted.trunk.weights]
        pn.train_task(converted, name, (x, rng.integers(0, 2, 16)),
                      num_classes=2, epochs=1, prune_fraction=0.5,
                      learning_rate=1e-2, batch_size=8, verbose=0)
        changed = [not np.array_equal(b, v.numpy())
                   for b, v in zip(before, converted.trunk.weights)]
        assert any(changed)  # the new task did train in the freed weights
    converted.use_task("orig")
    np.testing.assert_array_equal(outputs(converted, x), task_one)
    assert converted.verify() == {"orig": 0.0, "second": 0.0, "third": 0.0}
    path = tmp_path / "converted.keras"
    converted.save(path)
    loaded = keras.saving.load_model(path)
    loaded.use_task("orig")
    np.testing.assert_array_equal(outputs(loaded, x), task_one)


@pytest.mark.slow
def test_pretrained_to_tasks_example_runs(tmp_path):
    root = pathlib.Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, str(root / "examples" / "pretrained_to_tasks.py"),
         "--epochs", "1", "--retrain-epochs", "0", "--out", str(tmp_path)],
        check=False, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, PYTHONPATH=str(root)),
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "max |output difference| 0.0e+00" in result.stdout
    assert "task 1 outputs bit-identical after two more tasks: True" in (
        result.stdout)
    assert result.stdout.count("total ") == 3  # capacity() after each task
    assert (tmp_path / "pretrained_to_tasks.keras").is_file()
