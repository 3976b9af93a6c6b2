"""From tasks to TFLite bytes: the modules, their signatures, the converter.

A one-task file is the task's plain network (masks baked in, batch norm
folded), converted by TensorFlow's own TFLite converter.

A file with several tasks holds one signature per task. The converter folds
every computation on constants, so the naive layout (each signature masking
the shared kernels) stores one masked copy of the kernels per task. The
layouts measured (benchmarks/export_benchmark.py):

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
quantize, so they always use "stacked".

Inputs (`inputs=`): "float" signatures `task_<name>` read the trunk-ready
float batch `inputs`; "pixels" signatures `task_<name>_pixels` read uint8
pixels `pixels` at the trunk's size and apply the task's preprocessing
inside the file. A file of several tasks also answers without a task id:
`any_task` (float inputs, when the tasks share a preprocessing) or
`any_task_pixels` returns `task_index` (the chosen task's position in the
file's `<file>.tasks.txt`), the top-k `class_ids` and `scores` within it
and every task's `task_scores` (`packnet_tf.export.any_task`; not in int8
files), choosing by `any_task_score` ("statistics" reads the early layers'
activations under each task's mask, so it needs a "shared" file). With
"int8" quantization a pixel file is integer-only:
the float pixel input passes a fake-quant node over [0, 255], which gives
the uint8 input the quantization (scale 1, zero point 0), so the app feeds
raw pixels; the output is int8 logits (scale and zero point in the output
details). Every signature returns `{"outputs": <head output>}`.
"""

import tempfile
import warnings

import numpy as np
import tensorflow as tf

from packnet_tf.export import checks
from packnet_tf.export.any_task import (ANY_TASK, ANY_TASK_PIXELS, SCORE,
                                        check_score, choose_numbers)
from packnet_tf.export.modules import SharedTasksModule, TaskModule
from packnet_tf.export.signatures import (INPUT_NAME, OUTPUT_NAME, PIXELS_NAME,
                                          image_shape, pixels_key)

#: `quantize` values: float32, dynamic-range int8 weights, float16 weights,
#: full int8 (weights and activations, calibrated on representative data).
QUANTIZE_MODES = (None, "dynamic", "float16", "int8")
#: Multi-task file layouts (see the module docstring).
LAYOUTS = ("shared", "stacked")
#: `inputs` values: trunk-ready floats, or uint8 pixels at the trunk's size.
INPUTS = ("float", "pixels")
#: The range of pixel values, for the int8 pixel input's quantization.
PIXEL_RANGE = (0.0, 255.0)


def default_layout(quantize):
    """The multi-task layout `tflite(tasks=...)` uses for `quantize`."""
    return "shared" if quantize in (None, "float16") else "stacked"


def signature_key(task, inputs):
    """A task's signature key in a file with `inputs`."""
    if inputs == "pixels":
        return pixels_key(task)
    return checks.signature_name(task)


def check_pixel_inputs(model, infos):
    """Raises unless every task can take pixels: an image trunk, a contract.

    Raises:
        ValueError: naming the task and the fix.
    """
    shape = image_shape(model.trunk.inputs[0].shape[1:])
    if shape is None:
        raise ValueError(
            "inputs='pixels' needs an image trunk (input height, width, "
            "channels). Received: input shape "
            f"{tuple(model.trunk.inputs[0].shape[1:])}. Use inputs='float'.")
    missing = [t.name for t in infos if t.input_contract is None]
    if missing:
        raise ValueError(
            f"inputs='pixels' needs each task's input contract (how its "
            f"pixels were preprocessed); task(s) {missing} have none (trunk-"
            "ready floats). Record one with `model.set_input_contract(task, "
            "InputContract(...))`, or use inputs='float'.")
    floats = [t.name for t in infos if not t.input_contract.pixels]
    if floats:
        raise ValueError(
            f"inputs='pixels': task(s) {floats} were trained on float "
            "inputs that are not 0-255 pixels (their contract says "
            "pixels=False); raw pixels would be read as values the trunk "
            "never saw. Use inputs='float'.")
    return shape


