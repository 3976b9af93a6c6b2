"""score="statistics": each task's density of its inputs' activation
statistics (`packnet_tf.inference.density`)."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import conv_bn_trunk, density_model, packed_model, two_data_sets

import packnet_tf as pn
from packnet_tf.inference import density
from packnet_tf.inference.task_inference import calibrate


def test_example_statistics_by_hand():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(3, 4, 5, 2)).astype("float32")
    flat = rng.normal(size=(3, 6)).astype("float32")
    got = density.example_statistics([image, flat]).numpy()
    mean = image.mean(axis=(1, 2))
    log_sd = 0.5 * np.log(image.var(axis=(1, 2)) + density.EPSILON)
    np.testing.assert_allclose(got, np.concatenate([mean, log_sd, flat], 1),
                               rtol=1e-5, atol=1e-5)


def test_fit_and_scores_by_hand():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 3)) @ np.array(
        [[2.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.0, 0.3, 0.2]]) + [1.0, -2.0, 0.5]
    record = density.fit(x, ["conv"], shrinkage=0.1)
    covariance = np.cov(x, rowvar=False)
    shrunk = 0.9 * covariance + 0.1 * np.trace(covariance) / 3 * np.eye(3)
    np.testing.assert_allclose(record["mean"], x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(record["precision"], np.linalg.inv(shrunk),
                               rtol=1e-5)
    assert record["layers"] == ["conv"]
    probe = rng.normal(size=(7, 3))
    z = probe - x.mean(0)
    expected = np.exp(-0.5 * np.einsum("ij,jk,ik->i", z, np.linalg.inv(shrunk),
                                       z) / 3)
    np.testing.assert_allclose(
        density.density_scores(probe.astype("float32"), record).numpy(),
        expected, rtol=1e-4)
    at_mean = density.density_scores(
        np.asarray([record["mean"]], "float32"), record).numpy()
    np.testing.assert_allclose(at_mean, [1.0])


@pytest.mark.parametrize("statistics", [np.zeros((1, 3)),
                                        np.full((4, 2), np.nan)])
def test_fit_refuses_too_few_or_non_finite_statistics(statistics):
    with pytest.raises(ValueError, match="at least 2 examples of finite"):
        density.fit(statistics, ["conv"])


def test_calibrate_records_the_density_of_the_first_packed_layers():
    model = density_model()
    for task in model.tasks:
        record = task.input_density
        # conv (4 channels: means and spreads), then dw (4 channels).
        assert record["layers"] == ["conv", "dw"]
        assert np.shape(record["mean"]) == (16,)
        assert np.shape(record["precision"]) == (16, 16)
        assert len(task.score_reference["statistics"]) == 101
    assert model.tasks[0].input_density != model.tasks[1].input_density


def test_statistics_tell_the_data_sets_apart_per_example_and_per_batch():
    model = density_model()
    a, b = two_data_sets(40, seed=5)
    x = np.concatenate([a, b])
    truth = np.array(["a"] * 40 + ["b"] * 40, dtype=object)
    result = pn.infer_task(model, x, score="statistics", batch_size=16)
    np.testing.assert_array_equal(result.task, truth)
    for task, part in (("a", a), ("b", b)):
        batch = pn.infer_task(model, part, per="batch", score="statistics")
        assert set(batch.task) == {task}
        # The class is the chosen task's predict, exactly.
        model.use_task(task)
        np.testing.assert_array_equal(
            batch.class_ids,
            np.argmax(model.predict(part, verbose=0), axis=-1))


def test_statistics_scores_are_each_tasks_density_of_its_own_statistics():
    model = density_model()
    x = np.concatenate(two_data_sets(12, seed=7))
    result = pn.infer_task(model, x, score="statistics")
    for column, task in enumerate(model.tasks):
        model.use_task(task.name)
        statistics = density.task_statistics(
            model, task.input_density["layers"], x, batch_size=5)
        np.testing.assert_allclose(
            result.task_scores[:, column],
            density.density_scores(statistics, task.input_density).numpy(),
            rtol=1e-4, atol=1e-6)
    calibrated = pn.infer_task(model, x, score="statistics", calibrated=True)
    assert np.all((calibrated.task_scores >= 0)
                  & (calibrated.task_scores <= 1))


def test_recalibrating_a_task_changes_its_scores():
    model = density_model()
    x = two_data_sets(8, seed=9)[0]
    before = pn.infer_task(model, x, score="statistics").task_scores
    calibrate(model, "a", two_data_sets(256, seed=3)[1], density_layers=2)
    after = pn.infer_task(model, x, score="statistics").task_scores
    np.testing.assert_array_equal(before[:, 1], after[:, 1])
    assert np.all(after[:, 0] < before[:, 0])
    # The old trace is dropped, not kept beside the new one.
    from packnet_tf.inference import task_inference

    assert [key[1] for key in task_inference._TRACED[model]].count(
        True) == 1


def test_statistics_without_a_density_names_the_fix():
    model = packed_model(conv_bn_trunk(), classes=(2, 3))
    x = two_data_sets(4, seed=0)[0]
    with pytest.raises(ValueError, match=r"tasks \['a', 'b'\] have none.*"
                       r"calibrate\(model, task, x\)"):
        pn.infer_task(model, x, score="statistics")


def test_densities_over_different_layers_are_refused():
    model = packed_model(conv_bn_trunk(), classes=(2, 3))
    a, b = two_data_sets(64, seed=0)
    calibrate(model, "a", a, density_layers=1)
    calibrate(model, "b", b, density_layers=2)
    with pytest.raises(ValueError, match="read different layers"):
        pn.infer_task(model, a, score="statistics")


@pytest.mark.parametrize("record, match", [
    ({"layers": ["conv"], "mean": [0.0]}, "keys"),
    ({"layers": ["nope"], "mean": [0.0], "precision": [[1.0]]},
     "name layers of the trunk"),
    ({"layers": ["conv"], "mean": [0.0, 1.0], "precision": [[1.0]]},
     r"Received shapes \(2,\) and \(1, 1\)"),
    ({"layers": ["conv"], "mean": [np.inf], "precision": [[1.0]]},
     "finite"),
])
def test_set_input_density_checks_the_record(record, match):
    model = packed_model(conv_bn_trunk(), classes=(2,))
    with pytest.raises(ValueError, match=match):
        model.set_input_density("a", record)
    assert model.tasks[0].input_density is None


@pytest.mark.parametrize("value", [0, -1, True, 1.5])
def test_calibrate_density_layers_must_be_a_positive_int(value):
    model = packed_model(conv_bn_trunk(), classes=(2,))
    with pytest.raises(ValueError, match="`density_layers`"):
        calibrate(model, "a", np.zeros((4, 6, 6, 2), "float32"),
                  density_layers=value)


def test_trunk_layers_give_the_statistics_in_graph_as_eagerly():
    model = density_model()
    x = tf.constant(two_data_sets(6, seed=2)[1])
    model.use_task("b")
    layers = model.tasks[1].input_density["layers"]
    eager = density.task_statistics(model, layers, x.numpy(), batch_size=6)
    extract = density.statistics_model(model.trunk, layers)
    traced = tf.function(
        lambda v: density.example_statistics(extract(v)[:-1]))(x)
    np.testing.assert_allclose(traced.numpy(), eager, rtol=1e-5, atol=1e-6)


def test_a_trunk_with_nested_packed_layers_is_calibrated_without_density():
    import keras

    from packnet_tf import layers

    inner = keras.Sequential([keras.Input((4,)), layers.PackedDense(3)],
                             name="inner")
    trunk = keras.Sequential([keras.Input((4,)), inner], name="outer")
    model = pn.PackNetModel(trunk, max_tasks=2)
    model.add_task("a", num_classes=2)
    model.end_task(recalibrate=False)
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    calibrate(model, "a", x)
    task = model.tasks[0]
    assert task.input_density is None
    assert set(task.score_reference) == {"entropy", "confidence"}
    with pytest.raises(ValueError, match="have none"):
        pn.infer_task(model, x, score="statistics")
