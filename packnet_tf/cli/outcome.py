"""How a run ends: the accuracy-matrix report, or a stop that says what to do.

Both read a `Run` (`packnet_tf.cli.runner`): its plan, config, record and
reporter.
"""

import traceback

from packnet_tf.cli.prepare import sidecar_path
from packnet_tf.cli.progress import PhaseFailed
from packnet_tf.errors import FusedUpdateError
from packnet_tf.io import checkpoint


def error_log(model_path):
    """Where a stopped run's traceback goes: `<model>.error.log`."""
    return model_path.with_name(model_path.stem + ".error.log")


def stopped(run, error):
    """A `PhaseFailed` for an error raised while a task of `run` ran.

    The traceback goes to `<model>.error.log`; the message says what broke,
    where, and that the model file is whole and re-running resumes.

    Args:
        run: the `Run`; `run._where` is `(task, phase)` or None.
        error: the exception.

    Returns:
        A `PhaseFailed` (raise it `from error`).
    """
    model = run.config.model
    log = error_log(model)
    try:
        checkpoint.write_text(log, "".join(traceback.format_exception(error)))
        details = f" The traceback is in {log}."
    except OSError:
        details = ""
    task, phase = run._where or ("?", "?")
    last = run.record.get("last_phase")
    if last:
        kept = f"its state after task {last['task']!r}, {last['phase']}"
    elif run.plan.resumed:
        kept = "the state it was loaded with"
    else:
        kept = "no file yet (no phase had finished)"
    lines = [line for line in str(error).strip().splitlines()
             if line.strip()]
    what = lines[-1].split("}} ", 1)[-1].strip() if lines else ""
    if isinstance(error, FusedUpdateError):
        # Its fix names the Python API; a run sets it in the config.
        what = (f"{error.problem.rstrip('.')}. Fix: add "
                f"`fused_update: false` to {run.config.path} (the update "
                "then runs uncompiled, exactly as safe)")
    return PhaseFailed(
        f"Task {task!r}, {phase}: {type(error).__name__}: {what}. "
        f"{model} keeps {kept} (the last complete one); fix the cause and "
        "re-run the same command to resume (data files are checked again "
        f"first).{details}")


def report_matrix(run):
    """Prints the accuracy matrix and its metrics; adds them to the record.

    Over the tasks that have data (a data-less base task has no accuracy
    and no row). Skipped (with a line saying why) when a task has no test
    split or finished in a run that kept no matrix.

    Args:
        run: the finished `Run`.
    """
    from packnet_tf.evaluation.metrics import continual_metrics

    rows = run.record.get("accuracy_matrix", {})
    names = [t.name for t in run.plan.tasks if t.source is not None]
    try:
        matrix = [[rows[a][b] if j <= i else None
                   for j, b in enumerate(names)]
                  for i, a in enumerate(names)]
        metrics = continual_metrics(matrix, task_names=names)
    except (KeyError, TypeError, ValueError):
        run.reporter.line(
            "\n(No accuracy matrix: a task has no test split, or finished "
            "in a run that did not record one.)")
        return
    run.reporter.line("\nAccuracy matrix (row: after training the task; "
                      "column: tested on):")
    run.reporter.line(metrics.table())
    run.record["continual_metrics"] = metrics.as_dict()
    checkpoint.write_json(sidecar_path(run.config.model), run.record)
