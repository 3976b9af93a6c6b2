"""PackNetModel: earlier tasks stay bit-identical, whatever trains later."""

import keras
import numpy as np
import pytest

import packnet_tf as pn
from packnet_tf import layers
from packnet_tf.core.model import FINGERPRINT_BATCH
from packnet_tf.core.trunk import packed_layers

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _outputs(model, task, probe):
    model.use_task(task)
    return keras.ops.convert_to_numpy(model(probe, training=False))


def _run_task(model, name, data, optimizer, fraction):
    x, y, num_classes = data
    model.add_task(name, num_classes=num_classes)
    model.compile(optimizer=optimizer, loss=LOSS, metrics=["accuracy"])
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
            _outputs(model, name, probe), expected,
            err_msg=f"task {name!r} changed")


def test_earlier_tasks_are_bit_identical_after_later_tasks_and_reload(
        trunk, task_data, probe, tmp_path):
    model = pn.PackNetModel(trunk, max_tasks=4)
    optimizers = [
        keras.optimizers.Adam(1e-2),
        keras.optimizers.AdamW(1e-2, weight_decay=0.1),
        keras.optimizers.SGD(1e-2, momentum=0.9),
    ]
    recorded = {}
    for index, (data, optimizer) in enumerate(zip(task_data, optimizers)):
        name = f"t{index + 1}"
        kernel_before = model.trunk.layers[0].kernel.numpy().copy()
        _run_task(model, name, data, optimizer, fraction=0.5)
        # Training really moved this task's weights.
        assert not np.array_equal(
            kernel_before, model.trunk.layers[0].kernel.numpy())
        _assert_unchanged(model, recorded, probe)
        recorded[name] = _outputs(model, name, probe)

    path = tmp_path / "packed.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [t.name for t in loaded.tasks] == ["t1", "t2", "t3"]
    assert all(t.state == "frozen" for t in loaded.tasks)
    _assert_unchanged(loaded, recorded, probe)
    for a, b in zip(model.trunk.weights, loaded.trunk.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    # The loaded model goes on learning, with an EMA optimizer this time.
    x, y, _ = task_data[0]
    _run_task(loaded, "t4", (x, y, 5),
              keras.optimizers.Adam(1e-2, use_ema=True,
                                    ema_overwrite_frequency=2), None)
    _assert_unchanged(loaded, recorded, probe)


def test_batch_norm_statistics_are_per_task(trunk, task_data, probe):
    model = pn.PackNetModel(trunk, max_tasks=2)
    _run_task(model, "a", task_data[0], keras.optimizers.Adam(), 0.5)
    bn = model.trunk.layers[1]
    stats_a = bn.moving_mean.numpy()[0].copy()
    _run_task(model, "b", task_data[1], keras.optimizers.Adam(), 0.5)
    np.testing.assert_array_equal(bn.moving_mean.numpy()[0], stats_a)
    assert not np.array_equal(bn.moving_mean.numpy()[1], stats_a)


def test_prune_counts_are_exact_and_free_the_smallest(trunk):
    model = pn.PackNetModel(trunk, max_tasks=3)
    model.add_task("a", num_classes=2)
    rng = np.random.default_rng(0)
    for layer in model.trunk.layers:
        for _, kernel, _ in getattr(layer, "packed_kernels", list)():
            size = int(np.prod(kernel.shape))
            kernel.assign(rng.permutation(np.linspace(0.01, 1.0, size))
                          .reshape(kernel.shape).astype("float32"))
    freed = model.prune(0.75)
    dense = model.trunk.layers[-1]
    # 3x3x2x4 conv, 3x3x4x1 depthwise, (4*4*4)x8 dense kernels.
    assert freed == {
        "conv/kernel": 54, "dw/depthwise_kernel": 27, "dense/kernel": 384}
    owner, kernel = dense.kernel_owner.numpy(), dense.kernel.numpy()
    assert (owner == 0).sum() == 384 and (owner == 1).sum() == 128
    assert np.all(kernel[owner == 0] == 0)
    # The survivors are exactly the 128 largest of the 512 linspace values.
    np.testing.assert_allclose(
        np.sort(kernel[owner == 1]), np.linspace(0.01, 1.0, 512)[384:],
        rtol=1e-6)
    # Pruning again takes the fraction of what the task still owns.
    freed = model.prune(0.5)
    assert freed["dense/kernel"] == 64
    report = model.capacity()
    assert report.counts["dense"].tolist() == [448, 64]
    assert report.fractions("dense") == {"free": 0.875, "a": 0.125}


def test_new_task_gets_exactly_the_free_weights(trunk, task_data):
    model = pn.PackNetModel(trunk, max_tasks=3)
    _run_task(model, "a", task_data[0], keras.optimizers.Adam(), 0.5)
    before = model.capacity()
    model.add_task("b", num_classes=3)
    after = model.capacity()
    for name, counts in before.counts.items():
        assert after.counts[name].tolist() == [0, counts[1], counts[0]]
        assert counts[0] > 0


def test_tasks_and_use_task(trunk, task_data, probe):
    model = pn.PackNetModel(trunk, max_tasks=3)
    _run_task(model, "a", task_data[0], keras.optimizers.Adam(), 0.5)
    model.add_task("b", num_classes=3)
    assert [(t.name, t.task_id, t.num_classes, t.state)
            for t in model.tasks] == [("a", 1, 2, "frozen"),
                                      ("b", 2, 3, "training")]
    assert model.use_task("a").name == "a"
    assert model.predict(probe, verbose=0).shape == (10, 2)
    model.use_task("b")
    assert model.predict(probe, verbose=0).shape == (10, 3)
    # The list is a copy: editing it changes nothing.
    model.tasks[0].state = "training"
    assert model.tasks[0].state == "frozen"


def test_custom_head_is_used_and_saved(trunk, probe, tmp_path):
    model = pn.PackNetModel(trunk, max_tasks=2)
    head = keras.Sequential([keras.layers.Dense(6, activation="relu"),
                             keras.layers.Dense(4)])
    info = model.add_task("a", head=head)
    assert info.num_classes == 4
    expected = keras.ops.convert_to_numpy(model(probe))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(probe)), expected)


