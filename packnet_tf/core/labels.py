"""Checks that training labels fit a task's head before `fit` starts."""

import numpy as np
import tensorflow as tf


def _labels_error(task_name, num_classes, received, fix):
    return ValueError(
        f"Labels do not fit task {task_name!r}, whose head outputs "
        f"{num_classes} classes. Received: {received}. {fix}"
    )


def check_labels(x, y, num_classes, task_name):
    """Raises if labels cannot be scored against a head of `num_classes`.

    Integer class labels must lie in [0, num_classes); one-hot labels must be
    `num_classes` wide. Arrays are checked fully; for a `tf.data.Dataset` the
    label shape in its `element_spec` is checked. Anything else (dicts,
    generators, regression targets) passes unchecked.

    Args:
        x: the `x` given to `fit` (possibly a dataset that yields `y`).
        y: the `y` given to `fit`, or None.
        num_classes: the head's output width.
        task_name: the task, for the message.

    Raises:
        ValueError: if the labels do not fit.
    """
    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        if isinstance(spec, tuple) and len(spec) >= 2:
            shape = getattr(spec[1], "shape", None)
            if shape is not None and shape.rank and shape.rank >= 2:
                width = shape[-1]
                if width not in (None, 1, num_classes):
                    raise _labels_error(
                        task_name, num_classes,
                        f"one-hot labels of width {width}",
                        "Give the task a head of that width.",
                    )
        return
    if y is None or not (isinstance(y, (np.ndarray, list)) or tf.is_tensor(y)):
        return
    labels = np.asarray(y)
    if labels.ndim >= 2 and labels.shape[-1] > 1:
        if labels.shape[-1] != num_classes:
            raise _labels_error(
                task_name, num_classes,
                f"one-hot labels of shape {labels.shape}",
                "Give the task a head of that width.",
            )
        return
    if labels.size == 0 or not np.issubdtype(labels.dtype, np.number):
        return
    if not np.all(np.equal(np.mod(labels, 1), 0)):
        return
    low, high = labels.min(), labels.max()
    if low < 0 or high >= num_classes:
        raise _labels_error(
            task_name, num_classes,
            f"class labels from {low:g} to {high:g}",
            f"Use labels in [0, {num_classes}) or add the task with "
            f"num_classes={int(high) + 1}.",
        )
