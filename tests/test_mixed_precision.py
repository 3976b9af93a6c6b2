"""Mixed precision: earlier tasks bit-exact, owners uint8, float32 exports.

Under `mixed_float16` (Keras wraps the optimizer in its LossScaleOptimizer)
and `mixed_bfloat16`, a model trains four tasks with four optimizers that
would each move frozen weights if they could (AdamW's decay, SGD's momentum
and decay, Lion, Adam with EMA), prunes, saves and loads; every earlier
task's outputs stay bit-identical throughout. Exports compute in float32:
they match a float32 copy of the same weights within `FLOAT_TOLERANCE`.

Mutation checks (run by hand): without the restore after the optimizer
step (`MaskedTrainingMixin.train_step`) the first test fails under both
policies ("task 't1' changed"); with `export.precision` treating no dtype
as half, the second fails (the exported `conv` computes in half).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from conftest import FLOAT_TOLERANCE, conv_bn_trunk

import packnet_tf as pn
from packnet_tf import export
from packnet_tf.core.trunk import iter_layers, packed_layers

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
CLASSES = (2, 3, 4, 3)


def _float16_runs_here():
    try:
        x = tf.ones((1, 4, 4, 1), tf.float16)
        tf.nn.conv2d(x, tf.ones((3, 3, 1, 1), tf.float16), 1, "SAME")
    except (tf.errors.OpError, TypeError) as error:
        return str(error).splitlines()[0]
    return None


@pytest.fixture(params=["mixed_float16", "mixed_bfloat16"])
def policy(request):
    if request.param == "mixed_float16":
        reason = _float16_runs_here()
        if reason:
            pytest.skip(f"float16 kernels do not run on this CPU: {reason}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(request.param)
    yield request.param
    keras.config.set_dtype_policy(previous)


def _optimizers():
    return [
        keras.optimizers.AdamW(1e-2, weight_decay=0.1),
        keras.optimizers.SGD(1e-2, momentum=0.9, weight_decay=0.05),
        keras.optimizers.Lion(1e-3, weight_decay=0.1),
        keras.optimizers.Adam(1e-2, use_ema=True, ema_overwrite_frequency=2),
    ]


def _data(seed, num_classes):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(48, 6, 6, 2)).astype("float32")
    return x, rng.integers(0, num_classes, size=48)


def _outputs(model, task, probe):
    model.use_task(task)
    return keras.ops.convert_to_numpy(model(probe, training=False))


def _assert_unchanged(model, recorded, probe):
    for name, expected in recorded.items():
        np.testing.assert_array_equal(
            _outputs(model, name, probe), expected,
            err_msg=f"task {name!r} changed")


def _train(model, name, seed, num_classes, optimizer):
    x, y = _data(seed, num_classes)
    model.add_task(name, num_classes=num_classes)
    model.compile(optimizer=optimizer, loss=LOSS)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    model.prune(0.5)
    model.compile(optimizer=optimizer.__class__.from_config(
        optimizer.get_config()), loss=LOSS)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    model.recalibrate_batch_norm(x)
    model.end_task()


def test_mixed_precision_tasks_stay_bit_exact_through_save_and_load(
        policy, tmp_path):
    keras.utils.set_random_seed(0)
    model = pn.PackNetModel(conv_bn_trunk(), max_tasks=len(CLASSES))
    probe = np.random.default_rng(1).normal(
        size=(10, 6, 6, 2)).astype("float32")
    recorded = {}
    for index, (num_classes, optimizer) in enumerate(
            zip(CLASSES, _optimizers())):
        name = f"t{index + 1}"
        kernel_before = model.trunk.get_layer("conv").kernel.numpy().copy()
        _train(model, name, index, num_classes, optimizer)
        if policy == "mixed_float16":
            assert isinstance(model.optimizer,
                              keras.optimizers.LossScaleOptimizer)
        # Training really moved this task's weights.
        assert not np.array_equal(
            kernel_before, model.trunk.get_layer("conv").kernel.numpy())
        _assert_unchanged(model, recorded, probe)
        recorded[name] = _outputs(model, name, probe)
        assert recorded[name].dtype == keras.config.dtype_policy().compute_dtype

    for layer in packed_layers(model.trunk):
        assert layer.dtype_policy.name == policy
        for _, kernel, owner in layer.packed_kernels():
            assert kernel.dtype == "float32"
            assert owner.dtype == "uint8"

    path = tmp_path / "mixed.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    _assert_unchanged(loaded, recorded, probe)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def _float32_copy(model):
    """The same tasks and weights, built and computed in float32."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        copy = pn.PackNetModel(conv_bn_trunk(), max_tasks=model.max_tasks)
        for task in model.tasks:
            copy.add_task(task.name, num_classes=task.num_classes)
            copy.prune(0.5)  # room for the next task; owners copied below
            copy.end_task(recalibrate=False)  # statistics copied below
    finally:
        keras.config.set_dtype_policy(previous)
    assert len(copy.weights) == len(model.weights)
    for mine, theirs in zip(copy.weights, model.weights):
        mine.assign(theirs.numpy())
    return copy


@pytest.fixture
def mixed_model(policy):
    keras.utils.set_random_seed(0)
    model = pn.PackNetModel(conv_bn_trunk(), max_tasks=3)
    for index, num_classes in enumerate(CLASSES[:2]):
        _train(model, "ab"[index], index, num_classes,
               keras.optimizers.Adam(1e-2))
    return model


def test_exports_of_a_mixed_precision_model_compute_in_float32(
        mixed_model, tmp_path):
    reference = _float32_copy(mixed_model)
    probe = np.random.default_rng(1).normal(
        size=(6, 6, 6, 2)).astype("float32")
    for task in ("a", "b"):
        expected = _outputs(reference, task, probe)
        assert expected.dtype == np.float32

        plain = export.plain_model(mixed_model, task)
        for layer in iter_layers(plain):
            assert layer.dtype_policy.compute_dtype == "float32", layer.name
        outputs = keras.ops.convert_to_numpy(plain(probe))
        assert outputs.dtype == np.float32
        np.testing.assert_allclose(outputs, expected, rtol=0,
                                   atol=FLOAT_TOLERANCE, err_msg=task)

        path = export.tflite(mixed_model, tmp_path / f"{task}.tflite",
                             task=task)
        interpreter = Interpreter(model_path=str(path))
        runner = interpreter.get_signature_runner(f"task_{task}")
        outputs = runner(inputs=probe)["outputs"]
        assert outputs.dtype == np.float32
        np.testing.assert_allclose(outputs, expected, rtol=0,
                                   atol=FLOAT_TOLERANCE, err_msg=task)

    base = tmp_path / "serving"
    export.saved_model(mixed_model, base, layout="multi")
    loaded = tf.saved_model.load(str(base / mixed_model.name / "1"))
    for task in ("a", "b"):
        outputs = loaded.signatures[f"task_{task}"](
            inputs=tf.constant(probe))["outputs"]
        assert outputs.dtype == tf.float32
        np.testing.assert_allclose(
            outputs.numpy(), _outputs(reference, task, probe), rtol=0,
            atol=FLOAT_TOLERANCE, err_msg=task)
