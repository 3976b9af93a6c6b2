"""The `packnet-tf train` config file: schema, defaults and checks.

A YAML (or JSON) file; relative paths in it are read from the file's
folder. Example:

    model: runs/split/model.keras      # the run's state lives in this file
    max_tasks: 5                        # default: the number of tasks
    seed: 0
    network:
      type: cnn                         # cnn | mlp | application | file
      input_shape: [32, 32, 3]
      conv: [32, 32, pool, 64, 64, pool]
      dense: [256]
    defaults:                           # any task key below except name/data
      epochs: 4
      prune_fraction: equal             # a number, a list per task, "equal"
      on_bad_files: error               # or skip: leave undecodable files out
    tasks:
      - name: airplane_automobile
        data: {folder: cifar10.zip, classes: [airplane, automobile]}

This module only reads and checks the file (no TensorFlow): errors are
`ConfigError`s naming the file and the key, raised before anything runs.
The keys and value checks live in `packnet_tf.cli.schema`.
"""

__all__ = [
    "TASK_DEFAULTS",
    "ConfigError",
    "RunConfig",
    "TaskConfig",
    "load_config",
    "parse_config",
]

import dataclasses
import json
import pathlib

from packnet_tf.cli.schema import (TASK_DEFAULTS, TASK_ONLY_KEYS, TOP_KEYS,
                                   ConfigError, check_int, check_network,
                                   check_task_options, check_unknown)
from packnet_tf.core.task import validate_task_name
from packnet_tf.io.paths import resolve_path


@dataclasses.dataclass
class TaskConfig:
    """One task of a run.

    Attributes:
        name: the task's name.
        data: its data spec (see `packnet_tf.data.from_spec`), a
            `DataSource` given from Python, or None: the first task of a
            converted or loaded network, pruned and frozen without
            training (its options say 0 epochs, no recalibration).
        options: every key of `TASK_DEFAULTS`, resolved.
        index: its position in the run (0-based).
    """

    name: str
    data: object
    options: dict
    index: int


@dataclasses.dataclass
class RunConfig:
    """A checked config.

    Attributes:
        path: the config file (a string; "<demo>" for built-in runs).
        base_dir: the folder relative paths are read from.
        model: the model file of the run.
        max_tasks: the network's task capacity (None: from a loaded model).
        seed: the run's seed.
        network: the network section (a dict with `type`).
        tasks: the `TaskConfig`s in order.
        log_dir: TensorBoard folder, or None.
        fused_update: `PackNetModel.fused_update` to train with (True:
            the masked update compiled by XLA; False: uncompiled), or None
            for the model's own (True for a new network, the saved value
            for a model file).
    """

    path: str
    base_dir: pathlib.Path
    model: pathlib.Path
    max_tasks: int
    seed: int
    network: dict
    tasks: list
    log_dir: pathlib.Path = None
    fused_update: bool = None

    def error(self, key, message):
        """A `ConfigError` about `key` of this config."""
        return ConfigError(self.path, key, message)

    def resolve(self, value):
        """A path from the config, `~`/`$VARS` expanded, made absolute."""
        return resolve_path(value, self.base_dir)


