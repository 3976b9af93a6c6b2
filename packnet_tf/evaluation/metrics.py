"""Continual-learning metrics from an accuracy matrix, as the field reports.

`R[i][j]` is the test accuracy on task j after training tasks 0..i (NaN for
j > i: a task not learned yet). From it, with T tasks (as in GEM, Lopez-Paz
& Ranzato 2017, and Chaudhry et al. 2018):

- average accuracy: mean over j of `R[T-1][j]`, the final accuracies;
- backward transfer (BWT): mean over j < T-1 of `R[T-1][j] - R[j][j]`;
  negative is forgetting, 0 is PackNet's promise;
- forward transfer (FWT) against a reference accuracy per task (e.g.
  individual networks): mean over j >= 1 of `R[j][j] - reference[j]`, how
  much better (or worse) a task is learned after the earlier ones than on
  its own;
- forgetting of task j < T-1: `max over l in [j, T-2] of R[l][j] -
  R[T-1][j]`, its best accuracy before the last task minus its final one;
  reported as the mean and the max over tasks.

`task_inference_metrics` scores inference without a task id over a
mixture of tasks' examples: a confusion table of true against chosen task,
and accuracy end to end and with the true task given.

Pure NumPy: no TensorFlow needed to read a results file.
"""

import dataclasses

import numpy as np


def _matrix(matrix):
    values = np.array(matrix, dtype=float)
    if values.ndim != 2 or values.shape[0] != values.shape[1] or (
            not values.size):
        raise ValueError(
            "Expected a square accuracy matrix R[i][j] (accuracy on task j "
            "after training task i), one row and one column per task. "
            f"Received shape {values.shape}.")
    lower = np.tril(np.ones(values.shape, dtype=bool))
    if np.isnan(values[lower]).any():
        i, j = np.argwhere(np.isnan(values) & lower)[0]
        raise ValueError(
            f"The accuracy matrix lacks R[{i}][{j}] (task {j} after task "
            f"{i}); every task must be evaluated after every later task.")
    values[~lower] = np.nan
    return values


@dataclasses.dataclass(frozen=True)
class ContinualMetrics:
    """What a task sequence's accuracy matrix says.

    Attributes:
        task_names: the tasks, in training order.
        matrix: `R[i][j]` as nested lists (None above the diagonal).
        final: each task's final accuracy (`R[T-1][j]`).
        average_accuracy: mean of `final`.
        bwt: backward transfer (0.0 for a single task).
        fwt: forward transfer against the reference, or None without one.
        forgetting: per task but the last, best-before-last minus final.
        mean_forgetting, max_forgetting: over `forgetting` (0.0 for a
            single task).
    """

    task_names: tuple
    matrix: list
    final: list
    average_accuracy: float
    bwt: float
    fwt: float
    forgetting: list
    mean_forgetting: float
    max_forgetting: float

    def as_dict(self):
        """The metrics as a JSON-friendly dict."""
        return dataclasses.asdict(self) | {"task_names": list(
            self.task_names)}

    def table(self):
        """The matrix and the metrics as text, for a terminal."""
        width = max([9] + [len(n) for n in self.task_names]) + 2
        lines = ["after \\ on".ljust(width) + "".join(
            f"{n[:width - 2]:>{width}}" for n in self.task_names)]
        for name, row in zip(self.task_names, self.matrix):
            lines.append(name[:width - 1].ljust(width) + "".join(
                f"{'':>{width}}" if v is None else f"{v:>{width}.4f}"
                for v in row))
        fwt = "n/a" if self.fwt is None else f"{self.fwt:+.4f}"
        lines.append(
            f"average accuracy {self.average_accuracy:.4f}, BWT "
            f"{self.bwt:+.4f}, FWT {fwt}, forgetting mean "
            f"{self.mean_forgetting:.4f} / max {self.max_forgetting:.4f}")
        return "\n".join(lines)


