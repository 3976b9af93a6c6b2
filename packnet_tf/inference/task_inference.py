"""Answering without a task id: which finished task an input belongs to.

PackNet's tasks are nested masks over one set of weights, so every finished
task's answer to an input can be computed. `infer_task` runs the candidate
tasks on a batch and picks, per example or for the whole batch, the task
whose answer is most confident (as SupSup, Wortsman et al., NeurIPS 2020,
picks a mask):

- `"entropy"`: `1 - H(p) / log(C)`, one minus the entropy of the task's
  class probabilities normalized by its maximum (heads differ in width): 1
  for a one-hot answer, 0 for a uniform one;
- `"confidence"`: the largest class probability, `max p` (in [1/C, 1]);
- `"statistics"`: how typical the input's early activation statistics are
  of the task's own training inputs (`packnet_tf.inference.density`: a
  Gaussian per task over per-channel means and spreads, recorded by
  `calibrate` when the task ends), in (0, 1]. It looks at the input, not
  at the head's answer, and tells dissimilar data sets apart best.

`per="batch"` treats the whole batch as one task's (a client that sends
one task's images): the task with the largest sum of scores answers every
example. A `reject_threshold` answers "no task" (an empty task name, class
id -1) where the chosen task's score (per batch: its mean score) is below
it.

`calibrated=True` reads each task's score as its percentile among the
task's own scores on its training inputs (`calibrate`, which `train_task`
and `packnet-tf train` run when a task ends): a head that is confident on
every input (an MNIST head on photos) then no longer outbids the others.

The tasks run in one traced function: each candidate task's trunk and head
in turn, with the layers' active task mapped to the candidate
(`keras.StatelessScope`): nothing about the model changes, and no weight is
copied.
"""

import dataclasses
import numbers
import weakref

import keras
import numpy as np
import tensorflow as tf

from packnet_tf.core.trunk import packed_layers
from packnet_tf.inference import density as density_lib

#: The scoring rules.
SCORES = ("entropy", "confidence", "statistics")
#: The rules read from the heads' class probabilities.
HEAD_SCORES = ("entropy", "confidence")

#: What a choice is made for.
PER = ("example", "batch")

#: Examples per traced call, unless told.
DEFAULT_BATCH_SIZE = 256

#: Quantiles of a task's own scores kept for calibration (0%, 1%, ..., 100%).
QUANTILES = np.linspace(0.0, 1.0, 101)

#: The most training examples `calibrate` reads.
CALIBRATION_EXAMPLES = 2048


@dataclasses.dataclass(frozen=True)
class TaskInference:
    """What `infer_task` chose for each example.

    Attributes:
        tasks: the candidate tasks' names, the column order of
            `task_scores`.
        task: `[N]` the chosen task's name per example ("" where rejected).
        class_ids: `[N]` int32, the chosen task's class (argmax of its
            head's outputs; -1 where rejected).
        class_names: `[N]` the class's name (the task's input contract's
            names, else the id as text; "" where rejected).
        scores: `[N]` float32, the chosen task's score for the example
            (per batch: every example's own score under the chosen task).
        task_scores: `[N, T]` float32, every candidate task's score.
        probabilities: `{task name: [N, C] float32}`, each candidate task's
            class probabilities.
    """

    tasks: tuple
    task: np.ndarray
    class_ids: np.ndarray
    class_names: np.ndarray
    scores: np.ndarray
    task_scores: np.ndarray
    probabilities: dict

    def __len__(self):
        return len(self.task)


def _fail(argument, expected, received):
    raise ValueError(f"Expected `{argument}` to be {expected}. "
                     f"Received: {argument}={received!r}")


