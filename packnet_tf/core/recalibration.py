"""Batch-norm statistics that describe the network a task ends with.

A `TaskBatchNormalization` layer keeps its task's moving mean and variance
as an exponential average over training steps (momentum 0.99). After
pruning those averages describe the network before it was pruned, and a
short fine-tuning at momentum 0.99 does not catch up: inference then
normalizes with another network's statistics. On an ImageNet MobileNet
pruned by half and fine-tuned one epoch, inference-mode test accuracy fell
to chance (0.117 on 10 classes) while the same weights scored 0.744 with
batch statistics (issue 29).

`recalibrate` recomputes the active task's statistics as population
statistics of the network as it is now: one pass over the data in which
every `TaskBatchNormalization` of the trunk normalizes with its batch's own
statistics (as in training; dropout and other layers run in inference
mode) and records them; per layer, the batches' means and variances are
pooled exactly (the mean and biased variance over every example, between-
batch spread included) in float64. This is the batch-norm paper's
inference step (Ioffe & Szegedy 2015, algorithm 2) without its exponential
average. With the data as one batch the stored statistics are exactly the
statistics of each layer's inputs, and inference-mode outputs equal
batch-statistics outputs.

Only the active task's slot changes; earlier tasks' statistics are never
read or written.
"""

import contextlib

import numpy as np
import tensorflow as tf

from packnet_tf.core.trunk import packed_layers
from packnet_tf.layers.batch_norm import TaskBatchNormalization

#: The seed of the order arrays are read in (`population_statistics`).
SHUFFLE_SEED = 0

__all__ = ["batch_norm_layers", "batch_statistics", "population_statistics",
           "recalibrate"]


def batch_norm_layers(model):
    """The `TaskBatchNormalization` layers of a `PackNetModel`'s trunk.

    Args:
        model: a `PackNetModel`.

    Returns:
        A list of layers, in the trunk's order.
    """
    return [layer for layer in packed_layers(model.trunk)
            if isinstance(layer, TaskBatchNormalization)]


@contextlib.contextmanager
def batch_statistics(layers):
    """`layers` normalize with batch statistics and record them, updating
    nothing, while this is open (each layer's `collected`: the batch's
    `(mean, variance, count)`).

    Args:
        layers: `TaskBatchNormalization` layers.

    Yields:
        None.
    """
    for layer in layers:
        layer._collecting = True
    try:
        yield
    finally:
        for layer in layers:
            layer._collecting = False
            layer.collected = None


def _inputs_of(element):
    """The `x` of a dataset element: `x`, `(x,)`, `(x, y)` or `(x, y, w)`."""
    if isinstance(element, (tuple, list)):
        return element[0]
    return element


def check_steps(steps, name="steps"):
    """Returns `steps` (None, or an int >= 1) as an int or None.

    Args:
        steps: None for every batch, or a number of batches.
        name: the argument's name, for the message.

    Raises:
        ValueError: for anything else.
    """
    if steps is not None and (isinstance(steps, bool)
                              or not isinstance(steps, (int, np.integer))
                              or steps < 1):
        raise ValueError(
            f"Expected `{name}` to be None (every batch of the data) or an "
            f"int >= 1 (that many batches). Received: {name}={steps!r}")
    return None if steps is None else int(steps)


def array_batches(x, batch_size=None, shuffle=True):
    """Batches of the array `x` as `recalibrate` reads them.

    Args:
        x: an array of inputs.
        batch_size: examples per batch (default 32, as Keras' `fit`).
        shuffle: a fixed shuffled order (seed `SHUFFLE_SEED`), as `fit`
            shuffles arrays, or the order of `x`.

    Returns:
        A `tf.data.Dataset` of input batches.

    Raises:
        ValueError: for a batch size below 1.
    """
    size = 32 if batch_size is None else int(batch_size)
    if size < 1:
        raise ValueError(
            f"Expected `batch_size` >= 1. Received: batch_size={batch_size!r}")
    count = int(x.shape[0])
    order = (np.random.default_rng(SHUFFLE_SEED).permutation(count)
             if shuffle else np.arange(count))
    return tf.data.Dataset.from_tensor_slices(tf.gather(x, order)).batch(size)


