"""What a run prints and logs: phase lines, tables, TensorBoard, NaN stops."""

import math
import sys

import keras
import numpy as np


class PhaseFailed(RuntimeError):
    """A phase stopped (NaN loss); the model file keeps the last good state."""


class NanGuard(keras.callbacks.TerminateOnNaN):  # a callback: not serialized
    """Keras' `TerminateOnNaN` that remembers where the loss broke.

    Attributes:
        failed_at: `(epoch, batch, loss)` of the first bad batch, or None.
    """

    def __init__(self):
        super().__init__()
        self.failed_at = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and self.failed_at is None and not math.isfinite(
                float(loss)):
            self.failed_at = (self._epoch, batch, float(loss))
        super().on_batch_end(batch, logs)


class Reporter:
    """Prints one line per phase, tables, and writes TensorBoard scalars.

    Args:
        stream: where lines go (default stdout).
        log_dir: TensorBoard folder (`pathlib.Path`) or None.
        num_tasks: the run's task count, for "task 2/5".
    """

    def __init__(self, stream=None, log_dir=None, num_tasks=1):
        self.stream = stream or sys.stdout
        self.log_dir = log_dir
        self.num_tasks = num_tasks
        self._writer = None

    def line(self, text=""):
        print(text, file=self.stream, flush=True)

    def phase(self, index, name, phase, text):
        tag = f"[task {index + 1}/{self.num_tasks} {name}]"
        self.line(f"{tag} {phase:<9}{text}")

    def fit_callbacks(self, task, phase):
        """TensorBoard callback for a fit phase, when logging."""
        if self.log_dir is None:
            return []
        return [keras.callbacks.TensorBoard(
            log_dir=str(self.log_dir / task / phase))]

    def scalars(self, step, values):
        """Writes `{tag: value}` scalars at `step` (no-op without log_dir)."""
        if self.log_dir is None:
            return
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(
                str(self.log_dir / "run"))
        with self._writer.as_default():
            for tag, value in values.items():
                tf.summary.scalar(tag, float(value), step=step)
        self._writer.flush()

    def capacity(self, step, report):
        """Logs each task's share of the network, and the free share."""
        self.scalars(step, {f"capacity/{name}": share
                            for name, share in report.fractions().items()})


def history_summary(history, epochs, seconds):
    """'3 epochs, loss 0.1234, accuracy 0.9512, 4.1 s' from a `History`."""
    logs = {k: v[-1] for k, v in (history.history if history else {}).items()
            if v}
    parts = [f"{epochs} epoch{'s' if epochs != 1 else ''}"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        if key in logs:
            parts.append(f"{key} {logs[key]:.4f}")
    parts.append(f"{seconds:.1f} s")
    return ", ".join(parts)


def accuracy_table(rows):
    """A table of `(task, accuracy right after, accuracy now)` rows."""
    width = max([len("task")] + [len(r[0]) for r in rows]) + 2
    lines = [f"{'task':<{width}}{'right after':>13}{'now':>9}{'changed':>9}"]
    lines.append("-" * len(lines[0]))
    for name, after, now in rows:
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        changed = ("-" if after is None or now is None
                   else str(not np.isclose(after, now, rtol=0, atol=0)))
        lines.append(f"{name:<{width}}{fmt(after):>13}{fmt(now):>9}"
                     f"{changed:>9}")
    return "\n".join(lines)