def _candidates(model, tasks):
    """The finished tasks with a head that `tasks` names (all if None)."""
    finished = [t for t in model.tasks if t.finished and not t.headless]
    if tasks is None:
        if not finished:
            raise ValueError(
                "infer_task needs a finished task with a head to choose "
                f"from; the model's tasks are "
                f"{[(t.name, t.state) for t in model.tasks]}. End a task "
                "first (`model.end_task()`).")
        chosen = finished
    else:
        if isinstance(tasks, str) or not isinstance(tasks, (list, tuple)):
            _fail("tasks", "a list of finished task names, or None for "
                  "every finished task", tasks)
        by_name = {t.name: t for t in model.tasks}
        chosen = []
        for name in tasks:
            task = by_name.get(name)
            if task is None or not task.finished or task.headless:
                what = ("no task of the model" if task is None
                        else "headless" if task.headless
                        else f"not finished (state {task.state!r})")
                raise ValueError(
                    f"Expected `tasks` to name finished tasks with a head "
                    f"({[t.name for t in finished]}). Received: "
                    f"tasks={list(tasks)!r}; {name!r} is {what}.")
            if task not in chosen:
                chosen.append(task)
        if not chosen:
            _fail("tasks", "at least one finished task name", tasks)
    narrow = [t.name for t in chosen if t.num_classes < 2]
    if narrow:
        raise ValueError(
            f"Tasks {narrow} have heads of width 1: a task's confidence "
            "needs at least 2 classes. Leave them out with `tasks=`.")
    preprocessing = {(t.input_contract.preprocess, t.input_contract.pixels)
                     for t in chosen if t.input_contract is not None}
    if len(preprocessing) > 1:
        raise ValueError(
            "The candidate tasks preprocess their inputs differently "
            f"({ {t.name: t.input_contract.preprocess for t in chosen if t.input_contract is not None} }), "
            "so one float batch cannot be every task's input. Pass `tasks=` "
            "naming tasks with one preprocessing.")
    return chosen


def task_scores(probabilities, score):
    """Each example's score under one task, from its class probabilities.

    Args:
        probabilities: `[N, C]` class probabilities (C >= 2).
        score: one of `HEAD_SCORES` (`"statistics"` reads the input
            itself: `density.density_scores`).

    Returns:
        `[N]` float32 scores in [0, 1], larger for a more confident answer.
    """
    p = tf.convert_to_tensor(probabilities, tf.float32)
    if score == "confidence":
        return tf.reduce_max(p, axis=-1)
    classes = tf.cast(tf.shape(p)[-1], tf.float32)
    entropy = -tf.reduce_sum(
        tf.where(p > 0, p * tf.math.log(tf.maximum(p, 1e-30)), 0.0), axis=-1)
    return 1.0 - entropy / tf.math.log(classes)


class _AllTasks:
    """One traced function from a batch to every candidate's head outputs
    (and, with `statistics`, every candidate's density score)."""

    def __init__(self, model, tasks, statistics=False):
        self._model = model
        self._tasks = tasks
        self._active = [layer.active_task
                        for layer in packed_layers(model.trunk)]
        self._extract = None
        if statistics:
            self._extract = density_lib.statistics_model(
                model.trunk, tasks[0].input_density["layers"])
        self._function = tf.function(self._outputs, reduce_retracing=True)

    def _outputs(self, x):
        outputs, scores = [], []
        for task in self._tasks:
            # Every packed layer computes for this task inside the scope;
            # the layers' own variables are not touched.
            mapping = [(v, tf.constant(task.task_id, v.dtype))
                       for v in self._active]
            with keras.StatelessScope(state_mapping=mapping):
                if self._extract is None:
                    features = self._model.trunk(x, training=False)
                else:
                    *layer_outputs, features = self._extract(
                        x, training=False)
                    scores.append(density_lib.density_scores(
                        density_lib.example_statistics(layer_outputs),
                        task.input_density))
                out = self._model.heads[task.task_id - 1](
                    features, training=False)
            outputs.append(tf.cast(out, tf.float32))
        return outputs, scores

    def __call__(self, x):
        outputs, scores = self._function(x)
        return ([o.numpy() for o in outputs], [s.numpy() for s in scores])


def _first_examples(x, count):
    """Up to `count` inputs of `x`: an array, or any iterable of `x` or
    `(x, y, ...)` batches (a `tf.data.Dataset`, a `keras.utils.PyDataset`,
    a generator; it may repeat forever), or an `(x, y)` tuple of arrays
    as `train_task` takes."""
    if isinstance(x, tuple) and x and hasattr(x[0], "shape"):
        x = x[0]
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return next(_batches(x, count))
    parts, total = [], 0
    for batch in x:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        if isinstance(batch, dict):
            _fail("x", "batches of `x` or `(x, y)`", type(batch).__name__)
        parts.append(np.asarray(batch))
        total += len(parts[-1])
        if total >= count:
            break
    if not parts:
        _fail("x", "a non-empty array or dataset", x)
    return np.concatenate(parts)[:count]