def continual_metrics(matrix, task_names=None, reference=None):
    """Computes the metrics of an accuracy matrix.

    Args:
        matrix: `R[i][j]`, T x T (values above the diagonal are ignored).
        task_names: the tasks' names (default `"task_0"`, ...).
        reference: optional accuracies per task of a reference learner
            (individual networks), for forward transfer.

    Returns:
        A `ContinualMetrics`.

    Raises:
        ValueError: if the matrix is not square, lacks an entry on or
            below the diagonal, or the names or reference do not have one
            entry per task.

    Example:

    >>> m = continual_metrics([[0.9, None], [0.7, 0.8]])
    >>> round(m.bwt, 4), round(m.mean_forgetting, 4)
    (-0.2, 0.2)
    """
    values = _matrix([[np.nan if v is None else v for v in row]
                      for row in matrix])
    count = len(values)
    names = tuple(task_names) if task_names is not None else tuple(
        f"task_{j}" for j in range(count))
    if len(names) != count:
        raise ValueError(f"Expected {count} task names. Received "
                         f"{len(names)}: {list(names)}")
    final = values[-1]
    diagonal = np.diag(values)
    earlier = range(count - 1)
    bwt = float(np.mean([final[j] - diagonal[j] for j in earlier])) if (
        count > 1) else 0.0
    forgetting = [float(np.max(values[j:count - 1, j]) - final[j])
                  for j in earlier]
    fwt = None
    if reference is not None:
        reference = np.asarray(reference, dtype=float)
        if reference.shape != (count,):
            raise ValueError(f"Expected one reference accuracy per task "
                             f"({count}). Received {reference.tolist()}")
        fwt = float(np.mean(diagonal[1:] - reference[1:])) if (
            count > 1) else 0.0
    return ContinualMetrics(
        task_names=names,
        matrix=[[None if np.isnan(v) else float(v) for v in row]
                for row in values],
        final=[float(v) for v in final],
        average_accuracy=float(np.mean(final)),
        bwt=bwt,
        fwt=fwt,
        forgetting=forgetting,
        mean_forgetting=float(np.mean(forgetting)) if forgetting else 0.0,
        max_forgetting=float(np.max(forgetting)) if forgetting else 0.0,
    )


@dataclasses.dataclass(frozen=True)
class TaskInferenceMetrics:
    """How well the task was inferred over a mixture of tasks' examples.

    Attributes:
        tasks: the true tasks, in the order of the rows below.
        columns: the tasks that could be chosen, then `""` (no task: the
            example was rejected).
        confusion: `[len(tasks), len(columns)]` int counts, true task
            (row) against chosen task (column).
        counts: examples per true task.
        task_accuracy: per true task, the share whose task was chosen.
        end_to_end: per true task, the share with the task and the class
            both right.
        oracle: per true task, the class accuracy with the true task
            given.
        rejected: per true task, the share answered "no task".
    """

    tasks: tuple
    columns: tuple
    confusion: np.ndarray
    counts: np.ndarray
    task_accuracy: np.ndarray
    end_to_end: np.ndarray
    oracle: np.ndarray
    rejected: np.ndarray

    def mean(self, field):
        """The mean over tasks (each task weighs the same) of a field."""
        return float(np.mean(getattr(self, field)))

    def as_dict(self):
        """JSON-ready: every field, and the means over tasks."""
        out = {"tasks": list(self.tasks), "columns": list(self.columns),
               "confusion": self.confusion.tolist(),
               "counts": self.counts.tolist()}
        for field in ("task_accuracy", "end_to_end", "oracle", "rejected"):
            out[field] = dict(zip(self.tasks,
                                  getattr(self, field).tolist()))
            out[f"mean_{field}"] = self.mean(field)
        return out


