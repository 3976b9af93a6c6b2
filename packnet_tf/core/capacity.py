"""`CapacityReport`: how much of each layer every task owns, and what is free."""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class CapacityReport:
    """Weight ownership per packed layer and in total.

    Attributes:
        task_names: task names in id order (task 1 first).
        counts: layer name -> int array `[free, task 1, task 2, ...]`.
    """

    task_names: tuple
    counts: dict

    @property
    def total(self):
        """Counts summed over all layers, `[free, task 1, ...]`."""
        if not self.counts:
            return np.zeros(len(self.task_names) + 1, dtype=np.int64)
        return np.sum(list(self.counts.values()), axis=0)

    def fractions(self, layer=None):
        """Shares of one layer (or of the whole network when None).

        Args:
            layer: a layer name from `counts`, or None for the total.

        Returns:
            A dict `{"free": f, task_name: f, ...}` of fractions summing to 1.

        Raises:
            KeyError: for a layer that is not packed.
        """
        counts = self.total if layer is None else self.counts[layer]
        size = max(int(np.sum(counts)), 1)
        keys = ("free",) + tuple(self.task_names)
        return {k: float(c) / size for k, c in zip(keys, counts)}

    def free_fraction(self, layer=None):
        """The free share of `layer` (or of the whole network)."""
        return self.fractions(layer)["free"]

    def full_layers(self):
        """Names of the layers with no free weight left, in order."""
        return [name for name, counts in self.counts.items()
                if counts[0] == 0]

    def as_dict(self):
        """Every layer's fractions plus `"total"`, JSON-friendly."""
        result = {name: self.fractions(name) for name in self.counts}
        result["total"] = self.fractions()
        return result

    def __str__(self):
        columns = list(self.task_names) + ["free"]
        widths = [max(8, len(c) + 2) for c in columns]
        width = max([len("total")] + [len(n) for n in self.counts]) + 2
        header = f"{'layer':<{width}}{'weights':>10}" + "".join(
            f"{c:>{w}}" for c, w in zip(columns, widths)
        )
        lines = [header, "-" * len(header)]
        rows = list(self.counts.items()) + [("total", self.total)]
        for name, counts in rows:
            size = max(int(np.sum(counts)), 1)
            shares = [c / size for c in counts[1:]] + [counts[0] / size]
            lines.append(
                f"{name:<{width}}{int(np.sum(counts)):>10}"
                + "".join(f"{s:>{w}.1%}" for s, w in zip(shares, widths))
            )
        return "\n".join(lines)