class _LiteModule(tf.Module):
    """The module(s) of a file and the signature functions converted."""

    def __init__(self, modules, functions):
        super().__init__(name="lite")
        self.modules = modules
        self.functions = functions

    def signatures(self):
        return {key: function.get_concrete_function()
                for key, function in self.functions.items()}


def _function(forward, spec, info, inputs, quantize):
    """One signature: a batch (float or pixels) -> `{"outputs": ...}`."""
    if inputs == "float":
        @tf.function(input_signature=[spec])
        def from_inputs(inputs):
            return {OUTPUT_NAME: forward(inputs)}

        return from_inputs
    preprocess = info.input_contract.preprocess_function()
    shape = tuple(spec.shape)
    if quantize == "int8":
        @tf.function(input_signature=[tf.TensorSpec(
            shape, tf.float32, name=PIXELS_NAME)])
        def from_quantized_pixels(pixels):
            # Fixes the input's quantization to the pixel values themselves.
            pixels = tf.quantization.fake_quant_with_min_max_args(
                pixels, min=PIXEL_RANGE[0], max=PIXEL_RANGE[1], num_bits=8)
            return {OUTPUT_NAME: forward(preprocess(pixels))}

        return from_quantized_pixels

    @tf.function(input_signature=[tf.TensorSpec(
        shape, tf.uint8, name=PIXELS_NAME)])
    def from_pixels(pixels):
        return {OUTPUT_NAME: forward(preprocess(tf.cast(pixels, tf.float32)))}

    return from_pixels


def check_any_task_score(score, infos, layout, inputs, quantize):
    """Checks a file's `any_task_score` against what the file will hold.

    Args:
        score: the rule asked for (`packnet_tf.export.any_task.SCORE_RULES`).
        infos: the file's tasks' `TaskInfo`s.
        layout: the file's layout, resolved ("shared" or "stacked").
        inputs, quantize: as in `packnet_tf.export.tflite`.

    Returns:
        `score`.

    Raises:
        ValueError: for a bad rule, "statistics" for a file without an
            `any_task` signature or with the "stacked" layout, or for a
            task without an input density.
    """
    check_score(score, infos)
    if score == SCORE:
        return score
    if any_task_key(infos, inputs, quantize) is None:
        raise ValueError(
            f"any_task_score={score!r} sets how a file's `any_task` "
            "signature chooses a task; this file has none (it needs several "
            "tasks, no int8 quantization, and for float inputs one "
            f"preprocessing). Received: {len(infos)} task(s), "
            f"quantize={quantize!r}, inputs={inputs!r}.")
    if layout == "stacked":
        raise ValueError(
            "any_task_score='statistics' reads the early layers' "
            "activations under each task's mask, before any batch norm is "
            "folded: it needs layout='shared' (float32 or float16). "
            f"Received: layout='stacked' (quantize={quantize!r}).")
    return score


def lite_module(model, infos, layout, inputs, quantize, any_task_score=SCORE):
    """The module to convert: its signatures are the file's."""
    single = len(infos) == 1
    layers = None
    if single or layout == "stacked":
        modules = [TaskModule(model, info) for info in infos]
        forwards = {m.task_name: m.forward for m in modules}
        spec = modules[0].input_spec
    else:
        shared = SharedTasksModule(model, infos, run_time_task=True,
                                   any_task_score=any_task_score)
        modules = [shared]
        forwards = {info.name: shared.forward(info.name) for info in infos}
        spec = shared.input_spec
        layers = shared.statistic_layers
    functions = {
        signature_key(info.name, inputs): _function(
            forwards[info.name], spec, info, inputs, quantize)
        for info in infos}
    key = any_task_key(infos, inputs, quantize)
    if key is not None:
        if layers is not None:
            forwards = {info.name: shared.forward(info.name, layers)
                        for info in infos}
        functions[key] = _any_task_function(
            [forwards[info.name] for info in infos], spec, infos, inputs,
            any_task_score, shared.densities if layers else None)
    return _LiteModule(modules, functions)


