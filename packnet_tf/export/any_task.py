"""The `any_task` signatures: the task chosen from the input itself.

A multi-task SavedModel (`layout="multi"`) serves, beside each task's own
signatures, the answer of the task `packnet_tf.infer_task` would choose
per example, by the export's `any_task_score`: `"entropy"` (the default,
`infer_task`'s default: the heads' normalized entropy) or `"statistics"`
(each task's input density, `packnet_tf.inference.density`: the early
layers' activation statistics under each task's mask, scored by the
Gaussian `calibrate` recorded when the task ended; every exported task
needs one):

- `any_task`: the trunk-ready float batch `inputs` (only when the tasks
  agree on their preprocessing, so that one float batch is every task's
  input);
- `any_task_pixels`: uint8 `pixels` of any size, and `any_task_images`:
  encoded `image_bytes` (only when every exported task has an input
  contract for pixels): each task's own resizing and preprocessing applied
  in its branch, computed once per distinct contract.

Every one returns, per example, `task` (the chosen task's name), the top
k = min(5, widest head) `class_ids`, `class_names` and `scores` (class
probabilities) within the chosen task (padded with -1, "" and 0 past a
narrower head's width), and `task_scores` `[batch, tasks]`: every exported
task's score, in the order the loaded SavedModel's `any_task_tasks()`
function returns (no inputs; the task names; `any_task_score()` returns
the rule). A client that knows its batch comes from one task sums
`task_scores` over the batch (`infer_task`'s `per="batch"`).
"""

import tensorflow as tf

from packnet_tf.data import image_limits
from packnet_tf.export.signatures import (CLASS_IDS, CLASS_NAMES, IMAGES_NAME,
                                          PIXELS_NAME, SCORES, TOP_K,
                                          image_shape, images_to_inputs,
                                          pixels_to_inputs)
from packnet_tf.inference import density
from packnet_tf.inference.task_inference import probabilities, task_scores

#: Signature keys.
ANY_TASK = "any_task"
ANY_TASK_PIXELS = "any_task_pixels"
ANY_TASK_IMAGES = "any_task_images"
#: Outputs besides the class outputs.
TASK = "task"
TASK_INDEX = "task_index"
TASK_SCORES = "task_scores"
#: The scoring rule the signatures use by default (`infer_task`'s default).
SCORE = "entropy"
#: The scoring rules an export can choose.
SCORE_RULES = ("entropy", "statistics")


def check_score(score, tasks):
    """Checks an export's `any_task_score` against the exported tasks.

    Args:
        score: one of `SCORE_RULES`.
        tasks: the exported tasks' `TaskInfo`s.

    Returns:
        `score`.

    Raises:
        ValueError: for an unknown rule, or `"statistics"` where a task has
            no input density or the densities read different layers.
    """
    if not isinstance(score, str) or score not in SCORE_RULES:
        raise ValueError(
            f"Expected `any_task_score` in {SCORE_RULES}. Received: "
            f"any_task_score={score!r}")
    if score == "statistics":
        density.check_densities(tasks)
    return score


def statistic_layer_names(tasks, score):
    """The layers whose outputs the `any_task` signatures read besides the
    heads'.

    Args:
        tasks: the exported tasks' `TaskInfo`s (checked by `check_score`).
        score: the export's rule.

    Returns:
        A tuple of trunk layer names for `"statistics"`, else None.
    """
    return (tuple(tasks[0].input_density["layers"])
            if score == "statistics" else None)


def _padded(values, width, fill):
    """`values` `[batch, k]` padded on the right to `[batch, width]`."""
    missing = width - values.shape[-1]
    if missing == 0:
        return values
    return tf.pad(values, [[0, 0], [0, missing]], constant_values=fill)


def top_k(tasks):
    """How many classes the `any_task` outputs list: min(5, widest head)."""
    return min(TOP_K, max(t.num_classes for t in tasks))


def choose_numbers(outputs, tasks, score=SCORE, layer_outputs=None,
                   densities=None):
    """The chosen task and its top k, in numbers only (builtin TFLite ops).

    Args:
        outputs: one `[batch, classes]` tensor per task, in `tasks`' order.
        tasks: the tasks' `TaskInfo`s.
        score: the scoring rule, one of `SCORE_RULES`.
        layer_outputs: with `"statistics"`, per task (in `tasks`' order)
            the outputs of its density's layers under its mask.
        densities: with `"statistics"`, per task its density's `mean` and
            `precision` (variables of the exported module); default the
            tasks' recorded `input_density`.

    Returns:
        A dict of `task_index` (int32 `[batch]`, the chosen task's position
        in `tasks`), `class_ids` (int32 `[batch, k]`, -1 past a narrower
        head's width), `scores` (float32 `[batch, k]`, the classes'
        probabilities, 0 past the width) and `task_scores` (`[batch,
        tasks]`).
    """
    k = top_k(tasks)
    ids, top_probabilities, scores = [], [], []
    for index, (out, task) in enumerate(zip(outputs, tasks)):
        p = probabilities(out, task)
        if score == "statistics":
            scores.append(density.density_scores(
                density.example_statistics(layer_outputs[index]),
                task.input_density if densities is None
                else densities[index]))
        else:
            scores.append(task_scores(p, score))
        # Ranked by the head's own outputs, as every signature's top k.
        _, top = tf.math.top_k(tf.cast(out, tf.float32),
                               k=min(TOP_K, task.num_classes))
        ids.append(_padded(top, k, -1))
        top_probabilities.append(
            _padded(tf.gather(p, top, batch_dims=1), k, 0.0))
    every = tf.stack(scores, axis=1)  # [batch, tasks]
    # The first of equal scores, as `infer_task` (numpy's argmax).
    chosen = tf.argmax(every, axis=1, output_type=tf.int32)

    def pick(values):
        return tf.gather(tf.stack(values, axis=1), chosen, axis=1,
                         batch_dims=1)

    return {TASK_INDEX: chosen, CLASS_IDS: pick(ids),
            SCORES: pick(top_probabilities), TASK_SCORES: every}