def test_trunk_is_resized_and_keeps_weights():
    keras.utils.set_random_seed(1)
    trunk = keras.Sequential([keras.Input((3,)), layers.PackedDense(4)])
    kernel = trunk.layers[0].kernel.numpy()
    model = pn.PackNetModel(trunk, max_tasks=5)
    assert model.trunk.layers[0].bias.shape == (5, 4)
    np.testing.assert_array_equal(model.trunk.layers[0].kernel.numpy(),
                                  kernel)


def test_train_task_runs_the_whole_cycle(trunk, task_data, probe):
    model = pn.PackNetModel(trunk, max_tasks=3)
    x, y, k = task_data[0]
    result = pn.train_task(model, "a", (x, y), num_classes=k, epochs=1,
                           prune_fraction=0.5, finetune_epochs=1,
                           batch_size=16, verbose=0)
    assert result.task.state == "frozen"
    assert result.freed["dense/kernel"] == 256
    assert result.finetune_history.history["loss"]
    recorded = _outputs(model, "a", probe)
    x, y, k = task_data[1]
    ds = __import__("tensorflow").data.Dataset.from_tensor_slices(
        (x, y)).batch(16)
    result = pn.train_task(model, "b", ds, num_classes=k, epochs=1,
                           prune_fraction=None, optimizer="sgd",
                           verbose=0)
    assert result.freed == {} and result.finetune_history is None
    np.testing.assert_array_equal(_outputs(model, "a", probe), recorded)
    assert model.capacity().counts["dense"].tolist() == [0, 256, 256]


def test_switching_tasks_reuses_each_tasks_predict_function(
        trunk, task_data, probe):
    model = pn.PackNetModel(trunk, max_tasks=3)
    _run_task(model, "a", task_data[0], keras.optimizers.Adam(), 0.5)
    model.add_task("b", num_classes=3)
    model.use_task("a")
    first_a = model.predict(probe, verbose=0)
    function_a = model.predict_function
    model.use_task("b")
    assert model.predict(probe, verbose=0).shape == (10, 3)
    model.use_task("a")
    np.testing.assert_array_equal(model.predict(probe, verbose=0), first_a)
    assert model.predict_function is function_a
    # A new compile may change how functions are traced: no reuse then.
    model.compile("adam", LOSS)
    model.use_task("b")
    model.use_task("a")
    assert model.predict_function is None


def test_fingerprints_verify_after_reload_and_catch_tampering(
        trunk, task_data, tmp_path):
    model = pn.PackNetModel(trunk, max_tasks=3)
    _run_task(model, "a", task_data[0], keras.optimizers.Adam(), 0.5)
    _run_task(model, "b", task_data[1], keras.optimizers.AdamW(), 0.5)
    assert model.verify() == {"a": 0.0, "b": 0.0}
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.verify() == {"a": 0.0, "b": 0.0}
    # Move one weight task "a" owns: both tasks read it, both fingerprints
    # change.
    dense = loaded.trunk.get_layer("dense")
    kernel, owner = dense.kernel.numpy(), dense.kernel_owner.numpy()
    kernel[owner == 1] += 0.5
    dense.kernel.assign(kernel)
    diffs = loaded.verify()
    assert diffs["a"] > 0 and diffs["b"] > 0


