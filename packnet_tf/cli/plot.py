"""The capacity plot: each packed layer's share per task, and free."""

import numpy as np


def plot_capacity(report, path, title=None):
    """Draws one horizontal bar per packed layer (and the total).

    Each bar is split into the shares of the tasks (in task order) and the
    free share, so a reader sees at a glance how much of every layer each
    task took and what is left for later tasks.

    Args:
        report: a `CapacityReport`.
        path: the image file to write (the suffix picks the format: .png,
            .svg, .pdf).
        title: the figure's title.

    Returns:
        `path`.
    """
    import matplotlib

    # No display needed; set here, not at import, so that importing
    # packnet_tf never changes a user's matplotlib backend.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(report.counts) + ["total"]
    labels = list(report.task_names) + ["free"]
    shares = np.array([
        [report.fractions(None if r == "total" else r)[k]
         for k in list(report.task_names) + ["free"]]
        for r in rows
    ])
    colors = list(plt.get_cmap("tab10").colors)
    height = 0.9 + 0.35 * len(rows)
    figure, axis = plt.subplots(figsize=(8, height))
    left = np.zeros(len(rows))
    for column, label in enumerate(labels):
        color = "#dddddd" if label == "free" else colors[column % 10]
        axis.barh(rows, shares[:, column], left=left, color=color,
                  edgecolor="white", label=label)
        left += shares[:, column]
    axis.invert_yaxis()
    axis.set_xlim(0, 1)
    axis.set_xlabel("share of the layer's packed weights")
    axis.xaxis.set_major_formatter(
        matplotlib.ticker.PercentFormatter(xmax=1.0))
    axis.set_title(title or "Who owns the network")
    axis.legend(loc="center left", bbox_to_anchor=(1.01, 0.5),
                frameon=False)
    # bbox_inches="tight" makes room for the legend outside the axes.
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path
