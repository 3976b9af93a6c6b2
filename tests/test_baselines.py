"""The paper's baselines: LwF's distillation, classifier only, joint."""

import keras
import numpy as np
import pytest

from packnet_tf.evaluation.baselines import (LwFModel, distillation_loss,
                                             head_only_model, joint_model)


def _trunk(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6,)),
                             keras.layers.Dense(8, activation="relu")])


def _data(seed, n=32, classes=2):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(size=(n, 6)).astype("float32") + y[:, None]
    return x, y


def _compile(model):
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))


def test_distillation_is_zero_for_equal_outputs_and_positive_otherwise():
    logits = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]], "float32")
    assert float(distillation_loss(logits, logits)) == 0.0
    assert float(distillation_loss(logits, logits + 5.0)) == 0.0  # softmax
    other = logits[:, ::-1].copy()
    assert float(distillation_loss(logits, other)) > 0.0
    # Softer at a higher temperature: the same change costs less.
    assert float(distillation_loss(logits, other, 4.0)) < float(
        distillation_loss(logits, other, 1.0))
    with pytest.raises(ValueError, match="positive `temperature`"):
        distillation_loss(logits, logits, 0.0)


def test_distillation_matches_kl_divergence_by_hand():
    t = np.array([[2.0, 0.0]], "float32")
    s = np.array([[0.0, 1.0]], "float32")
    p = np.exp(t / 2) / np.exp(t / 2).sum()
    q = np.exp(s / 2) / np.exp(s / 2).sum()
    expected = float(np.sum(p * np.log(p / q)))
    assert float(distillation_loss(t, s, 2.0)) == pytest.approx(expected,
                                                                rel=1e-6)


def test_lwf_keeps_a_teacher_and_distils_into_old_heads():
    model = LwFModel(_trunk(), head_sizes=[2, 2])
    model.start_task(0)
    _compile(model)
    model.fit(*_data(0), epochs=2, batch_size=8, verbose=0)
    assert model.evaluate(*_data(0), verbose=0, return_dict=True)[
        "distillation"] == 0.0  # nothing to distil into on task 0
    model.start_task(1)
    teacher = [w.copy() for w in model.teacher_trunk.get_weights()]
    np.testing.assert_array_equal(teacher[0], model.trunk.get_weights()[0])
    _compile(model)
    x, y = _data(1)
    # Before any update the student is the teacher: the term is exactly 0.
    first = model.fit(x[:8], y[:8], epochs=1, batch_size=8, verbose=0)
    assert first.history["distillation"] == [0.0]
    later = model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    assert all(d > 0 for d in later.history["distillation"])
    # The teacher never trains.
    for a, b in zip(teacher, model.teacher_trunk.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.predict(x, verbose=0).shape == (32, 2)


def test_lwf_distillation_weight_zero_is_fine_tuning():
    for weight in (0.0, 1.0):
        model = LwFModel(_trunk(), [2, 2], distillation_weight=weight)
        model.start_task(0)
        _compile(model)
        model.fit(*_data(0), epochs=1, batch_size=8, verbose=0)
        model.start_task(1)
        _compile(model)
        history = model.fit(*_data(1), epochs=2, batch_size=8, verbose=0)
        if weight == 0.0:
            trained_plain = model.trunk.get_weights()
        else:
            trained_lwf = model.trunk.get_weights()
            assert history.history["distillation"][-1] > 0
    assert not np.array_equal(trained_plain[0], trained_lwf[0])


def test_lwf_bad_arguments():
    with pytest.raises(ValueError, match="head_sizes"):
        LwFModel(_trunk(), [])
    with pytest.raises(ValueError, match="temperature > 0"):
        LwFModel(_trunk(), [2], temperature=0)
    with pytest.raises(ValueError, match=r"task index in \[0, 1\)"):
        LwFModel(_trunk(), [2]).start_task(1)


def test_classifier_only_leaves_the_trunk_bit_identical():
    trunk = _trunk()
    before = [w.copy() for w in trunk.get_weights()]
    model = head_only_model(trunk, 3)
    head_before = model.layers[-1].get_weights()[0].copy()
    # Weight decay and momentum would move anything the optimizer held.
    model.compile(keras.optimizers.AdamW(1e-2, weight_decay=0.1),
                  keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    model.fit(*_data(2, classes=3), epochs=3, batch_size=8, verbose=0)
    for a, b in zip(before, trunk.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(head_before,
                              model.layers[-1].get_weights()[0])


def test_joint_model_answers_with_each_images_own_head():
    model = joint_model(_trunk(), [2, 2, 2])
    x, _ = _data(3, n=6)
    task = np.array([0, 1, 2, 2, 1, 0], "int32")
    out = model.predict([x, task], verbose=0)
    trunk = model.layers[1]
    heads = [model.get_layer(f"head_{i}") for i in range(3)]
    f = trunk(x)
    expected = np.stack([np.asarray(heads[t](f[i:i + 1]))[0]
                         for i, t in enumerate(task)])
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"class count >= 1.*\[2, 0\]"):
        joint_model(_trunk(), [2, 0])


def test_joint_model_heads_of_different_widths():
    """A 2-class and a 4-class task: the narrow head's image gets its own
    logits and MISSING_CLASS_LOGIT for classes 2 and 3 (probability 0)."""
    from packnet_tf.evaluation.baselines import MISSING_CLASS_LOGIT

    model = joint_model(_trunk(), [2, 4])
    x, _ = _data(4, n=4)
    task = np.array([0, 1, 1, 0], "int32")
    out = model.predict([x, task], verbose=0)
    assert out.shape == (4, 4)
    f = model.layers[1](x)
    narrow = np.asarray(model.get_layer("head_0")(f))
    wide = np.asarray(model.get_layer("head_1")(f))
    np.testing.assert_allclose(out[[0, 3], :2], narrow[[0, 3]], rtol=1e-6)
    np.testing.assert_array_equal(out[[0, 3], 2:], MISSING_CLASS_LOGIT)
    np.testing.assert_allclose(out[[1, 2]], wide[[1, 2]], rtol=1e-6)
    probabilities = keras.ops.softmax(out).numpy()
    np.testing.assert_array_equal(probabilities[[0, 3], 2:], 0.0)
    # It trains: one loss over a batch that mixes both tasks.
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    loss = model.train_on_batch([x, task], np.array([1, 3, 2, 0]))
    assert np.isfinite(loss)