def test_verify_sees_a_change_behind_a_unit_a_short_probe_misses():
    keras.utils.set_random_seed(0)
    trunk = keras.Sequential([keras.Input((3,)), layers.PackedDense(
        32, activation="relu", name="dense")])
    model = pn.PackNetModel(trunk, max_tasks=2)
    model.add_task("a", num_classes=2)
    model.prune(0.5)
    model.end_task()
    assert len(model.tasks[0].fingerprint) == FINGERPRINT_BATCH
    dense = model.trunk.get_layer("dense")
    kept = np.where(dense.kernel_owner.numpy() == 1, dense.kernel.numpy(), 0)
    features = np.maximum(model._probe(1) @ kept + dense.bias.numpy()[0], 0)
    # Units off on the first 4 probe examples (the probe's length before)
    # but on for a later one.
    hidden = np.flatnonzero((features[:4] == 0).all(axis=0)
                            & (features[4:] > 0).any(axis=0))
    assert hidden.size, "no such unit: choose another seed"
    head = model.heads[0]
    original = head.kernel.numpy()
    changed = original.copy()
    changed[hidden[0]] += 1.0
    head.kernel.assign(changed)
    assert model.verify()["a"] > 0
    # A fingerprint stored on 4 examples (as files written before hold) is
    # checked on those 4: it verifies, and misses this change.
    head.kernel.assign(original)
    config = model.get_config()
    config["tasks"][0]["fingerprint"] = config["tasks"][0]["fingerprint"][:4]
    older = pn.PackNetModel.from_config(config)
    older.set_weights(model.get_weights())
    assert older.verify() == {"a": 0.0}
    older.heads[0].kernel.assign(changed)
    assert older.verify() == {"a": 0.0}


def test_prune_counts_frees_exact_counts_or_nothing(trunk):
    model = pn.PackNetModel(trunk, max_tasks=2)
    model.add_task("a", num_classes=2)
    assert model.owned_counts() == {
        "conv/kernel": 72, "dw/depthwise_kernel": 36, "dense/kernel": 512}
    before = [w.numpy().copy() for w in model.trunk.weights]
    with pytest.raises(ValueError, match=r"\[0, 36\] for 'dw/depthwise"):
        model.prune_counts({"conv/kernel": 10, "dw/depthwise_kernel": 37})
    with pytest.raises(ValueError, match="Unknown packed kernel"):
        model.prune_counts({"nope/kernel": 1})
    for a, b in zip(before, model.trunk.weights):
        np.testing.assert_array_equal(a, b.numpy())
    assert model.prune_counts({"conv/kernel": 10}) == {"conv/kernel": 10}
    assert model.owned_counts()["conv/kernel"] == 62
    assert model.owned_counts()["dense/kernel"] == 512


def test_earlier_tasks_stay_bit_identical_under_xla(trunk, task_data, probe):
    # Keras' jit_compile="auto" compiles the train step with XLA wherever a
    # GPU is present; the masked step must stay exact when XLA fuses it.
    model = pn.PackNetModel(trunk, max_tasks=3)
    recorded = {}
    for index, data in enumerate(task_data[:2]):
        x, y, num_classes = data
        name = f"t{index + 1}"
        model.add_task(name, num_classes=num_classes)
        model.compile(keras.optimizers.AdamW(1e-2, weight_decay=0.1),
                      loss=LOSS, jit_compile=True)
        assert model.jit_compile is True
        kernel_before = model.trunk.layers[0].kernel.numpy().copy()
        model.fit(x, y, batch_size=16, epochs=2, verbose=0)
        assert not np.array_equal(
            kernel_before, model.trunk.layers[0].kernel.numpy())
        model.prune(0.5)
        model.recalibrate_batch_norm(x)
        model.end_task()
        _assert_unchanged(model, recorded, probe)
        recorded[name] = _outputs(model, name, probe)
    assert model.verify() == {"t1": 0.0, "t2": 0.0}


