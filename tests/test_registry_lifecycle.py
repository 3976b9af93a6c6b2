"""Every registry entry converts, keeps earlier tasks bit-identical, exports.

The tests are parametrized from `registry.specs()`, so a new entry is
covered by registering it; the last test shows that with a `PackedConv3D`
defined here and registered for that test only.
"""

import keras
import numpy as np
import pytest
from conftest import (FLOAT_TOLERANCE, model_outputs, packed_model,
                      probe_inputs, registry_model, registry_task_data)

import packnet_tf as pn
from packnet_tf.core.trunk import iter_layers, packed_layers
from packnet_tf.export import plain_model
from packnet_tf.export.folding import fold_plan
from packnet_tf.layers import PackedLayer, PackedLayerSpec, registry
from packnet_tf.layers.conv import PackedConv

#: Converted outputs must match the original's within this (float32).
CONVERT_ATOL = 1e-6

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

SPECS = registry.specs()


def _ids(spec):
    return spec.name


def _entry_layer(trunk, spec):
    """The trunk's layer made from the entry's example."""
    found = [l for l in packed_layers(trunk) if type(l) is spec.packed_class]
    assert found, f"no {spec.name} in the trunk"
    return found[0]


def check_converts_exactly(spec):
    model, shape = registry_model(spec)
    x = np.random.default_rng(1).normal(size=(4,) + shape).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    converted = pn.convert(model, max_tasks=3, first_task="orig")
    np.testing.assert_allclose(
        model_outputs(converted, "orig", x), expected, rtol=0,
        atol=CONVERT_ATOL)
    kinds = {type(l) for l in iter_layers(converted.trunk)}
    assert spec.packed_class in kinds
    assert spec.keras_class not in kinds


def _run_task(model, name, data, optimizer, fraction):
    x, y, num_classes = data
    model.add_task(name, num_classes=num_classes)
    model.compile(optimizer=optimizer, loss=LOSS)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    if fraction:
        model.prune(fraction)
        model.compile(optimizer=optimizer.__class__.from_config(
            optimizer.get_config()), loss=LOSS)
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    model.recalibrate_batch_norm(x)
    model.end_task()


def _assert_unchanged(model, recorded, probe):
    for name, expected in recorded.items():
        np.testing.assert_array_equal(
            model_outputs(model, name, probe), expected,
            err_msg=f"task {name!r} changed")


def check_lifecycle_is_bit_exact(spec, tmp_path):
    """The multi-task cycle of tests/test_model.py, on the entry's trunk."""
    source, shape = registry_model(spec)
    keras.utils.set_random_seed(0)
    model = pn.convert(source, max_tasks=4)
    data = registry_task_data(shape)
    probe = probe_inputs(model, count=10)
    entry = _entry_layer(model.trunk, spec)
    optimizers = [
        keras.optimizers.Adam(1e-2),
        keras.optimizers.AdamW(1e-2, weight_decay=0.1),
        keras.optimizers.SGD(1e-2, momentum=0.9),
    ]
    recorded = {}
    for index, (task, optimizer) in enumerate(zip(data, optimizers)):
        name = f"t{index + 1}"
        before = [v.numpy().copy() for v in entry.trainable_weights]
        _run_task(model, name, task, optimizer, fraction=0.5)
        # Training really moved the entry's weights.
        assert any(not np.array_equal(b, v.numpy())
                   for b, v in zip(before, entry.trainable_weights))
        _assert_unchanged(model, recorded, probe)
        recorded[name] = model_outputs(model, name, probe)

    path = tmp_path / "packed.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [t.name for t in loaded.tasks] == ["t1", "t2", "t3"]
    assert all(t.state == "frozen" for t in loaded.tasks)
    _assert_unchanged(loaded, recorded, probe)
    for a, b in zip(model.trunk.weights, loaded.trunk.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    x, y, _ = data[0]
    _run_task(loaded, "t4", (x, y, 5),
              keras.optimizers.Adam(1e-2, use_ema=True,
                                    ema_overwrite_frequency=2), None)
    _assert_unchanged(loaded, recorded, probe)


def check_exports_with_parity(spec):
    """plain_model equals the PackNetModel per task, folded or not."""
    source, _ = registry_model(spec)
    model = packed_model(pn.convert(source, max_tasks=4).trunk)
    entry = _entry_layer(model.trunk, spec)
    folds = {(p.name, bn.name) for p, bn in fold_plan(model.trunk)}
    assert ((entry.name, "bn_after") in folds) == spec.folds_batch_norm
    x = probe_inputs(model)
    for task in ("a", "b", "c"):
        expected = model_outputs(model, task, x)
        for fold in (True, False):
            plain = plain_model(model, task, fold_batch_norm=fold)
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(plain(x)), expected, rtol=0,
                atol=FLOAT_TOLERANCE, err_msg=f"task {task}, fold={fold}")
            kinds = [type(l) for l in iter_layers(plain)]
            assert not any(issubclass(k, PackedLayer) for k in kinds)
            assert spec.keras_class in kinds


@pytest.mark.parametrize("spec", SPECS, ids=_ids)
def test_every_entry_converts_exactly(spec):
    check_converts_exactly(spec)


@pytest.mark.parametrize("spec", SPECS, ids=_ids)
def test_every_entry_keeps_earlier_tasks_bit_identical(spec, tmp_path):
    check_lifecycle_is_bit_exact(spec, tmp_path)


@pytest.mark.parametrize("spec", SPECS, ids=_ids)
def test_every_entry_exports_a_plain_model_per_task(spec):
    check_exports_with_parity(spec)


@keras.saving.register_keras_serializable(package="packnet_tf_tests")
class PackedConv3D(PackedConv):
    """A layer the library lacks: all it needs is its rank and an entry."""

    def __init__(self, filters, kernel_size, **kwargs):
        super().__init__(3, filters, kernel_size, **kwargs)


CONV3D = PackedLayerSpec(
    keras_class=keras.layers.Conv3D,
    packed_class=PackedConv3D,
    weights={"kernel": "kernel", "bias": "bias"},
    example=lambda: (keras.layers.Conv3D(2, 2), (3, 3, 3, 1)),
    fold_kernel="kernel",
)


@pytest.fixture
def conv3d_registered():
    with registry.registered(CONV3D) as spec:
        yield spec


def test_a_new_entry_is_enough_for_convert_lifecycle_and_export(
        conv3d_registered, tmp_path):
    check_converts_exactly(conv3d_registered)
    check_lifecycle_is_bit_exact(conv3d_registered, tmp_path)
    check_exports_with_parity(conv3d_registered)


def test_without_its_entry_the_new_layer_is_rejected():
    model, _ = registry_model(CONV3D)
    with pytest.raises(pn.UnsupportedLayerError,
                       match="no packed twin: 1 Conv3D"):
        pn.convert(model, max_tasks=2)