def choose(outputs, tasks, score=SCORE, layer_outputs=None, densities=None):
    """The `any_task` outputs of a SavedModel from every task's outputs.

    Args:
        outputs: one `[batch, classes]` tensor per task, in `tasks`' order.
        tasks: the tasks' `TaskInfo`s.
        score: the scoring rule, one of `SCORE_RULES`.
        layer_outputs, densities: with `"statistics"`, per task its
            density's layers' outputs and its density (see
            `choose_numbers`).

    Returns:
        A dict of `task`, `class_ids`, `class_names`, `scores` and
        `task_scores` (see the module docstring).
    """
    answer = choose_numbers(outputs, tasks, score, layer_outputs, densities)
    chosen, ids = answer.pop(TASK_INDEX), answer[CLASS_IDS]
    widest = max(t.num_classes for t in tasks)
    # Each task's class names, padded to the widest head, and "" last:
    # a padded id (-1) reads the last column.
    table = []
    for task in tasks:
        names = (task.input_contract.names_for(task.num_classes)
                 if task.input_contract is not None
                 else tuple(str(i) for i in range(task.num_classes)))
        table.append(list(names) + [""] * (widest + 1 - len(names)))
    rows = tf.gather(tf.constant(table, tf.string), chosen)
    columns = tf.where(ids < 0, widest, ids)
    answer[CLASS_NAMES] = tf.gather(rows, columns, batch_dims=1)
    answer[TASK] = tf.gather(
        tf.constant([t.name for t in tasks], tf.string), chosen)
    return answer


def _grouped(tasks):
    """Tasks by the inputs they read: `{(preprocess, resize): [index]}`."""
    groups = {}
    for index, task in enumerate(tasks):
        contract = task.input_contract
        key = (None if contract is None
               else (contract.preprocess, contract.resize))
        groups.setdefault(key, []).append(index)
    return groups


def any_task_functions(tasks, forwards, input_spec, limits=None,
                       score=SCORE, densities=None):
    """The `tf.function`s of the `any_task` signatures.

    Args:
        tasks: the exported tasks' `TaskInfo`s (finished, with heads).
        forwards: one function per task (a float batch of trunk inputs ->
            the head's outputs; with `"statistics"`, a pair of the density
            layers' outputs and the head's outputs), in `tasks`' order.
        input_spec: the `tf.TensorSpec` of the float batch.
        limits: the `ImageLimits` every signature checks (default: the
            defaults).
        score: the scoring rule, one of `SCORE_RULES` (checked by
            `check_score`).
        densities: with `"statistics"`, per task its density's `mean` and
            `precision` (see `choose_numbers`).

    Returns:
        `{signature key: tf.function}`: `any_task` when the tasks agree on
        their preprocessing, `any_task_pixels` and `any_task_images` when
        every task has a contract for pixels on an image trunk; empty if
        neither.
    """
    limits = image_limits.check_limits(limits)
    groups = _grouped(tasks)
    functions = {}

    def answer(inputs_of):
        # Each distinct preparation once; each task reads its group's.
        inputs = {key: inputs_of(key) for key in groups}
        by_task = {}
        for key, indices in groups.items():
            for index in indices:
                by_task[index] = forwards[index](inputs[key])
        ordered = [by_task[i] for i in range(len(tasks))]
        if score == "statistics":
            return choose([out for _, out in ordered], tasks, score,
                          [layers for layers, _ in ordered], densities)
        return choose(ordered, tasks, score)

    preprocessing = {key[0] if key else None for key in groups}
    if len(preprocessing) == 1:
        @tf.function(input_signature=[input_spec])
        def from_inputs(inputs):
            inputs = tf.ensure_shape(inputs, input_spec.shape)
            with tf.control_dependencies(image_limits.check_floats(
                    inputs, limits, "inputs")):
                inputs = tf.identity(inputs)
            return answer(lambda key: inputs)

        functions[ANY_TASK] = from_inputs

    shape = image_shape(input_spec.shape[1:])
    if shape is None or not all(
            t.input_contract is not None and t.input_contract.pixels
            for t in tasks):
        return functions
    contracts = {key: tasks[indices[0]].input_contract
                 for key, indices in groups.items()}

    @tf.function(input_signature=[tf.TensorSpec(
        (None, None, None, None), tf.uint8, name=PIXELS_NAME)])
    def from_pixels(pixels):
        return answer(lambda key: pixels_to_inputs(
            pixels, shape, contracts[key], limits))

    @tf.function(input_signature=[tf.TensorSpec(
        (None,), tf.string, name=IMAGES_NAME)])
    def from_images(image_bytes):
        return answer(lambda key: images_to_inputs(
            image_bytes, shape, contracts[key], limits))

    functions[ANY_TASK_PIXELS] = from_pixels
    functions[ANY_TASK_IMAGES] = from_images
    return functions
