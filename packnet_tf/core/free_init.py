"""Where a new task's free weights start.

When task k > 1 is added it takes every free weight: the weights earlier
tasks pruned. Three starts are offered (`PackNetModel(free_init=...)`):

- `"previous"` (the default): the value each weight had when it was
  pruned (what Avalanche's PackNet does: its masks hide pruned weights
  without changing them). The model keeps those values in one
  non-trainable copy of every packed kernel (`<layer>_<kernel>_released`),
  saved with it;
- `"zero"`: pruning sets freed weights to 0 and the new task starts them
  there (the default before `free_init` existed; files written then load
  so). Measured on split-cifar10-5 it leaves most of a later task's weights
  at exactly 0 through training (a weight whose unit gets no gradient never
  moves), and pruning then chooses among those ties by position
  (benchmarks/README.md, "Why our PackNet trailed Avalanche's");
- `"initializer"`: new values drawn from the layer's own initializer (e.g.
  Glorot-uniform), seeded from Keras' global seed
  (`keras.utils.set_random_seed`), so a seed gives the same draws.

The first task starts from the trunk's weights in every mode. Earlier tasks
never see these entries (they are not theirs), so every mode leaves them
bit-exact. The functions here are pure tensor math; the model applies them.
"""

import tensorflow as tf

from packnet_tf.layers.ownership import FREE


def remember_pruned(kernel, old_owner, new_owner, released):
    """`released` with the values of the weights this prune frees.

    Args:
        kernel: the kernel before pruning zeroes anything.
        old_owner: its owner ids before pruning.
        new_owner: its owner ids after pruning.
        released: the kept values of earlier prunes.

    Returns:
        The new `released` tensor: `kernel` where a weight was freed now,
        `released` elsewhere.
    """
    freed = tf.logical_and(tf.equal(new_owner, FREE),
                           tf.not_equal(old_owner, FREE))
    return tf.where(freed, kernel, released)


def start_values(kernel, claimed, values):
    """`kernel` with the `claimed` entries set to `values`.

    Args:
        kernel: the kernel after the new task claimed the free weights.
        claimed: boolean mask of the entries the new task just claimed.
        values: what they start at (a tensor of `kernel`'s shape).

    Returns:
        The new kernel tensor; every other entry is unchanged.
    """
    return tf.where(claimed, tf.cast(values, kernel.dtype), kernel)


def fresh_draws(initializer, shape, dtype):
    """New values from `initializer`'s distribution, not its first draw.

    A Keras initializer with an int seed returns the same values at every
    call; a copy with its seed left to Keras (`seed=None`) draws from the
    global seed instead (`keras.utils.set_random_seed`).

    Args:
        initializer: a `keras.initializers.Initializer`.
        shape: the kernel's shape.
        dtype: the kernel's dtype.

    Returns:
        A tensor of `shape`.
    """
    config = initializer.get_config()
    if "seed" in config:
        config["seed"] = None
    return initializer.__class__.from_config(config)(shape, dtype=dtype)


def claim_for_task(layer, task_id, free_init, released):
    """Gives `layer`'s free weights to `task_id`, started as `free_init` says.

    Args:
        layer: a packed layer.
        task_id: the new task (per-task values start from the task before).
        free_init: one of `packnet_tf.core.planning.FREE_INITS`.
        released: per packed kernel of `layer`, the variable of its kept
            pruned values ("previous"), or None.
    """
    free = [tf.equal(owner, FREE) for _, _, owner in layer.packed_kernels()]
    layer.claim_free(task_id)
    if task_id == 1:
        return  # the first task starts from the trunk's own weights
    layer.copy_task_slot(task_id - 1, task_id)
    if free_init == "zero":
        return  # pruning left them at 0
    for (name, kernel, _), claimed, kept in zip(layer.packed_kernels(), free,
                                                released):
        values = kept if free_init == "previous" else fresh_draws(
            layer.initializer_of(name), kernel.shape, kernel.dtype)
        kernel.assign(start_values(kernel, claimed, values))
