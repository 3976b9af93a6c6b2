"""Checks shared by the exporters: which tasks, which version, which folder.

Every check runs before anything is written, so a bad argument never leaves
a half-written export behind.
"""

import os

from packnet_tf.core.task import NAME_PATTERN
from packnet_tf.errors import TaskStateError
from packnet_tf.io.atomic import is_temporary

#: Prefix of the staging folder a SavedModel export writes first.
STAGING_PREFIX = ".packnet-staging-"
#: The TF Serving config an export writes next to the model folders.
MODELS_CONFIG = "models.config"


def signature_name(task):
    """The signature key of `task` in a multi-task export: `task_<name>`."""
    return f"task_{task}"


def select_tasks(model, tasks):
    """The finished tasks to export, as `TaskInfo`s in the model's order.

    A headless task (a pretrained network's own weights) has nothing to
    serve: None leaves it out, and naming it is an error.

    Args:
        model: a `PackNetModel`.
        tasks: a task name, a list of names, or None for every finished
            task with a head.

    Returns:
        A non-empty list of `TaskInfo`.

    Raises:
        TypeError: if `model` is not a `PackNetModel` or `tasks` is not
            names.
        ValueError: for an unknown or repeated task, or no task at all.
        TaskStateError: for a task that has not finished (`end_task()`),
            or a headless task.
    """
    from packnet_tf.core.model import PackNetModel
    from packnet_tf.core.task import require_head

    if not isinstance(model, PackNetModel):
        raise TypeError(
            "Expected a packnet_tf.PackNetModel to export. "
            f"Received: {type(model).__name__}"
        )
    known = {t.name: t for t in model.tasks}
    if tasks is None:
        chosen = [t for t in model.tasks if t.finished and not t.headless]
        if not chosen:
            raise TaskStateError(
                "There is no finished task with a head to export. Finish one "
                "with "
                "`end_task()` (or `train_task(...)`) first. Received tasks: "
                f"{[(t.name, t.state) for t in model.tasks]}"
            )
        return chosen
    names = [tasks] if isinstance(tasks, str) else tasks
    if not isinstance(names, (list, tuple)) or not names or not all(
            isinstance(n, str) for n in names):
        raise TypeError(
            "Expected `tasks` to be a task name or a non-empty list of task "
            f"names. Received: tasks={tasks!r}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"Each task may be exported once. Received: {names}")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"Unknown task(s) {unknown}. The model's tasks are "
            f"{list(known)}."
        )
    for name in names:
        require_head(known[name], "be exported (there is nothing to serve)")
    unfinished = [known[n] for n in names if not known[n].finished]
    if unfinished:
        raise TaskStateError(
            "Only finished tasks can be exported: their weights are final. "
            "Call `end_task()` first (or leave them out). Received: "
            + ", ".join(f"{t.name!r} state={t.state}" for t in unfinished)
        )
    order = [t.name for t in model.tasks]
    return sorted((known[n] for n in names), key=lambda t: order.index(t.name))


def validate_version(version):
    """Checks a TF Serving model version: an int >= 0.

    Raises:
        ValueError: otherwise.
    """
    if isinstance(version, bool) or not isinstance(version, int) or (
            version < 0):
        raise ValueError(
            "Expected `version` to be an int >= 0 (TF Serving serves the "
            f"highest). Received: version={version!r}"
        )
    return version


def validate_model_name(name, what):
    """Checks a name that becomes a folder and a TF Serving model name.

    Raises:
        ValueError: if it is not 1-64 letters, digits, `_`, `.` or `-`.
    """
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(
            f"Expected {what} of 1-64 letters, digits, '_', '.' or '-' "
            "that starts with a letter or digit: it names the served "
            f"model's folder and URL. Received: {name!r}"
        )
    return name


def _is_version_dir(path):
    return os.path.isdir(path) and os.path.basename(path).isdigit()


def check_export_dir(base_dir):
    """Checks that `base_dir` is absent, empty, or an export directory.

    An export directory holds only `models.config`, staging leftovers (a
    staging folder, a temporary `models.config`), and model folders (`<name>/`) whose entries are integer version folders.

    Args:
        base_dir: the folder `saved_model` writes into.

    Returns:
        The absolute path.

    Raises:
        TypeError: if `base_dir` is not a path.
        FileExistsError: if it exists and is not an export directory.
    """
    if not isinstance(base_dir, (str, os.PathLike)):
        raise TypeError(
            "Expected `base_dir` to be a folder path. "
            f"Received: {type(base_dir).__name__}"
        )
    base_dir = os.path.abspath(os.fspath(base_dir))
    if not os.path.exists(base_dir):
        return base_dir
    problem = None
    if not os.path.isdir(base_dir):
        problem = "it is a file"
    else:
        for entry in sorted(os.listdir(base_dir)):
            path = os.path.join(base_dir, entry)
            if (entry == MODELS_CONFIG or entry.startswith(STAGING_PREFIX)
                    or is_temporary(entry, MODELS_CONFIG)):
                continue
            if not os.path.isdir(path) or not NAME_PATTERN.match(entry):
                problem = f"it holds {entry!r}, which is not a model folder"
                break
            stray = [
                e for e in os.listdir(path)
                if not e.startswith(STAGING_PREFIX)
                and not _is_version_dir(os.path.join(path, e))
            ]
            if stray:
                problem = (
                    f"its folder {entry!r} holds {stray[0]!r}, which is not "
                    "an integer version folder"
                )
                break
    if problem:
        raise FileExistsError(
            f"{base_dir!r} exists and is not an export directory ({problem}). "
            "Export into a new or empty folder, or into one an earlier "
            "export wrote (`<base_dir>/<model>/<version>/` and "
            f"`{MODELS_CONFIG}`)."
        )
    return base_dir


def check_new_version(base_dir, name, version):
    """Raises if `<base_dir>/<name>/<version>` exists already.

    Raises:
        FileExistsError: naming the next free version.
    """
    model_dir = os.path.join(base_dir, name)
    target = os.path.join(model_dir, str(version))
    if os.path.exists(target):
        taken = sorted(int(e) for e in os.listdir(model_dir) if e.isdigit())
        raise FileExistsError(
            f"Version {version} of {name!r} already exists at {target!r}; "
            "versions are never overwritten (TF Serving may be serving it). "
            f"Export with version={taken[-1] + 1}; older versions stay side "
            "by side."
        )
    return target


def model_dirs(base_dir):
    """Model folders of an export directory that hold at least one version.

    Returns:
        Sorted folder names.
    """
    if not os.path.isdir(base_dir):
        return []
    names = []
    for entry in sorted(os.listdir(base_dir)):
        path = os.path.join(base_dir, entry)
        if os.path.isdir(path) and NAME_PATTERN.match(entry) and any(
                _is_version_dir(os.path.join(path, e))
                for e in os.listdir(path)):
            names.append(entry)
    return names
