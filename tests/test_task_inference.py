"""infer_task: choosing the task without a task id."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import conv_bn_trunk, packed_model, probe_inputs

import packnet_tf as pn
from packnet_tf import layers
from packnet_tf.inference.task_inference import choose_tasks, task_scores


def _separable_model():
    """Two tasks, each blind to the other's inputs (weights set by hand).

    Inputs have 4 features. Task "a" keeps the trunk's identity entries of
    features 0 and 1, task "b" those of features 2 and 3; each head reads
    its own two features. So "a" answers uniformly (score 0) on inputs with
    only features 2-3 and confidently on its own, and "b" the other way.
    """
    keras.utils.set_random_seed(0)
    trunk = keras.Sequential([keras.Input((4,)),
                              layers.PackedDense(4, use_bias=False,
                                                 name="mix")], name="trunk")
    model = pn.PackNetModel(trunk, max_tasks=3)
    mix = model.trunk.get_layer("mix")
    for name, features in (("a", (0, 1)), ("b", (2, 3))):
        model.add_task(name, num_classes=2)
        owner = mix.kernel_owner.numpy()
        mine = owner == model.active_task.task_id
        kernel = np.where(mine, 0.0, mix.kernel.numpy())
        for i in features:
            kernel[i, i] = 1.0
        mix.kernel.assign(kernel.astype("float32"))
        head = np.zeros((4, 2), "float32")
        head[features[0]] = [8.0, -8.0]
        head[features[1]] = [-8.0, 8.0]
        model.heads[model.active_task.task_id - 1].kernel.assign(head)
        if name == "a":
            model.prune(14 / 16)  # keeps the two identity entries
        model.end_task(recalibrate=False)
    return model


def _inputs(task, n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 4), "float32")
    columns = (0, 1) if task == "a" else (2, 3)
    x[:, columns] = rng.normal(size=(n, 2)) + np.where(
        rng.random((n, 1)) < 0.5, [1.5, -1.5], [-1.5, 1.5])
    return x


def _predicted_classes(model, task, x):
    model.use_task(task)
    return np.argmax(model.predict(x, verbose=0), axis=-1)


@pytest.mark.parametrize("score", ["entropy", "confidence"])
def test_per_batch_picks_the_task_of_separable_batches(score):
    model = _separable_model()
    for task in ("a", "b"):
        result = pn.infer_task(model, _inputs(task), per="batch", score=score)
        assert set(result.task) == {task}
        assert result.tasks == ("a", "b")


def test_per_example_picks_each_examples_task_and_its_class():
    model = _separable_model()
    x = np.concatenate([_inputs("a", 20, 1), _inputs("b", 20, 2)])
    truth = ["a"] * 20 + ["b"] * 20
    order = np.random.default_rng(3).permutation(len(x))
    x, truth = x[order], np.array(truth)[order]
    result = pn.infer_task(model, x, batch_size=7)
    np.testing.assert_array_equal(result.task, truth)
    for task in ("a", "b"):
        rows = truth == task
        np.testing.assert_array_equal(
            result.class_ids[rows],
            _predicted_classes(model, task, x[rows]))
    assert set(result.class_names) <= {"0", "1"}
    assert result.task_scores.shape == (40, 2)
    np.testing.assert_array_equal(
        result.scores, result.task_scores.max(axis=1))


def test_classes_equal_the_chosen_tasks_predict_exactly():
    model = packed_model(conv_bn_trunk())
    x = probe_inputs(model, count=24)
    result = pn.infer_task(model, x)
    for task in set(result.task):
        rows = result.task == task
        np.testing.assert_array_equal(
            result.class_ids[rows], _predicted_classes(model, task, x)[rows])


def test_every_tasks_scores_match_its_own_predict():
    model = packed_model(conv_bn_trunk())
    x = probe_inputs(model, count=10)
    for score in ("entropy", "confidence"):
        result = pn.infer_task(model, x, score=score, batch_size=4)
        assert result.tasks == ("a", "b", "c")
        for j, task in enumerate(result.tasks):
            model.use_task(task)
            probabilities = keras.ops.convert_to_numpy(
                keras.ops.softmax(model.predict(x, verbose=0)))
            np.testing.assert_allclose(result.probabilities[task],
                                       probabilities, atol=1e-6)
            np.testing.assert_allclose(
                result.task_scores[:, j],
                task_scores(probabilities, score).numpy(), atol=1e-5)


def test_scores_by_hand():
    p = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]],
                 "float32")
    np.testing.assert_allclose(task_scores(p, "entropy"),
                               [1.0, 0.0, 1 - np.log(2) / np.log(3)],
                               atol=1e-6)
    np.testing.assert_allclose(task_scores(p, "confidence"),
                               [1.0, 1 / 3, 0.5], atol=1e-6)


def test_the_model_is_left_as_it_was():
    model = packed_model(conv_bn_trunk())
    model.use_task("b")
    x = probe_inputs(model)
    before = model.predict(x, verbose=0)
    weights = [w.numpy().copy() for w in model.weights]
    pn.infer_task(model, x)
    assert model.active_task.name == "b"
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)
    for weight, value in zip(model.weights, weights):
        np.testing.assert_array_equal(weight.numpy(), value)


def test_tasks_restricts_the_choice():
    model = _separable_model()
    result = pn.infer_task(model, _inputs("a"), tasks=["b"])
    assert result.tasks == ("b",)
    assert set(result.task) == {"b"}
    assert result.task_scores.shape == (32, 1)


def test_a_one_task_model_answers_with_it():
    model = packed_model(conv_bn_trunk(), classes=(3,))
    result = pn.infer_task(model, probe_inputs(model), per="batch")
    assert set(result.task) == {"a"}


def test_unfinished_and_headless_tasks_are_never_candidates():
    model = packed_model(conv_bn_trunk(), training_task="t")
    result = pn.infer_task(model, probe_inputs(model))
    assert result.tasks == ("a", "b", "c")
    with pytest.raises(ValueError, match=r"`tasks`.*'t' is not finished"):
        pn.infer_task(model, probe_inputs(model), tasks=["a", "t"])
    with pytest.raises(ValueError, match=r"`tasks`.*'z' is no task"):
        pn.infer_task(model, probe_inputs(model), tasks=["z"])


def test_a_model_without_a_finished_task_is_refused():
    model = pn.PackNetModel(conv_bn_trunk(), max_tasks=2)
    model.add_task("t", num_classes=2)
    with pytest.raises(ValueError, match="needs a finished task"):
        pn.infer_task(model, np.zeros((2, 6, 6, 2), "float32"))


def test_reject_threshold_answers_no_task_where_nothing_is_confident():
    model = _separable_model()
    x = np.concatenate([_inputs("a", 8), np.zeros((4, 4), "float32")])
    result = pn.infer_task(model, x, reject_threshold=0.2)
    assert list(result.task[:8]) == ["a"] * 8
    assert list(result.task[8:]) == [""] * 4
    assert list(result.class_ids[8:]) == [-1] * 4
    assert list(result.class_names[8:]) == [""] * 4
    batch = pn.infer_task(model, np.zeros((4, 4), "float32"), per="batch",
                          reject_threshold=0.2)
    assert list(batch.task) == [""] * 4


def test_a_dataset_gives_what_the_array_gives():
    model = packed_model(conv_bn_trunk())
    x = probe_inputs(model, count=12)
    y = np.zeros(12, "int64")
    from_array = pn.infer_task(model, x)
    from_dataset = pn.infer_task(
        model, tf.data.Dataset.from_tensor_slices((x, y)).batch(5))
    np.testing.assert_array_equal(from_dataset.task, from_array.task)
    np.testing.assert_allclose(from_dataset.task_scores,
                               from_array.task_scores, atol=1e-6)


@pytest.mark.parametrize("kwargs, argument", [
    ({"per": "task"}, "per"),
    ({"score": "margin"}, "score"),
    ({"tasks": "a"}, "tasks"),
    ({"tasks": []}, "tasks"),
    ({"reject_threshold": 1.5}, "reject_threshold"),
    ({"reject_threshold": True}, "reject_threshold"),
    ({"batch_size": 0}, "batch_size"),
    ({"x": [[0.0] * 4]}, "x"),
    ({"x": np.zeros((0, 4), "float32")}, "x"),
])
def test_bad_arguments_name_the_argument_in_one_line(kwargs, argument):
    model = _separable_model()
    kwargs = {"x": _inputs("a", 2), **kwargs}
    with pytest.raises(ValueError) as error:
        pn.infer_task(model, **kwargs)
    assert f"`{argument}`" in str(error.value)
    assert "\n" not in str(error.value)


def test_choose_tasks_per_group_of_consecutive_examples():
    scores = np.array([[0.9, 0.1], [0.2, 0.3], [0.1, 0.2],   # group 1: a
                       [0.1, 0.9], [0.6, 0.5],               # group 2: b
                       [0.3, 0.2]])                           # group 3: a
    chosen, chosen_score, rejected = choose_tasks(scores, per="batch",
                                                  group_size=2)
    # sums: rows 0-1 (1.1, 0.4) a; rows 2-3 (0.2, 1.1) b; rows 4-5 (0.9,
    # 0.7) a.
    np.testing.assert_array_equal(chosen, [0, 0, 1, 1, 0, 0])
    np.testing.assert_allclose(chosen_score, [0.9, 0.2, 0.2, 0.9, 0.6, 0.3])
    assert not rejected.any()
    chosen, _, _ = choose_tasks(scores, per="batch", group_size=4)
    np.testing.assert_array_equal(chosen, [1, 1, 1, 1, 0, 0])
    chosen, _, _ = choose_tasks(scores, per="example")
    np.testing.assert_array_equal(chosen, [0, 1, 1, 1, 0, 0])
    # A group is rejected as one, by its mean score under its choice.
    # Means: 0.55, 0.55, 0.45.
    _, _, rejected = choose_tasks(scores, per="batch", group_size=2,
                                  reject_threshold=0.4)
    assert not rejected.any()
    _, _, rejected = choose_tasks(scores, per="batch", group_size=2,
                                  reject_threshold=0.5)
    np.testing.assert_array_equal(rejected, [False, False, False, False,
                                             True, True])
    _, _, rejected = choose_tasks(scores, per="batch", group_size=2,
                                  reject_threshold=0.56)
    assert rejected.all()


def test_infer_task_per_batch_is_choose_tasks_over_its_scores():
    model = _separable_model()
    x = np.concatenate([_inputs("a", 8), _inputs("b", 8, seed=1)])
    whole = pn.infer_task(model, x, per="batch")
    chosen, _, _ = choose_tasks(whole.task_scores, per="batch")
    assert list(whole.task) == [whole.tasks[c] for c in chosen]
    for start in (0, 8):
        part = pn.infer_task(model, x[start:start + 8], per="batch")
        chosen, _, _ = choose_tasks(whole.task_scores, per="batch",
                                    group_size=8)
        assert list(part.task) == [whole.tasks[c]
                                   for c in chosen[start:start + 8]]


@pytest.mark.parametrize("kwargs,argument", [
    ({"per": "group"}, "per"),
    ({"group_size": 0}, "group_size"),
    ({"group_size": 2.0}, "group_size"),
])
def test_choose_tasks_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        choose_tasks(np.ones((3, 2)), **kwargs)
    with pytest.raises(ValueError, match="`task_scores`"):
        choose_tasks(np.ones(3))


def test_repeated_calls_trace_once():
    model = _separable_model()
    x = _inputs("a", 8)
    first = pn.infer_task(model, x)
    from packnet_tf.inference import task_inference

    ((_, traced),) = task_inference._TRACED[model].values()
    before = traced._function.experimental_get_tracing_count()
    for _ in range(3):
        again = pn.infer_task(model, x)
    assert traced._function.experimental_get_tracing_count() == before
    np.testing.assert_array_equal(first.task_scores, again.task_scores)
    pn.infer_task(model, x, tasks=["b"])  # other candidates: their own
    assert len(task_inference._TRACED[model]) == 2


def test_calibrate_records_the_quantiles_of_the_tasks_own_scores():
    from packnet_tf.inference.task_inference import QUANTILES, calibrate

    model = _separable_model()
    x = _inputs("b", 40)
    info = calibrate(model, "b", x, examples=32)
    assert model.active_task.name == "b"  # the active task is kept
    model.use_task("b")
    p = tf.nn.softmax(model.predict(x[:32], verbose=0)).numpy()
    for rule in ("entropy", "confidence"):
        expected = np.quantile(task_scores(p, rule).numpy(), QUANTILES)
        np.testing.assert_allclose(info.score_reference[rule], expected,
                                   rtol=1e-6)
    # A dataset of (x, y) batches reads the same first examples.
    data = tf.data.Dataset.from_tensor_slices((x, np.zeros(40))).batch(5)
    again = calibrate(model, "b", data, examples=32)
    assert again.score_reference == info.score_reference


def test_calibrated_scores_are_percentiles_of_each_tasks_own():
    from packnet_tf.inference.task_inference import calibrated_scores

    # Task 0 is confident on everything (its own scores 0.98-1.0), task 1
    # modestly (0.2-0.7): 0.99 is task 0's median, 0.6 high for task 1.
    references = [np.linspace(0.98, 1.0, 101), np.linspace(0.2, 0.7, 101)]
    calibrated = calibrated_scores([[0.99, 0.6], [1.0, 0.1]], references)
    np.testing.assert_allclose(calibrated, [[0.5, 0.8], [1.0, 0.0]],
                               atol=1e-6)
    chosen, _, _ = choose_tasks(calibrated)
    np.testing.assert_array_equal(chosen, [1, 0])


def test_infer_task_calibrated_reads_the_stored_quantiles():
    from packnet_tf.inference.task_inference import (calibrate,
                                                     calibrated_scores)

    model = _separable_model()
    x = np.concatenate([_inputs("a", 16), _inputs("b", 16, seed=1)])
    with pytest.raises(ValueError, match=r"tasks \['a', 'b'\] have none"):
        pn.infer_task(model, x, calibrated=True)
    calibrate(model, "a", _inputs("a", 64, seed=2))
    calibrate(model, "b", _inputs("b", 64, seed=3))
    raw = pn.infer_task(model, x)
    result = pn.infer_task(model, x, calibrated=True, per="example")
    references = [t.score_reference["entropy"] for t in model.tasks]
    np.testing.assert_allclose(
        result.task_scores, calibrated_scores(raw.task_scores, references),
        atol=1e-6)
    chosen = np.argmax(result.task_scores, axis=1)
    assert list(result.task) == [("a", "b")[c] for c in chosen]
    assert list(result.task[:16]) == ["a"] * 16
    assert list(result.task[16:]) == ["b"] * 16
    with pytest.raises(ValueError, match="`calibrated`"):
        pn.infer_task(model, x, calibrated="yes")


def test_a_task_ended_with_its_data_is_calibrated(tmp_path):
    """train_task (and the CLI, through phases.end) record the quantiles,
    and they survive saving."""
    from packnet_tf.io import checkpoint

    keras.utils.set_random_seed(0)
    model = pn.PackNetModel(keras.Sequential([
        keras.Input((4,)), layers.PackedDense(8, activation="relu")]),
        max_tasks=2)
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    pn.train_task(model, "a", (x, y), num_classes=2, epochs=1,
                  prune_fraction=0.5, finetune_epochs=0, verbose=0)
    reference = model.tasks[0].score_reference
    assert set(reference) == {"entropy", "confidence", "statistics"}
    assert all(len(v) == 101 for v in reference.values())
    density = model.tasks[0].input_density
    assert density["layers"] == [model.trunk.layers[0].name]
    assert np.shape(density["precision"]) == (8, 8)
    path = checkpoint.save_model(model, tmp_path / "m.keras")
    loaded = checkpoint.load_model(path).tasks[0]
    assert loaded.score_reference == reference
    assert loaded.input_density == density


@pytest.mark.parametrize("reference,match", [
    ({"entropy": [0.5] * 100}, "101 non-decreasing quantiles"),
    ({"entropy": list(np.linspace(1, 0, 101))}, "non-decreasing"),
    ({"entropy": list(np.linspace(0, 2, 101))}, "in \\[0, 1\\]"),
])
def test_set_score_reference_checks_the_quantiles(reference, match):
    model = _separable_model()
    with pytest.raises(ValueError, match=match):
        model.set_score_reference("a", reference)
    assert model.tasks[0].score_reference is None
