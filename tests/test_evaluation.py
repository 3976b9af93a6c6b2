"""Continual-learning metrics on hand-made accuracy matrices."""

import numpy as np
import pytest

from packnet_tf.evaluation.metrics import (continual_metrics,
                                           plot_accuracy_across_tasks)

#: Three tasks; task 0 falls 0.9 -> 0.8 -> 0.6, task 1 0.7 -> 0.75.
FORGETTING = [[0.9, None, None],
              [0.8, 0.7, None],
              [0.6, 0.75, 0.5]]
#: PackNet-like: every column constant below the diagonal.
FLAT = [[0.9, np.nan, np.nan],
        [0.9, 0.7, np.nan],
        [0.9, 0.7, 0.5]]


def test_known_bwt_forgetting_and_average():
    m = continual_metrics(FORGETTING, task_names=["a", "b", "c"])
    assert m.final == [0.6, 0.75, 0.5]
    assert m.average_accuracy == pytest.approx((0.6 + 0.75 + 0.5) / 3)
    # BWT: ((0.6 - 0.9) + (0.75 - 0.7)) / 2
    assert m.bwt == pytest.approx(-0.125)
    # Forgetting: task a max(0.9, 0.8) - 0.6, task b 0.7 - 0.75.
    assert m.forgetting == pytest.approx([0.3, -0.05])
    assert m.mean_forgetting == pytest.approx(0.125)
    assert m.max_forgetting == pytest.approx(0.3)
    assert m.fwt is None
    assert m.matrix[0] == [0.9, None, None]


def test_known_forward_transfer_against_a_reference():
    m = continual_metrics(FORGETTING, reference=[0.95, 0.6, 0.55])
    # Tasks 1 and 2 after the earlier ones vs alone: (0.1 + -0.05) / 2.
    assert m.fwt == pytest.approx(0.025)


def test_no_forgetting_is_exactly_zero():
    m = continual_metrics(FLAT)
    assert m.bwt == 0.0 and m.mean_forgetting == 0.0
    assert m.max_forgetting == 0.0 and m.forgetting == [0.0, 0.0]


def test_one_task():
    m = continual_metrics([[0.8]], reference=[0.9])
    assert (m.bwt, m.fwt, m.mean_forgetting) == (0.0, 0.0, 0.0)
    assert m.average_accuracy == 0.8


def test_values_above_the_diagonal_are_ignored():
    above = [[0.9, 0.5, 0.5], [0.8, 0.7, 0.5], [0.6, 0.75, 0.5]]
    assert continual_metrics(above) == continual_metrics(FORGETTING)


@pytest.mark.parametrize("matrix, match", [
    ([[0.9, 0.1]], "square accuracy matrix"),
    ([[0.9, None], [None, 0.8]], r"lacks R\[1\]\[0\]"),
    ([], "square"),
])
def test_bad_matrices(matrix, match):
    with pytest.raises(ValueError, match=match):
        continual_metrics(matrix)


def test_bad_names_and_reference():
    with pytest.raises(ValueError, match="Expected 3 task names"):
        continual_metrics(FORGETTING, task_names=["a"])
    with pytest.raises(ValueError, match="one reference accuracy per task"):
        continual_metrics(FORGETTING, reference=[0.9, 0.9])


def test_table_and_dict():
    m = continual_metrics(FORGETTING, task_names=["a", "b", "c"],
                          reference=[0.9, 0.9, 0.9])
    text = m.table()
    assert "BWT -0.1250" in text and "forgetting mean 0.1250" in text
    assert m.as_dict()["task_names"] == ["a", "b", "c"]


def test_plot_is_a_small_png(tmp_path):
    path = plot_accuracy_across_tasks(
        {"packnet": FLAT, "finetune": FORGETTING,
         "joint": [0.9, 0.8, 0.7]}, tmp_path / "acc.png",
        task_names=["a", "b", "c"], title="test")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 200_000


def test_task_inference_metrics_by_hand():
    from packnet_tf.evaluation.metrics import task_inference_metrics

    metrics = task_inference_metrics(
        true_task=["a", "a", "a", "a", "b", "b"],
        chosen_task=["a", "a", "b", "", "b", "a"],
        labels=[0, 1, 1, 0, 2, 0],
        predicted=[0, 0, 1, -1, 2, 0],
        oracle_predicted=[0, 1, 0, 0, 2, 1],
        tasks=["a", "b"])
    assert metrics.columns == ("a", "b", "")
    np.testing.assert_array_equal(metrics.confusion, [[2, 1, 1], [1, 1, 0]])
    np.testing.assert_array_equal(metrics.counts, [4, 2])
    np.testing.assert_allclose(metrics.task_accuracy, [0.5, 0.5])
    # a: example 0 right task and class, example 1 right task wrong class;
    # example 2's class matches but under task b: not end-to-end right.
    np.testing.assert_allclose(metrics.end_to_end, [0.25, 0.5])
    np.testing.assert_allclose(metrics.oracle, [0.75, 0.5])
    np.testing.assert_allclose(metrics.rejected, [0.25, 0.0])
    assert metrics.mean("oracle") == 0.625
    report = metrics.as_dict()
    assert report["end_to_end"] == {"a": 0.25, "b": 0.5}
    assert report["mean_task_accuracy"] == 0.5


def test_task_inference_metrics_errors():
    from packnet_tf.evaluation.metrics import task_inference_metrics

    with pytest.raises(ValueError, match="one non-empty length"):
        task_inference_metrics(["a"], ["a", "a"], [0], [0], [0])
    with pytest.raises(ValueError, match="'c', not one of"):
        task_inference_metrics(["a"], ["c"], [0], [0], [0])
