"""How typical an input's activation statistics are for a task.

A head's confidence says little about whether an input belongs to its task:
a head trained on digits can be sure of itself on a photo. What differs
between data sets is lower down: the statistics of the activations the
task's early layers produce. Each task's own subnetwork (its mask, its
batch-norm statistics) sees its own data set with channel means and spreads
of a typical shape, and other data sets with different ones.

For one example, the statistics are, for each of the trunk's first
`DENSITY_LAYERS` packed kernel layers (in the trunk's order), every
channel's mean and log standard deviation over the spatial positions of
the layer's output (a `[batch, features]` output gives its values). When a
task ends (`task_inference.calibrate`) a Gaussian is fitted to them on the
task's training inputs: their mean and a precision matrix (the inverse of
their covariance, shrunk towards its average variance by `SHRINKAGE` so
that a few thousand examples estimate it stably). An input's score under
the task is `exp(-d^2 / (2 D))`, with `d` its Mahalanobis distance from the
mean and `D` the number of statistics: in (0, 1], 1 at the mean, about 0.6
for a typical input of the task, near 0 for another data set's.

This is the Mahalanobis detector of Lee et al. (NeurIPS 2018) on the
activation statistics batch norm normalizes (as in the test-time
adaptation literature), one Gaussian per task. The layer count and the
shrinkage were chosen on held-out training examples of five-datasets-32
(`benchmarks/task_inference.py`), never on test data.
"""

import keras
import numpy as np
import tensorflow as tf

from packnet_tf.layers.base import PackedKernelLayer

#: How many of the trunk's packed kernel layers (the first ones) give
#: statistics.
DENSITY_LAYERS = 4

#: The covariance is shrunk towards `mean variance * identity` by this share.
SHRINKAGE = 0.01

#: Added to a channel's variance before its logarithm.
EPSILON = 1e-3


def statistic_layers(trunk, count=DENSITY_LAYERS):
    """The trunk layers whose outputs give the statistics.

    Args:
        trunk: the model's trunk (a functional or Sequential model).
        count: how many packed kernel layers, from the first.

    Returns:
        A list of up to `count` layers of `trunk.layers`.

    Raises:
        ValueError: if the trunk has no packed kernel layer at its top
            level.
    """
    layers = [layer for layer in trunk.layers
              if isinstance(layer, PackedKernelLayer)][:count]
    if not layers:
        raise ValueError(
            "score='statistics' reads the outputs of the trunk's packed "
            "kernel layers; this trunk has none at its top level (a nested "
            f"model?): {[layer.name for layer in trunk.layers]}. Use "
            "score='entropy'.")
    return layers


def statistics_model(trunk, layer_names):
    """A model from the trunk's input to its named layers' outputs and its
    own output (the features the heads read).

    Args:
        trunk: the model's trunk.
        layer_names: names of trunk layers (a density's `layers`).

    Returns:
        A `keras.Model` sharing the trunk's layers (and so its masks and
        active task): outputs `[statistics layer outputs..., features]`.
    """
    by_name = {layer.name: layer for layer in trunk.layers}
    return keras.Model(
        trunk.inputs[0],
        [by_name[name].output for name in layer_names] + list(trunk.outputs))


def example_statistics(outputs):
    """Per-example statistics of layer outputs (traceable).

    Args:
        outputs: the statistics layers' outputs, each `[N, ..., C]`.

    Returns:
        A float32 tensor `[N, D]`: per layer, every channel's mean over
        the spatial axes and `0.5 * log(variance + EPSILON)`; a `[N, C]`
        output gives its values.
    """
    parts = []
    for out in outputs:
        out = tf.cast(out, tf.float32)
        rank = out.shape.rank
        if rank == 2:
            parts.append(out)
            continue
        mean, variance = tf.nn.moments(out, axes=list(range(1, rank - 1)))
        parts += [mean, 0.5 * tf.math.log(variance + EPSILON)]
    return tf.concat(parts, axis=1)


