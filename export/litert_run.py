#!/usr/bin/env python3
"""Runs an exported .tflite file on images or a .npy batch; prints top-k per task.

Needs only NumPy and the LiteRT interpreter (`pip install ai-edge-litert`),
plus Pillow for image files: no TensorFlow, Keras or packnet_tf, so it runs
on the device itself.

    python litert_run.py cars.tflite photo1.jpg photo2.png
    python litert_run.py all_tasks.tflite batch.npy --task cars --top-k 3
    python litert_run.py all_tasks.tflite batch.npy --labels labels.json

A file exported by `packnet_tf.export.tflite` has one signature per task and
all of them run unless `--task` picks some:

- `task_<name>` reads a float batch `inputs` of trunk-ready values: images
  are resized to the model's input size and scaled by `--scale` (default
  1/255, pixels in [0, 1]);
- `task_<name>_pixels` (`inputs="pixels"` exports) reads uint8 `pixels`:
  images are only resized to the model's input size, and their raw pixels
  go in; the preprocessing is inside the file. An int8 file's int8
  outputs are dequantized with their scale and zero point.

Image files are read with Pillow after their header says how large they
are: a file that cannot be read, or that declares more than
`--max-image-pixels` (default 16 megapixels, as the SavedModel exports),
is named and refused before anything is decoded (an animated GIF gives its
first frame).

A file of several tasks (not int8) also has `any_task` (or
`any_task_pixels`): `--task auto` runs it, and every task answers while the
most confident one is printed, named from `<file>.tasks.txt`.

Each returns `outputs` (logits, for the default heads). Class names come
from `<task>.labels.txt` beside the model (written by the exporter), or
from `--labels`, a JSON file `{"<task>": ["class 0", "class 1", ...]}`.
"""

import argparse
import json
import os
import sys

import numpy as np

SIGNATURE_PREFIX = "task_"
#: The signature that chooses the task (multi-task files), and `--task`'s
#: value that runs it; the task names are in `<file>` + TASKS_SUFFIX.
AUTO_SIGNATURE = "any_task"
AUTO = "auto"
TASKS_SUFFIX = ".tasks.txt"
#: Suffix of the signatures that read uint8 pixels.
PIXELS_SUFFIX = "_pixels"
#: The input of those signatures (float signatures read `inputs`).
PIXELS_INPUT = "pixels"
#: The labels file the exporter writes beside a model, per task.
LABELS_SUFFIX = ".labels.txt"
#: Default `--max-image-pixels`: packnet_tf.data.ImageLimits' (this file
#: runs without packnet_tf; tests/test_export_recipes.py pins them equal).
MAX_IMAGE_PIXELS = 16_000_000


def load_interpreter(path, num_threads=None, xnnpack=True):
    """A LiteRT interpreter for `path`, with tensors allocated.

    Sparse files (`sparse=True` exports) fail to prepare under the default
    XNNPACK delegate; they are retried without it.

    Args:
        path: the .tflite file.
        num_threads: CPU threads (default: the interpreter's).
        xnnpack: try the default XNNPACK delegate first.

    Returns:
        An `ai_edge_litert.interpreter.Interpreter`.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolvers = [OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES]
    if xnnpack:
        resolvers.insert(0, OpResolverType.AUTO)
    for index, resolver in enumerate(resolvers):
        interpreter = Interpreter(
            model_path=path, num_threads=num_threads,
            experimental_op_resolver_type=resolver)
        try:
            for key in interpreter.get_signature_list():
                interpreter.get_signature_runner(key)
            interpreter.allocate_tensors()
            return interpreter
        except (RuntimeError, ValueError):
            if index == len(resolvers) - 1:
                raise
    raise AssertionError("unreachable")


def input_details(interpreter, key):
    """`(shape, dtype)` of signature `key`'s one input."""
    details = interpreter.get_signature_runner(key).get_input_details()
    (detail,) = details.values()
    return tuple(detail["shape_signature"]), detail["dtype"]


def task_of(key, input_name):
    """The task a signature key belongs to.

    Args:
        key: the signature key, `task_<name>` or `task_<name>_pixels`.
        input_name: the signature's one input: only a pixels signature's
            (`PIXELS_INPUT`) drops the suffix, so a float task that is
            itself named `x_pixels` keeps its name.

    Returns:
        The task's name.
    """
    name = key.removeprefix(SIGNATURE_PREFIX)
    if input_name == PIXELS_INPUT:
        return name.removesuffix(PIXELS_SUFFIX)
    return name


def input_name(interpreter, key):
    """The name of signature `key`'s one input."""
    (name,) = interpreter.get_signature_runner(key).get_input_details()
    return name


def read_labels(model_path, tasks, labels_json=None):
    """`{task: class names}` from `--labels` or the files beside the model."""
    labels = {}
    folder = os.path.dirname(os.path.abspath(model_path))
    for task in tasks:
        path = os.path.join(folder, task + LABELS_SUFFIX)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as file:
                labels[task] = file.read().splitlines()
    if labels_json:
        with open(labels_json) as file:
            labels.update(json.load(file))
    return labels