def _pruned_first_task(task_data):
    from conftest import conv_bn_trunk

    keras.utils.set_random_seed(0)
    model = pn.PackNetModel(conv_bn_trunk(), max_tasks=2)
    x, y, num_classes = task_data[0]
    model.add_task("t1", num_classes=num_classes)
    model.compile(keras.optimizers.Adam(1e-2), loss=LOSS)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    model.prune(0.5)
    model.compile(keras.optimizers.Adam(1e-2), loss=LOSS)
    return model, x, y


def test_training_forward_equals_the_masked_forward(task_data):
    # The train step computes with raw kernels (free weights hold 0); its
    # loss must be the loss of the masked forward pass.
    model, x, y = _pruned_first_task(task_data)
    masked_loss = float(model.compute_loss(
        x=x[:16], y=y[:16], y_pred=model(x[:16], training=True)))
    logs = model.train_on_batch(x[:16], y[:16], return_dict=True)
    np.testing.assert_allclose(logs["loss"], masked_loss, rtol=1e-6)


def test_fit_zeroes_free_weights_written_by_hand(task_data, probe):
    # Free weights are invisible to every task; writing them by hand must
    # not leak into the next fit (the train step uses raw kernels).
    clean, x, y = _pruned_first_task(task_data)
    dirty, _, _ = _pruned_first_task(task_data)
    for layer in dirty.trunk.layers:
        for _, kernel, owner in getattr(layer, "packed_kernels", list)():
            free = owner.numpy() == 0
            assert free.any()
            kernel.assign(np.where(free, 7.0, kernel.numpy()))
    for model in (clean, dirty):
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(clean.trunk.weights, dirty.trunk.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    np.testing.assert_array_equal(_outputs(clean, "t1", probe),
                                  _outputs(dirty, "t1", probe))


def _training_second_task(trunk, task_data, probe):
    """Task t1 finished (50% pruned), t2 added and compiled with AdamW.

    Returns:
        `(model, t1's outputs on probe, t2's data)`.
    """
    model = pn.PackNetModel(trunk, max_tasks=2)
    _run_task(model, "t1", task_data[0], keras.optimizers.Adam(1e-2), 0.5)
    expected = _outputs(model, "t1", probe)
    model.add_task("t2", num_classes=task_data[1][2])
    model.compile(keras.optimizers.AdamW(1e-2, weight_decay=0.1), loss=LOSS)
    return model, expected, task_data[1]


def test_train_on_batch_keeps_earlier_tasks_bit_identical(
        trunk, task_data, probe):
    # train_on_batch runs the same masked step as fit, without fit's
    # preparation (a design that wrote frozen entries back from a snapshot
    # taken in `fit` failed here: task t1 changed).
    model, expected, (x, y, _) = _training_second_task(trunk, task_data,
                                                       probe)
    before = model.trunk.layers[0].kernel.numpy().copy()
    for start in range(0, 48, 16):
        model.train_on_batch(x[start:start + 16], y[start:start + 16])
    assert not np.array_equal(before, model.trunk.layers[0].kernel.numpy())
    np.testing.assert_array_equal(_outputs(model, "t1", probe), expected)


class _PruneAt(keras.callbacks.Callback):
    def __init__(self, batch, fraction):
        super().__init__()
        self.batch, self.fraction = batch, fraction

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.batch:
            self.model.prune(self.fraction)


def test_weights_pruned_during_fit_stay_at_zero(trunk, task_data, probe):
    # Entries the task frees in the middle of a fit (a pruning callback)
    # must stay at 0, the value pruning left, though the optimizer still
    # holds momentum for them (a snapshot of the values taken when fit
    # began, as one design tried, failed here).
    model, expected, (x, y, _) = _training_second_task(trunk, task_data,
                                                       probe)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0,
              callbacks=[_PruneAt(batch=0, fraction=0.5)])
    freed = 0
    for layer in packed_layers(model.trunk):
        for name, kernel, owner in layer.packed_kernels():
            free = owner.numpy() == 0
            freed += int(free.sum())
            np.testing.assert_array_equal(kernel.numpy()[free], 0.0,
                                          err_msg=f"{layer.name}.{name}")
    assert freed > 0
    np.testing.assert_array_equal(_outputs(model, "t1", probe), expected)


def test_fit_before_compile_says_to_compile():
    model = pn.PackNetModel(keras.Sequential([
        keras.Input((3,)), pn.layers.PackedDense(4)]), max_tasks=2)
    model.add_task("a", num_classes=2)
    with pytest.raises(ValueError, match=r"compile\(\)"):
        model.fit(np.zeros((4, 3), "float32"), np.zeros(4, "int32"),
                  verbose=0)
