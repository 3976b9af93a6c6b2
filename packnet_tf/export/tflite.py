"""LiteRT (TFLite) files: one task per file, or every task in one file.

A one-task file is the task's plain network (masks baked in, batch norm
folded), converted by TensorFlow's own TFLite converter; its one signature
is `task_<name>`.

A file with several tasks holds one signature `task_<name>` per task. The
converter folds every computation on constants, so the naive layout (each
signature masking the shared kernels) stores one masked copy of the
kernels per task. The layouts measured (benchmarks/export_benchmark.py):

- "stacked": each task's baked network; T copies of the weights. Every
  kernel is a constant, which is what quantization and XNNPACK need.
- "shared": one copy of the kernels plus their uint8 owner masks (about
  1.25x one network); a signature masks the kernels when it runs, with the
  task id derived from the batch size so the converter cannot fold it
  (`SharedTasksModule(run_time_task=True)`).

Float and float16 files use "shared" unless `layout="stacked"` is asked
for: "shared" is the smaller file, "stacked" the faster one (XNNPACK
cannot take kernels computed at run time; measured 6.5x one network's
latency at batch 64 for "shared" against 1.0x for "stacked"; README's
Results). Dynamic-range and int8 quantization need constant kernels to
quantize, so they always use "stacked" (a quantized copy is a quarter of a
float one: T tasks cost about T/4 float networks).
"""

import os
import tempfile
import warnings

import numpy as np
import tensorflow as tf

from packnet_tf.export import checks
from packnet_tf.export.modules import (
    INPUT_NAME,
    SharedTasksModule,
    TaskModule,
    input_spec,
)

#: `quantize` values: float32, dynamic-range int8 weights, float16 weights,
#: full int8 (weights and activations, calibrated on representative data).
QUANTIZE_MODES = (None, "dynamic", "float16", "int8")
#: Multi-task file layouts (see the module docstring).
LAYOUTS = ("shared", "stacked")
#: The first bytes of a TFLite flatbuffer carry this file identifier.
_TFLITE_ID = b"TFL3"


class _Stacked(tf.Module):
    """Several `TaskModule`s saved together (the "stacked" layout)."""

    def __init__(self, modules):
        super().__init__(name="stacked")
        self.tasks = modules

    def signatures(self):
        return {
            checks.signature_name(m.task_name): m.predict.get_concrete_function()
            for m in self.tasks}


def default_layout(quantize):
    """The multi-task layout `tflite(tasks=...)` uses for `quantize`."""
    return "shared" if quantize in (None, "float16") else "stacked"


def _examples(data, spec):
    """Yields single-example float batches `[1, ...]` from `data`."""
    rank = len(spec.shape)
    if isinstance(data, tf.data.Dataset):
        data = data.as_numpy_iterator()
    elif hasattr(data, "shape"):
        data = [data]
    for item in data:
        if isinstance(item, (tuple, list)):
            item = item[0]  # (inputs, labels)
        item = np.asarray(item, dtype=spec.dtype.as_numpy_dtype)
        if item.ndim == rank - 1:
            item = item[None]
        if item.ndim != rank or tuple(item.shape[1:]) != tuple(
                spec.shape[1:]):
            raise ValueError(
                "Expected representative inputs of shape "
                f"{tuple(spec.shape[1:])} (one example) or "
                f"(batch,) + {tuple(spec.shape[1:])}. Received: "
                f"{item.shape}")
        for example in item:
            yield example[None]


def _representative(data, infos, spec, single):
    """TF's `representative_dataset` callable for every exported task."""
    if isinstance(data, dict):
        missing = [t.name for t in infos if t.name not in data]
        if missing:
            raise ValueError(
                "`representative_data` is a dict, so it needs an entry for "
                f"every exported task. Missing: {missing}")

    def generate():
        for info in infos:
            task_data = data[info.name] if isinstance(data, dict) else data
            count = 0
            for example in _examples(task_data, spec):
                count += 1
                if single:
                    yield [example]
                else:
                    yield (checks.signature_name(info.name),
                           {INPUT_NAME: example})
            if not count:
                raise ValueError(
                    f"`representative_data` for task {info.name!r} is empty.")

    return generate


def convert(model, infos, layout=None, quantize=None,
            representative_data=None, sparse=False):
    """Converts tasks of `model` to TFLite bytes.

    Args:
        model: a `PackNetModel`.
        infos: checked `TaskInfo`s (`checks.select_tasks`); one task gives a
            one-task file.
        layout: multi-task layout, one of `LAYOUTS`; default
            `default_layout(quantize)`.
        quantize, representative_data, sparse: as in `tflite`.

    Returns:
        The flatbuffer bytes.
    """
    single = len(infos) == 1
    layout = layout or default_layout(quantize)
    if single:
        module = TaskModule(model, infos[0])
    elif layout == "shared":
        module = SharedTasksModule(model, infos, run_time_task=True)
    else:
        module = _Stacked([TaskModule(model, info) for info in infos])
    signatures = {
        key: function for key, function in module.signatures().items()
        if key != "serving_default"}
    with tempfile.TemporaryDirectory() as folder:
        tf.saved_model.save(module, folder, signatures=signatures)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            folder, signature_keys=list(signatures))
        optimizations = []
        if quantize is not None:
            optimizations.append(tf.lite.Optimize.DEFAULT)
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantize == "int8":
            converter.representative_dataset = _representative(
                representative_data, infos, input_spec(model), single)
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if sparse:
            optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
        converter.optimizations = optimizations
        with warnings.catch_warnings():
            # TF's calibrator itself builds a `tf.lite.Interpreter` for
            # multi-signature files; its deprecation warning is not the
            # caller's to act on.
            warnings.filterwarnings(
                "ignore", message=".*tf.lite.Interpreter is deprecated",
                category=UserWarning)
            return converter.convert()


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
           representative_data=None, sparse=False, layout=None):
    """Exports finished tasks to a LiteRT (TFLite) file.

    With `task`, the file holds that task's plain network (masks baked in,
    batch norm folded). With `tasks` (or neither: every finished task), the
    file holds one signature per task. Every signature is `task_<name>`,
    reads a float batch named `inputs` and returns `{"outputs": ...}`.
    The file is written to a temporary name next to `path` and renamed.

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
            file.
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

    Returns:
        The absolute path written.

    Raises:
        ValueError: for an unknown task, a bad `quantize` or `layout`,
            "int8" without `representative_data`, `layout="shared"` with
            "dynamic" or "int8", or both `task` and `tasks`.
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
    path = _check_path(path)
    content = convert(model, infos, layout=layout, quantize=quantize,
                      representative_data=representative_data,
                      sparse=bool(sparse))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    handle, staging = tempfile.mkstemp(
        prefix=checks.STAGING_PREFIX, suffix=".tflite", dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(content)
        os.replace(staging, path)
    except BaseException:
        if os.path.exists(staging):
            os.remove(staging)
        raise
    return path
