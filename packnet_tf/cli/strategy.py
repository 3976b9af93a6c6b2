"""`--strategy` for `packnet-tf train`: a tf.distribute strategy and who writes."""

import json
import os
import tempfile

STRATEGIES = ("default", "mirrored", "multiworker")


class StrategyError(ValueError):
    """A `--strategy` that cannot be set up from this environment."""


def worker_role(environ=None):
    """`(index, is_chief)` of this process from `TF_CONFIG`.

    The chief is worker 0 (or an explicit "chief" task).

    Raises:
        StrategyError: if TF_CONFIG is missing or malformed.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get("TF_CONFIG")
    if not raw:
        raise StrategyError(
            "--strategy multiworker needs TF_CONFIG in the environment, e.g. "
            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}. Received: no TF_CONFIG'
        )
    try:
        task = json.loads(raw)["task"]
        kind, index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise StrategyError(
            "TF_CONFIG must be JSON with a 'cluster' and a 'task' of 'type' "
            f"and 'index'. Received: {raw!r} ({error})"
        ) from error
    return index, kind == "chief" or (kind == "worker" and index == 0 and
                                      "chief" not in json.loads(raw).get(
                                          "cluster", {}))


def make_strategy(name):
    """Returns `(strategy or None, is_chief, worker_index)` for `name`.

    Args:
        name: one of `STRATEGIES`.

    Raises:
        StrategyError: for an unknown name or a missing TF_CONFIG.
    """
    if name not in STRATEGIES:
        raise StrategyError(
            f"Expected --strategy in {STRATEGIES}. Received: {name!r}")
    if name == "default":
        return None, True, 0
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy(), True, 0
    index, chief = worker_role()
    return tf.distribute.MultiWorkerMirroredStrategy(), chief, index


def worker_model_path(model_path, index):
    """Where a non-chief worker writes: its own temporary folder.

    Every worker must save (saving is collective), but only the chief's file
    is the run's; the others write where nothing collides.
    """
    folder = tempfile.mkdtemp(prefix=f"packnet-tf-worker{index}-")
    return os.path.join(folder, os.path.basename(model_path))