def read_file(path):
    """Parses a YAML or JSON file into a dict.

    Raises:
        ConfigError: if the file is missing or does not parse to a mapping.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(path, None, "no such config file.")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as error:  # yaml/json parse errors
        raise ConfigError(path, None, f"does not parse: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(path, None,
                          "expected a mapping with `network` and `tasks`. "
                          f"Received: {type(data).__name__}")
    return data


def _without_data(merged, options, where, path):
    """The options of a task without data: pruned and frozen, no training.

    Such a task keeps the weights the network holds (a converted
    network's own task): it trains nothing, so its own entry may not ask
    for epochs, and it can be pruned only by a fixed fraction.
    """
    for key in ("epochs", "finetune_epochs"):
        if options.get(key):
            raise ConfigError(
                path, f"{where}.{key}", f"{options[key]}, but the task has "
                "no `data` to train on: it is pruned and frozen as the "
                "network holds it. Set 0, or give the task `data`.")
    if merged["gradual"] is not None or merged["prune_fraction"] == "auto":
        key = "gradual" if merged["gradual"] is not None else "prune_fraction"
        raise ConfigError(
            path, f"{where}.{key}", "a task without `data` is pruned in one "
            "shot by a fixed fraction (gradual pruning fine-tunes and "
            "'auto' measures accuracy, both on data). Set a number.")
    # No statistics to recompute: the converted ones are kept.
    return {**merged, "epochs": 0, "finetune_epochs": 0,
            "recalibrate": False}


def parse_config(data, path, base_dir, model=None, log_dir=None):
    """Checks a parsed config and fills in defaults.

    Args:
        data: the parsed mapping.
        path: the file, for messages.
        base_dir: the folder relative paths are read from.
        model: overrides the `model` key.
        log_dir: overrides the `log_dir` key.

    Returns:
        A `RunConfig`.

    Raises:
        ConfigError: on unknown keys, wrong types, missing keys or
            duplicate task names.
    """
    check_unknown("", data, TOP_KEYS, path)
    for key in ("network", "tasks"):
        if key not in data:
            raise ConfigError(path, key, "missing.")
    check_network(data["network"], path)
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(path, "defaults", "expected a mapping.")
    check_unknown("defaults", defaults, TASK_DEFAULTS, path)
    defaults = dict(defaults)
    check_task_options(defaults, "defaults", path, plan_ok=True)
    tasks_data = data["tasks"]
    if not isinstance(tasks_data, list) or not tasks_data:
        raise ConfigError(path, "tasks", "expected a non-empty list of "
                          "tasks, each with `name` and `data`.")
    tasks, names = [], []
    for index, entry in enumerate(tasks_data):
        where = f"tasks[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(path, where, "expected a mapping with `name` "
                              f"and `data`. Received: {entry!r}")
        check_unknown(where, entry, TASK_ONLY_KEYS + tuple(TASK_DEFAULTS),
                      path)
        for key in TASK_ONLY_KEYS:
            if entry.get(key) is None and not (key == "data" and index == 0):
                raise ConfigError(path, f"{where}.{key}", "missing." + (
                    " Only the first task may leave out `data` (a "
                    "pretrained network's own task)." if key == "data"
                    else ""))
        try:
            validate_task_name(entry["name"], names)
        except ValueError as error:
            raise ConfigError(path, f"{where}.name", error) from None
        names.append(entry["name"])
        options = {k: v for k, v in entry.items() if k not in TASK_ONLY_KEYS}
        check_task_options(options, where, path, plan_ok=False)
        merged = {**TASK_DEFAULTS, **defaults, **options}
        if entry.get("data") is None:
            merged = _without_data(merged, options, where, path)
        tasks.append(TaskConfig(entry["name"], entry.get("data"), merged,
                                index))
    max_tasks = data.get("max_tasks")
    if max_tasks is not None:
        check_int(max_tasks, "max_tasks", path, 1)
        if max_tasks < len(tasks):
            raise ConfigError(path, "max_tasks", f"{max_tasks} is fewer "
                              f"than the {len(tasks)} tasks listed.")
    seed = check_int(data.get("seed", 0), "seed", path)
    model = model or data.get("model")
    if not model:
        raise ConfigError(path, "model", "missing: the .keras file the run "
                          "writes (and resumes from).")
    if not str(model).endswith(".keras"):
        raise ConfigError(path, "model", f"expected a path ending in "
                          f"'.keras'. Received: {model!r}")
    log_dir = log_dir or data.get("log_dir")
    fused_update = data.get("fused_update")
    if fused_update is not None and not isinstance(fused_update, bool):
        raise ConfigError(path, "fused_update", "expected true (the masked "
                          "update compiled by XLA) or false (uncompiled, "
                          f"as exact). Received: {fused_update!r}")
    return RunConfig(
        path=str(path), base_dir=pathlib.Path(base_dir),
        model=resolve_path(model, base_dir), max_tasks=max_tasks, seed=seed,
        network=dict(data["network"]),
        tasks=tasks,
        log_dir=None if log_dir is None else resolve_path(log_dir, base_dir),
        fused_update=fused_update)


def load_config(path, model=None, log_dir=None):
    """Reads and checks a config file (see the module docstring).

    Args:
        path: the YAML or JSON file.
        model: overrides the file's `model` (relative to the working
            directory).
        log_dir: overrides the file's `log_dir` (relative to the working
            directory).

    Returns:
        A `RunConfig`.

    Raises:
        ConfigError: on any problem the file alone shows.
    """
    path = pathlib.Path(path)
    data = read_file(path)
    if model is not None:
        model = pathlib.Path(model).absolute()
    if log_dir is not None:
        log_dir = pathlib.Path(log_dir).absolute()
    return parse_config(data, path, path.parent.absolute(), model=model,
                        log_dir=log_dir)