def _axis_weights(size_in, size_out):
    """Source rows (low, high) and weights of TF's half-pixel bilinear."""
    source = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
    low = np.floor(source)
    weight = (source - low).astype(np.float32)
    high = np.minimum(np.ceil(source), size_in - 1).astype(int)
    return np.maximum(low, 0).astype(int), high, weight


def resize_bilinear(pixels, height, width):
    """Resizes `[h, w, c]` pixels as `tf.image.resize(..., "bilinear")`.

    The training pipeline resizes with TensorFlow's bilinear method (half-
    pixel centres, no antialiasing); Pillow's BILINEAR smooths when it
    shrinks and gives other pixels. This is TF's method in NumPy.

    Returns:
        float32 `[height, width, c]`.
    """
    pixels = np.asarray(pixels, dtype=np.float32)
    top, bottom, dy = _axis_weights(pixels.shape[0], height)
    left, right, dx = _axis_weights(pixels.shape[1], width)
    rows = (pixels[top] * (1 - dy)[:, None, None]
            + pixels[bottom] * dy[:, None, None])
    return (rows[:, left] * (1 - dx)[None, :, None]
            + rows[:, right] * dx[None, :, None])


def open_image(path, max_pixels):
    """Opens an image file (its header only: Pillow decodes lazily).

    Raises:
        SystemExit: naming the file, if it is not a readable image or it
            declares more than `max_pixels` pixels.
    """
    from PIL import Image, UnidentifiedImageError

    # This check replaces Pillow's own bomb guard (89 megapixels, an error
    # only past twice that), so that the message names the file's size.
    guard, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        image = Image.open(path)
    except (OSError, UnidentifiedImageError, SyntaxError,
            ValueError) as error:
        raise SystemExit(f"{path}: not a readable image file ({error}). "
                         "Replace it or leave it out.") from None
    finally:
        Image.MAX_IMAGE_PIXELS = guard
    if image.width * image.height > max_pixels:
        image.close()
        raise SystemExit(
            f"{path}: declares {image.width} x {image.height} pixels; "
            f"expected at most {max_pixels:,} (--max-image-pixels). Send it "
            "smaller, or raise --max-image-pixels.")
    return image


def read_images(paths, height, width, channels, scale,
                max_pixels=MAX_IMAGE_PIXELS):
    """Decodes, resizes and scales image files into a float batch.

    With `scale=None` the resized pixels are returned as uint8, unscaled
    (for `_pixels` signatures). Each file's size is read from its header
    first (`open_image`).
    """
    try:
        from PIL import Image
    except ImportError as error:
        raise SystemExit(
            "Reading image files needs Pillow: pip install pillow "
            "(or pass a .npy batch).") from error
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels)
    if mode is None:
        raise SystemExit(
            f"The model reads {channels} channels per pixel; images give 1, "
            "3 or 4. Pass a .npy batch instead.")
    batch = []
    for path in paths:
        with open_image(path, max_pixels) as image:
            try:
                pixels = np.asarray(image.convert(mode), dtype=np.uint8)
            except (OSError, ValueError, SyntaxError) as error:
                raise SystemExit(f"{path}: cannot be decoded ({error}). "
                                 "Replace it or leave it out.") from None
        pixels = pixels.reshape(pixels.shape[:2] + (channels,))
        if pixels.shape[:2] != (height, width):
            pixels = resize_bilinear(pixels, height, width)
            if scale is None:  # a uint8 input: the nearest whole values
                pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
        if scale is not None:
            pixels = pixels.astype(np.float32) * scale
        batch.append(pixels.reshape(height, width, channels))
    return np.stack(batch)


def read_inputs(paths, shape, dtype, scale, max_pixels=MAX_IMAGE_PIXELS):
    """The batch to run and a name per example.

    Args:
        paths: one .npy file, or image files.
        shape: the model's input shape (batch first, -1 if dynamic).
        dtype: the model's input dtype.
        scale: factor applied to image pixels (ignored for uint8 inputs,
            which get the raw pixels).
        max_pixels: the most pixels an image file may declare.

    Returns:
        `(batch, names)`.
    """
    if len(paths) == 1 and paths[0].endswith(".npy"):
        batch = np.load(paths[0])
        if batch.ndim == len(shape) - 1:
            batch = batch[None]
        names = [f"{os.path.basename(paths[0])}[{i}]"
                 for i in range(len(batch))]
    else:
        if len(shape) != 4:
            raise SystemExit(
                f"The model reads inputs of shape {shape}, not images; pass "
                "a .npy batch.")
        raw = np.dtype(dtype) == np.uint8
        batch = read_images(paths, shape[1], shape[2], shape[3],
                            None if raw else scale, max_pixels)
        names = [os.path.basename(p) for p in paths]
    if tuple(batch.shape[1:]) != tuple(shape[1:]) or not len(batch):
        raise SystemExit(
            f"Expected inputs of shape (batch,) + {tuple(shape[1:])} with "
            f"batch >= 1. Received: {batch.shape}")
    if np.dtype(dtype) == np.uint8 and batch.dtype != np.uint8 and (
            not np.issubdtype(batch.dtype, np.integer)
            or batch.min() < 0 or batch.max() > 255):
        raise SystemExit(
            "This signature reads raw uint8 pixels (0-255); the .npy "
            f"batch holds {batch.dtype} values in [{batch.min()}, "
            f"{batch.max()}]. Save the pixels as uint8.")
    return batch.astype(dtype), names


def softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def top_k(interpreter, key, batch, k):
    """Runs signature `key`; returns `[(class ids, outputs, probs)]` per example."""
    runner = interpreter.get_signature_runner(key)
    (name,) = runner.get_input_details()
    (detail,) = runner.get_output_details().values()
    (output,) = runner(**{name: batch}).values()
    output = output.reshape(len(batch), -1)
    if np.issubdtype(output.dtype, np.integer):
        scale, zero_point = detail["quantization"]
        output = (output.astype(np.float32) - zero_point) * scale
    probs = softmax(output.astype(np.float64))
    order = np.argsort(-output, axis=-1, kind="stable")[:, :k]
    return [(order[i], output[i], probs[i]) for i in range(len(batch))]


def run_any_task(interpreter, signatures, args):
    """`--task auto`: every task answers, the most confident one is shown.

    Prints `task<TAB>input<TAB>class (p=score) ...` per input; the task
    names come from `<file>.tasks.txt` (the signature's `task_index`
    order), the class names from each task's labels file.
    """
    key = next((k for k in (AUTO_SIGNATURE, AUTO_SIGNATURE + PIXELS_SUFFIX)
                if k in signatures), None)
    if key is None:
        raise SystemExit(
            f"--task auto needs an any_task signature; {args.model} has "
            f"{sorted(signatures)}. Export two or more tasks into one file "
            "(not int8).")
    tasks_file = os.path.splitext(os.path.abspath(args.model))[0] + (
        TASKS_SUFFIX)
    if not os.path.isfile(tasks_file):
        raise SystemExit(f"--task auto reads the task names from "
                         f"{tasks_file}, written beside the file by the "
                         "export; it is missing.")
    with open(tasks_file, encoding="utf-8") as file:
        names = file.read().splitlines()
    labels = read_labels(args.model, names, args.labels)
    shape, dtype = input_details(interpreter, key)
    batch, inputs = read_inputs(args.inputs, shape, dtype, args.scale,
                                args.max_image_pixels)
    runner = interpreter.get_signature_runner(key)
    (feed,) = runner.get_input_details()
    out = runner(**{feed: batch})
    for i, name in enumerate(inputs):
        task = names[int(out["task_index"][i])]
        picks = "  ".join(
            f"{labels[task][c] if task in labels else c} "
            f"(p={s:.3f})"
            for c, s in zip(out["class_ids"][i][:args.top_k],
                            out["scores"][i][:args.top_k]) if c >= 0)
        print(f"{task}\t{name}\t{picks}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="the exported .tflite file")
    parser.add_argument("inputs", nargs="+",
                        help="image files, or one .npy batch")
    parser.add_argument("--task", action="append",
                        help="task to run (repeatable); default all; auto: "
                        "the file's any_task signature chooses the task")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--labels", help='JSON {"task": ["class", ...]}')
    parser.add_argument("--scale", type=float, default=1 / 255,
                        help="factor for image pixels (default 1/255)")
    parser.add_argument("--max-image-pixels", type=int,
                        default=MAX_IMAGE_PIXELS, metavar="N",
                        help="refuse image files that declare more pixels "
                        "(default %(default)s)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-xnnpack", action="store_true",
                        help="run without the default XNNPACK delegate")
    args = parser.parse_args(argv)

    interpreter = load_interpreter(args.model, args.threads,
                                   xnnpack=not args.no_xnnpack)
    signatures = interpreter.get_signature_list()
    keys = sorted(k for k in signatures if k.startswith(SIGNATURE_PREFIX))
    tasks = {task_of(k, input_name(interpreter, k)): k for k in keys}
    if args.task == [AUTO]:
        return run_any_task(interpreter, signatures, args)
    chosen = args.task or list(tasks)
    unknown = [t for t in chosen if t not in tasks]
    if unknown:
        raise SystemExit(
            f"Unknown task(s) {unknown}; this file holds {list(tasks)}.")
    labels = read_labels(args.model, chosen, args.labels)
    shape, dtype = input_details(interpreter, tasks[chosen[0]])
    batch, names = read_inputs(args.inputs, shape, dtype, args.scale,
                               args.max_image_pixels)
    for task in chosen:
        names_of = labels.get(task)
        for name, (ids, output, probs) in zip(
                names, top_k(interpreter, tasks[task], batch, args.top_k)):
            picks = "  ".join(
                f"{names_of[i] if names_of else i} "
                f"(logit {output[i]:.4f}, p={probs[i]:.3f})" for i in ids)
            print(f"{task}\t{name}\t{picks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