def _batches(data, batch_size, shuffle):
    """Yields input batches of `data` (see `population_statistics`)."""
    if isinstance(data, tf.data.Dataset):
        for element in data:
            yield _inputs_of(element)
        return
    if isinstance(data, (tuple, list)):
        if not data:
            raise ValueError("Expected data for `recalibrate_batch_norm`: "
                             "an array, `(x, y)` or a tf.data.Dataset. "
                             "Received an empty tuple.")
        data = data[0]
    if isinstance(data, dict) or not hasattr(data, "shape"):
        raise TypeError(
            "Expected `data` to be a tf.data.Dataset of batches (`x` or "
            "`(x, y)`), an array of inputs or an `(x, y)` tuple of arrays. "
            f"Received: {type(data).__name__}")
    yield from array_batches(data, batch_size, shuffle)


def population_statistics(model, data, steps=None, batch_size=None,
                          shuffle=True):
    """The active task's population statistics for every batch-norm layer.

    Args:
        model: a `PackNetModel` with an active task.
        data: a `tf.data.Dataset` of batches (`x`, `(x, y)` or
            `(x, y, sample_weight)`; labels are ignored), an array of
            inputs, or an `(x, y)` tuple of arrays.
        steps: None for every batch, or at most this many batches.
        batch_size: the batch size for array data (default 32, as Keras'
            `fit`); a dataset keeps its own batches.
        shuffle: whether array data is read in a shuffled order (the same
            every call: seed `SHUFFLE_SEED`), as `fit` shuffles arrays:
            arrays stored class by class would otherwise give batches of
            one class, and deep layers' statistics of inputs normalized
            with one class's statistics. A dataset is read as it is
            batched: shuffle it before batching.

    Returns:
        `(statistics, examples)`: a list with one `(mean, variance)` pair of
        float64 arrays per layer of `batch_norm_layers(model)`, and the
        number of examples read.

    Raises:
        ValueError: if `data` holds no example or `steps` is bad.
        TypeError: if `data` is of an unsupported type.
    """
    steps = check_steps(steps)
    layers = batch_norm_layers(model)
    trunk = model.trunk

    @tf.function(reduce_retracing=True)
    def moments(x):
        with batch_statistics(layers):
            trunk(x, training=False)
            return [layer.collected for layer in layers]

    pooled = [None] * len(layers)
    examples = 0
    for step, x in enumerate(_batches(data, batch_size, shuffle)):
        if steps is not None and step >= steps:
            break
        if int(tf.shape(x)[0]) == 0:
            continue
        examples += int(tf.shape(x)[0])
        for index, (mean, variance, count) in enumerate(moments(x)):
            pooled[index] = _pool(pooled[index], np.float64(mean),
                                  np.float64(variance), int(count))
    if examples == 0:
        raise ValueError(
            "`recalibrate_batch_norm` received data without any example: "
            "pass the task's training data (a non-empty dataset or array).")
    return [(mean, m2 / count) for count, mean, m2 in pooled], examples


def _pool(total, mean, variance, count):
    """Adds one batch's moments to `(count, mean, sum of squared
    deviations)`, exactly (Chan et al.'s pairwise update)."""
    if total is None:
        return count, mean, variance * count
    seen, seen_mean, seen_m2 = total
    both = seen + count
    delta = mean - seen_mean
    return (both, seen_mean + delta * (count / both),
            seen_m2 + variance * count + delta ** 2 * (seen * count / both))


def recalibrate(model, task_id, data, steps=None, batch_size=None,
                shuffle=True):
    """Sets the active task's moving statistics to population statistics.

    See the module docstring; `PackNetModel.recalibrate_batch_norm` is the
    public entry point.

    Args:
        model: a `PackNetModel` with an active task.
        task_id: the active task's owner id (its slot is written).
        data, steps, batch_size, shuffle: as in `population_statistics`.

    Returns:
        The number of examples read (0 when the trunk has no
        `TaskBatchNormalization`, and nothing is read).
    """
    layers = batch_norm_layers(model)
    if not layers:
        check_steps(steps)
        return 0
    statistics, examples = population_statistics(model, data, steps,
                                                 batch_size, shuffle)
    for layer, (mean, variance) in zip(layers, statistics):
        layer.set_task_statistics(task_id, mean, variance)
    return examples