def calibrate(model, task, x, examples=CALIBRATION_EXAMPLES,
              density_layers=density_lib.DENSITY_LAYERS):
    """Records how the task's own inputs look to it.

    A head trained on one data set can be confident on every input (an
    MNIST head on photos): comparing raw scores across tasks then favours
    it. Calibration records, on the task's own (training) examples:

    - the Gaussian of their early activation statistics
      (`packnet_tf.inference.density`), for `score="statistics"`;
    - per rule, 101 quantiles of the task's scores;
      `infer_task(calibrated=True)` reads a score as its percentile among
      them.

    `train_task` and `packnet-tf train` calibrate every task when it ends.

    Args:
        model: a `PackNetModel`.
        task: the name of a task with a head.
        x: the task's inputs, trunk-ready (an array, or a dataset of `x` or
            `(x, y)` batches); its first `examples` are read. Use training
            data: never the data you will measure on.
        examples: how many inputs to read at most.
        density_layers: how many of the trunk's first packed kernel layers
            give the statistics.

    Returns:
        The task's `TaskInfo`, with `score_reference` and `input_density`
        set.

    Raises:
        ValueError: for an unknown or headless task, or no inputs.
    """
    if isinstance(examples, bool) or not isinstance(
            examples, numbers.Integral) or examples < 2:
        _fail("examples", "an int >= 2", examples)
    if isinstance(density_layers, bool) or not isinstance(
            density_layers, numbers.Integral) or density_layers < 1:
        _fail("density_layers", "an int >= 1", density_layers)
    info = next((t for t in model.tasks if t.name == task), None)
    if info is None or info.headless:
        raise ValueError(
            f"Expected `task` to name a task with a head "
            f"({[t.name for t in model.tasks if not t.headless]}). "
            f"Received: task={task!r}")
    inputs = _first_examples(x, int(examples))
    if len(inputs) < 2:
        _fail("x", "at least 2 inputs", f"{len(inputs)} input")
    try:
        layers = [layer.name for layer in density_lib.statistic_layers(
            model.trunk, int(density_layers))]
    except ValueError:
        # A trunk whose packed layers are nested: no density, the head
        # rules are still calibrated (score="statistics" then says so).
        layers = None
    active = model.active_task.name if model.active_task else None
    model.use_task(task)
    try:
        outputs = model.predict(inputs, batch_size=DEFAULT_BATCH_SIZE,
                                verbose=0)
        statistics = None if layers is None else density_lib.task_statistics(
            model, layers, inputs, DEFAULT_BATCH_SIZE)
    finally:
        if active is not None:
            model.use_task(active)
    answers = probabilities(outputs, info)
    own = {rule: task_scores(answers, rule).numpy() for rule in HEAD_SCORES}
    density = None
    if statistics is not None:
        density = density_lib.fit(statistics, layers)
        own["statistics"] = density_lib.density_scores(statistics,
                                                       density).numpy()
    reference = {rule: np.quantile(values, QUANTILES).tolist()
                 for rule, values in own.items()}
    model.set_input_density(task, density)
    return model.set_score_reference(task, reference)


def calibrated_scores(scores, references):
    """Each task's scores as percentiles of that task's own scores.

    Args:
        scores: `[N, T]` scores, one column per task.
        references: per column, the task's 101 quantiles (its
            `score_reference[rule]`).

    Returns:
        `[N, T]` float32 in [0, 1], interpolated between the quantiles.
    """
    scores = np.asarray(scores, np.float64)
    return np.stack([
        np.interp(scores[:, t], np.asarray(ref, np.float64), QUANTILES)
        for t, ref in enumerate(references)], axis=1).astype(np.float32)


#: Per model, its traced functions by candidate tasks: a call per batch
#: (a server, an evaluation loop) traces once, not every call.
_TRACED = weakref.WeakKeyDictionary()