def fit(statistics, layer_names, shrinkage=SHRINKAGE):
    """The Gaussian of a task's statistics (pure NumPy).

    Args:
        statistics: `[N, D]` per-example statistics on the task's own
            training inputs (N >= 2).
        layer_names: the layers they came from.
        shrinkage: the share of the covariance replaced by its mean
            variance times the identity, in [0, 1].

    Returns:
        `{"layers", "mean", "precision"}` (what `PackNetModel.
        set_input_density` records).

    Raises:
        ValueError: for fewer than 2 examples or non-finite statistics.
    """
    x = np.asarray(statistics, np.float64)
    if x.ndim != 2 or len(x) < 2 or not np.all(np.isfinite(x)):
        raise ValueError(
            "Expected at least 2 examples of finite statistics to fit a "
            f"task's input density. Received shape {x.shape}"
            f"{'' if np.all(np.isfinite(x)) else ' with non-finite values'}.")
    mean = x.mean(axis=0)
    covariance = np.atleast_2d(np.cov(x, rowvar=False))
    average = max(float(np.trace(covariance)) / len(covariance), 1e-12)
    covariance = ((1.0 - shrinkage) * covariance
                  + shrinkage * average * np.eye(len(covariance)))
    precision = np.linalg.inv(covariance)
    precision = 0.5 * (precision + precision.T)
    return {"layers": list(layer_names),
            "mean": mean.astype(np.float32).tolist(),
            "precision": precision.astype(np.float32).tolist()}


def check_densities(candidates):
    """Checks that tasks can be compared by `score="statistics"`.

    Args:
        candidates: the tasks' `TaskInfo`s.

    Raises:
        ValueError: if a task has no input density, or the densities read
            different layers.
    """
    missing = [t.name for t in candidates if not t.input_density]
    if missing:
        raise ValueError(
            f"score='statistics' reads each task's input density; tasks "
            f"{missing} have none (trained before it was recorded). "
            "Record it from each task's training inputs: "
            "packnet_tf.inference.task_inference.calibrate(model, task, x).")
    layers = {tuple(t.input_density["layers"]) for t in candidates}
    if len(layers) > 1:
        raise ValueError(
            "score='statistics' compares tasks on the same layers' "
            "statistics; the candidates' densities read different layers "
            f"({ {t.name: t.input_density['layers'] for t in candidates} }). "
            "Calibrate them with one `density_layers`.")


def density_scores(statistics, density):
    """Each example's score under one task's density (traceable).

    Args:
        statistics: `[N, D]` from `example_statistics`.
        density: the task's recorded density, or a mapping of its `mean`
            and `precision` as tensors or variables (an export stores each
            once as a variable instead of as a constant per signature).

    Returns:
        `[N]` float32 in (0, 1]: `exp(-d^2 / (2 D))`.
    """
    mean = tf.convert_to_tensor(density["mean"], tf.float32)
    precision = tf.convert_to_tensor(density["precision"], tf.float32)
    z = tf.cast(statistics, tf.float32) - mean
    squared = tf.reduce_sum(tf.matmul(z, precision) * z, axis=-1)
    dims = float(mean.shape[-1])
    return tf.exp(-0.5 * tf.maximum(squared, 0.0) / dims)


def task_statistics(model, layer_names, x, batch_size):
    """Per-example statistics of `x` under the model's active task.

    Args:
        model: a `PackNetModel` (its active task's masks and statistics
            are used).
        layer_names: the statistics layers.
        x: an array of trunk-ready inputs.
        batch_size: examples per traced call.

    Returns:
        A float32 array `[N, D]`.
    """
    extract = statistics_model(model.trunk, layer_names)
    # Eager: a few batches per task, not worth a trace per call.
    return np.concatenate([
        example_statistics(extract(x[start:start + batch_size],
                                   training=False)[:-1]).numpy()
        for start in range(0, len(x), batch_size)])
