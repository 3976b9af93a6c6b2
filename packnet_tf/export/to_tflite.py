"""LiteRT (TFLite) files: one task per file, or every task in one file.

`tflite(...)` checks its arguments, converts (`packnet_tf.export.
tflite_convert`: layouts, pixel inputs, quantization), writes the file
atomically and writes each task's class names beside it,
`<task>.labels.txt`, one name per line in label order, and for a file of
several tasks with an `any_task` signature its task names in the
signature's order, `<file>.tasks.txt`.

Class names go beside the file only: LiteRT's metadata writer lived in the
`tflite-support` package, whose last release was in 2023 and which
`ai-edge-litert` does not replace; a file's own metadata stays empty rather
than depend on it.
"""

import os

from packnet_tf.export import checks
from packnet_tf.export.tflite_convert import (INPUTS, LAYOUTS, QUANTIZE_MODES,
                                              any_task_key, check_pixel_inputs,
                                              convert, default_layout)
from packnet_tf.io import atomic

__all__ = ["INPUTS", "LAYOUTS", "QUANTIZE_MODES", "convert",
           "default_layout", "labels_path", "tasks_path", "tflite"]

#: The first bytes of a TFLite flatbuffer carry this file identifier.
_TFLITE_ID = b"TFL3"
#: The labels file written beside a TFLite file, per task.
LABELS_SUFFIX = ".labels.txt"
#: The task list written beside a multi-task TFLite file.
TASKS_SUFFIX = ".tasks.txt"


def labels_path(path, task):
    """The labels file of `task` beside the TFLite file `path`."""
    return os.path.join(os.path.dirname(os.path.abspath(path)),
                        task + LABELS_SUFFIX)


def tasks_path(path):
    """The task list beside a multi-task TFLite file `path` (the order of
    its `any_task` signature's `task_index` and `task_scores`)."""
    return os.path.splitext(os.path.abspath(path))[0] + TASKS_SUFFIX


def write_labels(path, infos):
    """Writes `<task>.labels.txt` beside `path` for every task.

    Args:
        path: the TFLite file.
        infos: its tasks' `TaskInfo`s.

    Returns:
        The labels files written, by task.
    """
    written = {}
    for info in infos:
        contract = info.input_contract
        names = (contract.names_for(info.num_classes) if contract
                 else tuple(str(i) for i in range(info.num_classes)))
        target = labels_path(path, info.name)
        atomic.write_text(target, "\n".join(names) + "\n")
        written[info.name] = target
    return written


def _check_path(path):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"Expected `path` to be a file path. Received: "
            f"{type(path).__name__}")
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise FileExistsError(
            f"{path!r} is a folder; `tflite` writes one file. Pass a file "
            "path such as 'model.tflite'.")
    if os.path.exists(path):
        with open(path, "rb") as file:
            head = file.read(8)
        if head[4:8] != _TFLITE_ID:
            raise FileExistsError(
                f"{path!r} exists and is not a TFLite file; refusing to "
                "overwrite it. Pass a new path or remove the file.")
    return path


def _check_layout(layout, quantize):
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(
            f"Expected `layout` in {(None,) + LAYOUTS}. "
            f"Received: layout={layout!r}")
    if layout == "shared" and default_layout(quantize) == "stacked":
        raise ValueError(
            f"quantize={quantize!r} needs constant kernels to quantize, so "
            "its multi-task files are 'stacked'. Received: layout='shared'. "
            "Pass layout='stacked' (or None), or quantize=None / 'float16' "
            "for a 'shared' file.")