def _all_tasks(model, candidates, statistics=False):
    key = (tuple((t.name, t.task_id) for t in candidates), statistics)
    traced = _TRACED.setdefault(model, {})
    records = tuple(id(t.input_density) for t in candidates)
    if statistics and key in traced and traced[key][0] != records:
        # The densities are constants of the trace: a recalibrated task
        # (a new record, `set_input_density`) traces anew, and the old
        # trace goes. The cached function holds the records, so their ids
        # are not reused while it lives.
        del traced[key]
    if key not in traced:
        traced[key] = (records, _AllTasks(model, candidates, statistics))
    return traced[key][1]


def probabilities(outputs, task):
    """A head's outputs as class probabilities (softmax of logits).

    Args:
        outputs: `[N, C]` outputs of task `task`'s head.
        task: its `TaskInfo` (its input contract says whether the head
            gives logits).

    Returns:
        A float32 tensor `[N, C]` (traceable: the exports use it too).
    """
    outputs = tf.cast(outputs, tf.float32)
    contract = task.input_contract
    if contract is None or contract.from_logits:
        return tf.nn.softmax(outputs, axis=-1)
    return outputs


def _batches(x, batch_size):
    """`x` (an array, a tensor or a dataset of batches) as float batches."""
    if isinstance(x, tf.data.Dataset):
        for item in x:
            if isinstance(item, (tuple, list)):
                item = item[0]
            elif isinstance(item, dict):
                _fail("x", "a dataset of `x` or `(x, y)` batches",
                      x.element_spec)
            yield item
        return
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        _fail("x", "an array, a tensor or a tf.data.Dataset of batches",
              type(x).__name__)
    x = np.asarray(x)
    if x.ndim < 1 or not len(x):
        _fail("x", "a non-empty batch of inputs", f"shape {x.shape}")
    for start in range(0, len(x), batch_size):
        yield x[start:start + batch_size]


def choose_tasks(task_scores, per="example", group_size=None,
                 reject_threshold=None):
    """Which task answers each example, from every task's scores.

    What `infer_task` does after scoring, exposed for scores already
    computed (an evaluation over many batches, a benchmark): per example,
    the highest score; per batch, the highest sum of scores over each
    group of `group_size` consecutive examples (every example one group if
    None). Pure NumPy.

    Args:
        task_scores: `[N, T]` scores, one column per candidate task.
        per: `"example"` or `"batch"`.
        group_size: per batch, examples per group (the last group may be
            smaller); None: all N.
        reject_threshold: a score under which no task answers (per batch:
            the group's mean score under its chosen task), or None.

    Returns:
        `(chosen, chosen_score, rejected)`: `[N]` int64 column indices,
        `[N]` the chosen task's score per example, `[N]` bool.

    Raises:
        ValueError: if `per`, `group_size` or `task_scores` is not what is
            expected.
    """
    if per not in PER:
        _fail("per", f"one of {PER}", per)
    scores = np.asarray(task_scores, dtype=np.float64)
    if scores.ndim != 2 or not scores.shape[0] or not scores.shape[1]:
        _fail("task_scores", "an [N, T] array with N, T >= 1",
              f"shape {scores.shape}")
    n = len(scores)
    if group_size is not None and (
            isinstance(group_size, bool)
            or not isinstance(group_size, numbers.Integral)
            or group_size < 1):
        _fail("group_size", "an int >= 1 or None", group_size)
    if per == "example":
        chosen = np.argmax(scores, axis=1)
        chosen_score = scores[np.arange(n), chosen]
        confidence = chosen_score  # compared with the threshold
    else:
        size = n if group_size is None else int(group_size)
        chosen = np.empty(n, np.int64)
        confidence = np.empty(n)
        for start in range(0, n, size):
            part = slice(start, start + size)
            best = int(np.argmax(scores[part].sum(axis=0)))
            chosen[part] = best
            confidence[part] = scores[part, best].mean()
        chosen_score = scores[np.arange(n), chosen]
    rejected = (np.zeros(n, bool) if reject_threshold is None
                else confidence < reject_threshold)
    return chosen, chosen_score, rejected