def any_task_key(infos, inputs, quantize):
    """The key of a file's `any_task` signature, or None for no signature.

    A file of several tasks gets one (`any_task` for float inputs when the
    tasks agree on their preprocessing, `any_task_pixels` for pixels),
    except with int8 quantization, whose int8 outputs are not
    probabilities.
    """
    if len(infos) < 2 or quantize == "int8":
        return None
    if inputs == "pixels":
        return ANY_TASK_PIXELS
    preprocessing = {info.input_contract and info.input_contract.preprocess
                     for info in infos}
    return ANY_TASK if len(preprocessing) == 1 else None


def _any_task_function(forwards, spec, infos, inputs, score=SCORE,
                       densities=None):
    """`any_task(_pixels)`: the best-scoring task's answer, in numbers
    (`task_index`, `class_ids`, `scores`, `task_scores`; see
    `packnet_tf.export.any_task.choose_numbers`)."""

    def choose(results):
        if score == "statistics":  # (layer outputs, head outputs) pairs
            return choose_numbers([out for _, out in results], infos,
                                  score, [layers for layers, _ in results],
                                  densities)
        return choose_numbers(results, infos, score)

    if inputs == "float":
        @tf.function(input_signature=[spec])
        def from_inputs(inputs):
            return choose([f(inputs) for f in forwards])

        return from_inputs

    @tf.function(input_signature=[tf.TensorSpec(
        tuple(spec.shape), tf.uint8, name=PIXELS_NAME)])
    def from_pixels(pixels):
        pixels = tf.cast(pixels, tf.float32)
        prepared = {}
        for info in infos:
            kind = info.input_contract.preprocess
            if kind not in prepared:  # each preprocessing once
                prepared[kind] = info.input_contract.preprocess_function()(
                    pixels)
        return choose([f(prepared[info.input_contract.preprocess])
                       for f, info in zip(forwards, infos)])

    return from_pixels


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


def _representative(data, infos, spec, single, inputs):
    """TF's `representative_dataset` callable for every exported task."""
    if isinstance(data, dict):
        missing = [t.name for t in infos if t.name not in data]
        if missing:
            raise ValueError(
                "`representative_data` is a dict, so it needs an entry for "
                f"every exported task. Missing: {missing}")
    name = PIXELS_NAME if inputs == "pixels" else INPUT_NAME

    def generate():
        for info in infos:
            task_data = data[info.name] if isinstance(data, dict) else data
            count = 0
            for example in _examples(task_data, spec):
                count += 1
                if single:
                    yield [example]
                else:
                    yield (signature_key(info.name, inputs),
                           {name: example})
            if not count:
                raise ValueError(
                    f"`representative_data` for task {info.name!r} is empty.")

    return generate


def convert(model, infos, layout=None, quantize=None,
            representative_data=None, sparse=False, inputs="float",
            any_task_score=SCORE):
    """Converts tasks of `model` to TFLite bytes.

    Args:
        model: a `PackNetModel`.
        infos: checked `TaskInfo`s (`checks.select_tasks`); one task gives a
            one-task file.
        layout: multi-task layout, one of `LAYOUTS`; default
            `default_layout(quantize)`.
        quantize, representative_data, sparse, inputs, any_task_score: as
            in `packnet_tf.export.tflite`.

    Returns:
        The flatbuffer bytes.

    Raises:
        ValueError: for an `any_task_score` the file cannot have
            (`check_any_task_score`).
    """
    single = len(infos) == 1
    layout = layout or default_layout(quantize)
    check_any_task_score(any_task_score, infos, layout, inputs, quantize)
    module = lite_module(model, infos, layout, inputs, quantize,
                         any_task_score)
    signatures = module.signatures()
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
            (spec,) = next(iter(module.functions.values())).input_signature
            converter.representative_dataset = _representative(
                representative_data, infos, spec, single, inputs)
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if inputs == "pixels":
                converter.inference_input_type = tf.uint8
                converter.inference_output_type = tf.int8
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