def tflite(model, path, task=None, tasks=None, quantize=None,
           representative_data=None, sparse=False, layout=None,
           inputs="float", any_task_score="entropy"):
    """Exports finished tasks to a LiteRT (TFLite) file.

    With `task`, the file holds that task's plain network (masks baked in,
    batch norm folded). With `tasks` (or neither: every finished task), the
    file holds one signature per task. With `inputs="float"` every
    signature is `task_<name>` and reads the trunk-ready float batch
    `inputs`; with `inputs="pixels"` it is `task_<name>_pixels` and reads
    uint8 `pixels` [batch, height, width, channels] at the trunk's size,
    preprocessed inside the file as the task's input contract says
    (resizing stays with the app). Every signature returns
    `{"outputs": ...}`: the head's outputs (int8 logits in an int8 pixel
    file; see `packnet_tf.export.tflite_convert`). The file is written
    atomically (`packnet_tf.io.atomic`: beside `path`, fsynced, renamed);
    each task's class names go beside it, `<task>.labels.txt`.

    Args:
        model: a `PackNetModel`.
        path: the `.tflite` file to write; an existing TFLite file there is
            replaced.
        task: one finished task's name.
        tasks: a list of finished tasks' names for one multi-task file.
        quantize: None (float32), "dynamic" (int8 weights), "float16", or
            "int8" (weights and activations; needs `representative_data`).
        representative_data: inputs to calibrate "int8" with, a few hundred
            of the task's examples: an array `(N, ...)`, a `tf.data.Dataset`
            of inputs or `(inputs, labels)` (batched or not), an iterable of
            arrays, or a dict `{task name: one of those}` for a multi-task
            file. With `inputs="pixels"`, pixels (0-255) at the trunk's
            size, not preprocessed.
        sparse: store kernels with many zeros compactly
            (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`): an early task uses a
            fraction of the network, so its file shrinks. Such files run
            without the XNNPACK delegate
            (`OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`).
        layout: for a file of several tasks, "shared" (one copy of the
            kernels plus owner masks: about 1.3 networks, but slower, the
            kernels being masked at run time) or "stacked" (each task's
            baked network: T networks, each as fast as a one-task file).
            None picks "shared" for float32 and float16 files, "stacked"
            for "dynamic" and "int8" (which require it). A one-task file
            is always the task's plain network.
        inputs: "float" (trunk-ready float inputs) or "pixels" (uint8
            pixels at the trunk's size; needs each task's input contract).
            With quantize="int8", a pixel file's input is uint8 and its
            output int8, for integer-only accelerators.
        any_task_score: how a file of several tasks' `any_task` signature
            chooses the task: "entropy" (`infer_task`'s default) or
            "statistics" (each task's input density, recorded by
            `calibrate`; needs the "shared" layout).

    Returns:
        The absolute path written.

    Raises:
        ValueError: for an unknown task, a bad `quantize` or `layout`,
            "int8" without `representative_data`, `layout="shared"` with
            "dynamic" or "int8", both `task` and `tasks`, a bad `inputs`,
            `inputs="pixels"` for a task without an input contract or a
            trunk that does not read images, or an `any_task_score` the
            file cannot have (a bad rule; "statistics" for one task, int8,
            the "stacked" layout, or a task without an input density).
        TaskStateError: for a task that has not finished.
        FileExistsError: if `path` is a folder or a file that is not TFLite.

    Example:

    >>> packnet_tf.export.tflite(model, "cars.tflite", task="cars",
    ...                          quantize="int8", representative_data=x_cars)
    """
    if task is not None and tasks is not None:
        raise ValueError(
            "Pass `task` (one task per file) or `tasks` (one file for "
            f"several), not both. Received: task={task!r}, tasks={tasks!r}")
    if quantize not in QUANTIZE_MODES:
        raise ValueError(
            f"Expected `quantize` in {QUANTIZE_MODES}. "
            f"Received: quantize={quantize!r}")
    _check_layout(layout, quantize)
    if inputs not in INPUTS:
        raise ValueError(
            f"Expected `inputs` in {INPUTS}. Received: inputs={inputs!r}")
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            "quantize='int8' calibrates activations on example inputs: pass "
            "`representative_data` (a few hundred of the task's inputs). "
            "Received: representative_data=None. For int8 weights without "
            "data, use quantize='dynamic'.")
    if task is not None:
        if not isinstance(task, str):
            raise TypeError(
                f"Expected `task` to be a task name. Received: {task!r}")
        infos = checks.select_tasks(model, [task])
    else:
        infos = checks.select_tasks(model, tasks)
    if inputs == "pixels":
        check_pixel_inputs(model, infos)
    path = _check_path(path)
    content = convert(model, infos, layout=layout, quantize=quantize,
                      representative_data=representative_data,
                      sparse=bool(sparse), inputs=inputs,
                      any_task_score=any_task_score)
    atomic.write_bytes(path, content, suffix=os.path.splitext(path)[1])
    write_labels(path, infos)
    if any_task_key(infos, inputs, quantize) is not None:
        atomic.write_text(tasks_path(path),
                          "\n".join(info.name for info in infos) + "\n")
    return path