def task_inference_metrics(true_task, chosen_task, labels, predicted,
                           oracle_predicted, tasks=None, columns=None):
    """Task-inference accuracy, end to end and against the task given.

    Args:
        true_task: `[N]` each example's task name.
        chosen_task: `[N]` the task chosen for it (`""`: rejected).
        labels: `[N]` its true class id (in its own task's head).
        predicted: `[N]` the class id the chosen task answered.
        oracle_predicted: `[N]` the class id its true task answered.
        tasks: the true tasks' order (default: as first seen).
        columns: the tasks that could be chosen (default: `tasks`).

    Returns:
        A `TaskInferenceMetrics`.

    Raises:
        ValueError: if the arrays differ in length or are empty, or a name
            is outside `tasks` / `columns`.
    """
    true_task = np.asarray(true_task, dtype=object)
    chosen_task = np.asarray(chosen_task, dtype=object)
    arrays = [np.asarray(a) for a in (labels, predicted, oracle_predicted)]
    n = len(true_task)
    if not n or any(len(a) != n for a in [chosen_task, *arrays]):
        raise ValueError(
            "Expected true_task, chosen_task, labels, predicted and "
            "oracle_predicted of one non-empty length. Received lengths "
            f"{[len(true_task), len(chosen_task)] + [len(a) for a in arrays]}.")
    labels, predicted, oracle_predicted = arrays
    if tasks is None:
        tasks = list(dict.fromkeys(true_task.tolist()))
    tasks = tuple(tasks)
    columns = tuple(tasks if columns is None else columns) + ("",)
    row = {name: i for i, name in enumerate(tasks)}
    column = {name: i for i, name in enumerate(columns)}
    for name in set(true_task.tolist()) - set(row):
        raise ValueError(f"true_task holds {name!r}, not one of {tasks}.")
    for name in set(chosen_task.tolist()) - set(column):
        raise ValueError(
            f"chosen_task holds {name!r}, not one of {columns}.")
    confusion = np.zeros((len(tasks), len(columns)), np.int64)
    np.add.at(confusion, ([row[t] for t in true_task],
                          [column[c] for c in chosen_task]), 1)
    right_task = chosen_task == true_task
    per = lambda values: np.array([
        float(np.mean(values[true_task == name]))
        if np.any(true_task == name) else float("nan") for name in tasks])
    return TaskInferenceMetrics(
        tasks=tasks, columns=columns, confusion=confusion,
        counts=confusion.sum(axis=1),
        task_accuracy=per(right_task),
        end_to_end=per(right_task & (predicted == labels)),
        oracle=per(oracle_predicted == labels),
        rejected=per(chosen_task == ""))


def plot_accuracy_across_tasks(matrices, path, task_names, title=None):
    """Each task's accuracy as later tasks are learned, a line per method.

    One panel per task j: its accuracy after training tasks j, j+1, ...,
    T-1, one line per method (PackNet flat, forgetting methods falling).

    Args:
        matrices: `{method: R}`, each R a T x T accuracy matrix; a method
            with only a final row (joint training) may give a list of T
            final accuracies instead, drawn as a dashed level.
        path: the image file (.png, .svg, .pdf by suffix).
        task_names: the T tasks' names.
        title: the figure's title.

    Returns:
        `path`.
    """
    from matplotlib.figure import Figure

    count = len(task_names)
    # A Figure of its own, not pyplot: no global backend or state changes.
    figure = Figure(figsize=(max(2.4 * count, 8.0), 3.0), dpi=80)
    axes = figure.subplots(1, count, sharey=True, squeeze=False)[0]
    for j, (axis, name) in enumerate(zip(axes, task_names)):
        steps = np.arange(j, count)
        for method, values in matrices.items():
            values = np.array([[np.nan if v is None else v for v in row]
                               for row in values] if np.ndim(values) == 2
                              else values, dtype=float)
            if values.ndim == 1:
                axis.axhline(values[j], linestyle="--", linewidth=1,
                             color="grey", label=method)
                continue
            axis.plot(steps + 1, values[j:, j], marker="o",
                              markersize=3, label=method)
        axis.set_title(name, fontsize=9)
        axis.set_xticks(np.arange(1, count + 1))
        axis.set_xlim(0.5, count + 0.5)
        axis.set_xlabel("after task", fontsize=8)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center",
                  ncol=min(len(labels), 6), fontsize=8, frameon=False)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0.1, 1, 0.93 if title else 1))
    figure.savefig(path)
    return path