def infer_task(model, x, per="example", tasks=None, score="entropy",
               reject_threshold=None, batch_size=None, calibrated=False):
    """Chooses, without a task id, which finished task answers `x`.

    Args:
        model: a `PackNetModel` with at least one finished task.
        x: what the model's `predict` takes (trunk-ready floats): an array
            or tensor `[N, ...]`, or a `tf.data.Dataset` of `x` or
            `(x, y)` batches (`y` ignored).
        per: `"example"` (each example its own task) or `"batch"` (every
            example of `x` from one task: the largest sum of scores wins).
        tasks: the candidate task names (finished, with a head), or None
            for every finished task. The first of equal scores wins.
        score: `"entropy"`, `"confidence"` or `"statistics"` (see the
            module docstring; `"statistics"` needs every candidate's
            `input_density`, which `calibrate` records).
        reject_threshold: a score in [0, 1] under which no task answers
            (task "", class id -1), or None to always answer. Per batch,
            the chosen task's mean score is compared.
        batch_size: examples per traced call (default 256); arrays only.
        calibrated: whether each task's score is read as its percentile
            among the task's own scores (see `calibrate`); then
            `task_scores`, `scores` and `reject_threshold` are percentiles.
            Every candidate needs a `score_reference`.

    Returns:
        A `TaskInference`.

    Raises:
        ValueError: naming the argument, if `per`, `score`, `tasks`,
            `reject_threshold`, `batch_size` or `x` is not what is
            expected, if the candidate tasks preprocess their inputs
            differently, or if a score they need was never recorded.
    """
    if per not in PER:
        _fail("per", f"one of {PER}", per)
    if score not in SCORES:
        _fail("score", f"one of {SCORES}", score)
    if reject_threshold is not None and (
            isinstance(reject_threshold, bool)
            or not isinstance(reject_threshold, numbers.Real)
            or not 0.0 <= reject_threshold <= 1.0):
        _fail("reject_threshold", "a number in [0, 1] or None",
              reject_threshold)
    if batch_size is None:
        batch_size = DEFAULT_BATCH_SIZE
    if (isinstance(batch_size, bool) or not isinstance(
            batch_size, numbers.Integral) or batch_size < 1):
        _fail("batch_size", "an int >= 1", batch_size)
    if not isinstance(calibrated, bool):
        _fail("calibrated", "True or False", calibrated)
    candidates = _candidates(model, tasks)
    if calibrated:
        missing = [t.name for t in candidates
                   if not (t.score_reference or {}).get(score)]
        if missing:
            raise ValueError(
                f"calibrated=True reads each task's own score quantiles "
                f"for score={score!r}; tasks {missing} have none (trained "
                "before they were recorded). Record them from each task's "
                "training inputs: "
                "packnet_tf.inference.task_inference.calibrate(model, task, x).")
    statistics = score == "statistics"
    if statistics:
        density_lib.check_densities(candidates)
    run = _all_tasks(model, candidates, statistics)
    parts = [run(batch) for batch in _batches(x, int(batch_size))]
    if not parts:
        _fail("x", "a non-empty dataset", x)
    outputs = [np.concatenate([p[0][t] for p in parts])
               for t in range(len(candidates))]
    answers = [probabilities(o, t).numpy()
               for o, t in zip(outputs, candidates)]
    if statistics:
        scores = np.stack([np.concatenate([p[1][t] for p in parts])
                           for t in range(len(candidates))], axis=1)
    else:
        scores = np.stack([task_scores(p, score).numpy() for p in answers],
                          axis=1)
    if calibrated:
        scores = calibrated_scores(
            scores, [t.score_reference[score] for t in candidates])
    chosen, chosen_score, rejected = choose_tasks(
        scores, per=per, reject_threshold=reject_threshold)
    names = [t.name for t in candidates]
    class_names = [
        t.input_contract.names_for(t.num_classes)
        if t.input_contract is not None
        else tuple(str(i) for i in range(t.num_classes))
        for t in candidates]
    # Ranked by the head's own outputs, as `predict` + argmax: softmax may
    # round two logits to one probability.
    class_ids = np.array([int(np.argmax(outputs[c][i]))
                          for i, c in enumerate(chosen)], np.int32)
    task = np.array([names[c] for c in chosen], dtype=object)
    labels = np.array([class_names[c][k] for c, k in zip(chosen, class_ids)],
                      dtype=object)
    task[rejected] = ""
    labels[rejected] = ""
    class_ids[rejected] = -1
    return TaskInference(
        tasks=tuple(names), task=task, class_ids=class_ids,
        class_names=labels, scores=chosen_score.astype(np.float32),
        task_scores=scores.astype(np.float32),
        probabilities={name: p for name, p in zip(names, answers)})
