"""Pure ownership math: which weights a task sees, trains, and frees.

Every packed kernel carries an integer *owner* tensor of the kernel's shape:
0 means free, k means owned by task k (tasks are numbered from 1). The
functions here are pure: they take tensors and return new tensors, and never
touch a variable, so the layers and the model only call them.
"""

import math

import numpy as np
import tensorflow as tf

#: Owner value of a weight that belongs to no task.
FREE = 0
#: The owner tensors are uint8, so at most this many tasks fit in one network.
MAX_TASKS_LIMIT = 255
#: dtype of the owner tensors (8 bits per weight).
OWNER_DTYPE = "uint8"



def visible_mask(owner, task_id):
    """Weights that task `task_id` computes with: owned by tasks 1..task_id.

    Args:
        owner: integer tensor of owner ids.
        task_id: the task (scalar int, Python or tensor).

    Returns:
        A boolean tensor of `owner`'s shape.
    """
    owner = tf.convert_to_tensor(owner)
    # Compare in the owner's own dtype: casting the owner tensor (a full
    # pass over the kernel's size every step) cost more than the compares.
    task_id = tf.cast(task_id, owner.dtype)
    return tf.logical_and(owner > FREE, owner <= task_id)


def trainable_mask(owner, task_id):
    """Weights that task `task_id` owns and may change.

    The masked train step zeroes every other weight's gradient, so a
    step of task `task_id` moves these weights and no others.

    Args:
        owner: integer tensor of owner ids.
        task_id: the task being trained (scalar int, Python or tensor).

    Returns:
        A boolean tensor of `owner`'s shape: True where `owner == task_id`.
    """
    owner = tf.convert_to_tensor(owner)
    return tf.equal(owner, tf.cast(task_id, owner.dtype))


def zero_free(kernel, owner):
    """`kernel` with every free weight (owner `FREE`) set to 0.

    Args:
        kernel: a kernel tensor.
        owner: its owner ids.

    Returns:
        The new kernel tensor.
    """
    return tf.where(tf.equal(owner, FREE), tf.zeros_like(kernel), kernel)


def claim_free(owner, task_id):
    """Gives every free weight to `task_id`.

    Args:
        owner: integer tensor of owner ids.
        task_id: the new task.

    Returns:
        The new owner tensor, same dtype as `owner`.
    """
    return tf.where(
        tf.equal(owner, FREE), tf.cast(task_id, owner.dtype), owner
    )


def count_to_free(num_owned, fraction):
    """How many of `num_owned` weights pruning by `fraction` frees.

    The count is `round(fraction * num_owned)` (Python's rounding, as the
    reference implementation does).

    Args:
        num_owned: number of weights the task owns in one tensor.
        fraction: the share to free, in [0, 1).

    Returns:
        An int in [0, num_owned].
    """
    return int(round(fraction * num_owned))


def count_to_keep(num_at_start, sparsity):
    """How many weights a task keeps at `sparsity` of its starting count.

    tfmot's rule: `max(round(n * (1 - sparsity)), 1)`, so a tensor the task
    owns is never emptied by a schedule.

    Args:
        num_at_start: weights the task owned when pruning started.
        sparsity: target sparsity in [0, 1).

    Returns:
        An int in [min(1, n), n].
    """
    if num_at_start == 0:
        return 0
    return max(int(round(num_at_start * (1.0 - sparsity))), 1)


def prune_owner(weights, owner, task_id, num_to_free):
    """Frees the `num_to_free` smallest-magnitude weights of `task_id`.

    Only weights that `task_id` owns are candidates; ties in magnitude are
    broken by position (the lower flat index is freed first), so the result
    is deterministic and the count exact.

    Args:
        weights: float tensor.
        owner: integer tensor of `weights`' shape.
        task_id: the task being pruned.
        num_to_free: exact number of weights to free; at most the number the
            task owns.

    Returns:
        The new owner tensor (same shape and dtype as `owner`).

    Raises:
        ValueError: if `num_to_free` is negative or more than the task owns.
    """
    owned = trainable_mask(owner, task_id)
    num_owned = int(tf.reduce_sum(tf.cast(owned, "int64")))
    if not 0 <= num_to_free <= num_owned:
        raise ValueError(
            f"Expected `num_to_free` in [0, {num_owned}] (the weights task "
            f"{task_id} owns). Received: num_to_free={num_to_free}"
        )
    if num_to_free == 0:
        return tf.identity(owner)
    magnitude = tf.reshape(tf.abs(tf.cast(weights, "float32")), [-1])
    magnitude = tf.where(
        tf.reshape(owned, [-1]), magnitude, tf.constant(math.inf, "float32")
    )
    order = tf.argsort(magnitude, stable=True)
    freed = order[:num_to_free]
    flat_owner = tf.reshape(owner, [-1])
    flat_owner = tf.tensor_scatter_nd_update(
        flat_owner,
        tf.expand_dims(freed, 1),
        tf.zeros([num_to_free], dtype=owner.dtype),
    )
    return tf.reshape(flat_owner, tf.shape(owner))


def owner_counts(owner, num_ids):
    """Counts the weights of every owner id.

    Args:
        owner: integer tensor of owner ids.
        num_ids: count ids 0..num_ids-1.

    Returns:
        An int64 NumPy array of length `num_ids`; index 0 is the free count.
    """
    flat = np.asarray(owner).astype(np.int64).ravel()
    return np.bincount(flat, minlength=num_ids)[:num_ids]
