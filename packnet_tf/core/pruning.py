"""Pruning and capacity: the `PackNetModel` methods that move ownership.

Kept apart from the model's task registry; every method works on the packed
kernels of `self.trunk` and the active task (see `packnet_tf.core.model`).
"""

import fnmatch

import numpy as np

from packnet_tf.core import free_init
from packnet_tf.core.capacity import CapacityReport
from packnet_tf.core.planning import check_fraction, check_keep_patterns
from packnet_tf.core.task import advance
from packnet_tf.errors import TaskStateError
from packnet_tf.layers import ownership


def validate_fraction(fraction):
    """Checks a prune fraction: a number in [0, 1) (`planning.check_fraction`).

    Returns:
        `fraction` as a float.

    Raises:
        ValueError: otherwise.
    """
    return check_fraction(fraction, label="`fraction`")


def kept_kernels(keep, keys):
    """The kernel keys that `keep`'s `fnmatch` patterns name.

    Args:
        keep: None, or a list of patterns of `"layer/kernel"` keys.
        keys: every kernel key of the model.

    Returns:
        A set of keys (empty for None).

    Raises:
        TypeError: if `keep` is not a list of strings.
        ValueError: if a pattern matches no key.
    """
    if keep is None:
        return set()
    check_keep_patterns(keep)
    kept = set()
    for pattern in keep:
        matched = fnmatch.filter(keys, pattern)
        if not matched:
            raise ValueError(
                f"The `keep` pattern {pattern!r} matches no packed kernel. "
                f"Kernels: {sorted(keys)}.")
        kept.update(matched)
    return kept


class PruningMixin:
    """`prune`, `prune_counts`, `owned_counts` and `capacity`.

    Mixed into `PackNetModel`, which provides `_packed()` (its packed
    layers), `tasks`, `_active_id()`, `_task_for(action)` (the active
    task's record, guarded by `packnet_tf.core.task.require`) and `_released`
    (the kept values of pruned weights, one per packed kernel in
    `_kernels()` order, or empty) and `_statistics_changed(task)` (pruning
    makes batch-norm statistics stale).
    """

    def _apply_owners(self, changes):
        """Assigns new owners and zeroes the weights they free.

        With `free_init="previous"` the freed weights' values are kept
        first (`packnet_tf.core.free_init.remember_pruned`).
        """
        for kernel, owner, new_owner, released in changes:
            if released is not None:
                released.assign(free_init.remember_pruned(
                    kernel, owner, new_owner, released))
            owner.assign(new_owner)
            kernel.assign(ownership.zero_free(kernel, new_owner))

    def _kernels(self):
        """Yields `("layer/kernel", kernel, owner)` for every packed kernel."""
        for layer in self._packed():
            for name, kernel, owner in layer.packed_kernels():
                yield f"{layer.name}/{name}", kernel, owner

    def kernel_keys(self):
        """The `"layer/kernel"` key of every packed kernel, in order (the
        keys of `owned_counts()` and of `prune(keep=...)`'s patterns)."""
        return [key for key, _, _ in self._kernels()]

    def owned_counts(self):
        """Weights the active task owns, per packed kernel.

        Returns:
            A dict `{"layer/kernel": count}`.

        Raises:
            TaskStateError: if there is no task.
        """
        task_id = self._active_id()
        if task_id is None:
            raise TaskStateError(
                "`owned_counts()` needs a task: call `add_task(...)` first."
            )
        return {
            key: int(np.sum(ownership.trainable_mask(owner, task_id)))
            for key, _, owner in self._kernels()
        }

    def prune(self, fraction, keep=None):
        """Frees the smallest-magnitude `fraction` of the active task's weights.

        In every packed kernel, among the weights the active task owns,
        exactly `round(fraction * owned)` with the smallest |w| (ties: lower
        position first) are set to zero and given back (owner 0).

        Args:
            fraction: share to free, in [0, 1).
            keep: kernels not to prune: `fnmatch` patterns of their
                `"layer/kernel"` keys (`owned_counts()`), e.g.
                `["*/depthwise_kernel"]`. The task keeps all of their
                weights, and later tasks read them without training any
                there. Depthwise kernels (9 weights per channel) are where
                pruning a MobileNet costs most: on an ImageNet MobileNet
                learning Flowers-102, pruning half of every kernel cost 12
                points that keeping the depthwise ones (5% of the weights)
                recovered (README, "Batch norm after pruning").

        Returns:
            A dict `{"layer/kernel": number of weights freed}`.

        Raises:
            ValueError: if `fraction` is outside [0, 1), or a `keep`
                pattern matches no kernel.
            TypeError: if `keep` is not a list of strings.
            TaskStateError: if no task is training.
        """
        fraction = validate_fraction(fraction)
        self._task_for("prune")
        owned = self.owned_counts()
        kept = kept_kernels(keep, owned)
        return self.prune_counts({
            key: 0 if key in kept else ownership.count_to_free(count, fraction)
            for key, count in owned.items()
        })

    def prune_counts(self, counts):
        """Frees exactly `counts[key]` smallest weights of the active task.

        The primitive under `prune` and gradual pruning: per packed kernel
        (keys as in `owned_counts()`), the given number of the active
        task's smallest-magnitude weights are zeroed and freed. Kernels not
        in `counts` are left alone. Nothing changes if any count is bad.

        Args:
            counts: dict `{"layer/kernel": number to free}`.

        Returns:
            The dict of counts freed.

        Raises:
            ValueError: for an unknown kernel or a count outside
                [0, owned].
            TaskStateError: if no task is training.
        """
        task = self._task_for("prune")
        owned = self.owned_counts()
        unknown = sorted(set(counts) - set(owned))
        if unknown:
            raise ValueError(
                f"Unknown packed kernel(s) {unknown}. Known: {sorted(owned)}."
            )
        for key, count in counts.items():
            if not 0 <= count <= owned[key]:
                raise ValueError(
                    f"Expected a count in [0, {owned[key]}] for {key!r} (the "
                    f"weights task {task.name!r} owns there). "
                    f"Received: {count!r}"
                )
        released = list(self._released) or [None] * len(owned)
        changes = [
            (kernel, owner, ownership.prune_owner(
                kernel, owner, task.task_id, int(counts[key])), kept)
            for (key, kernel, owner), kept in zip(self._kernels(), released)
            if key in counts
        ]
        self._apply_owners(changes)
        self._statistics_changed(task)
        advance(task, "prune")
        return {key: int(count) for key, count in counts.items()}

    def capacity(self):
        """Who owns the packed weights, per layer and in total.

        Returns:
            A `CapacityReport`; `print()` it for a table.
        """
        names = tuple(t.name for t in self.tasks)
        num_ids = len(names) + 1
        counts = {}
        for layer in self._packed():
            if layer.packed_kernels():
                counts[layer.name] = sum(
                    ownership.owner_counts(owner.numpy(), num_ids)
                    for _, _, owner in layer.packed_kernels()
                )
        return CapacityReport(names, counts)
