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
    tasks:
      - name: airplane_automobile
        data: {folder: cifar10.zip, classes: [airplane, automobile]}

This module only reads and checks the file (no TensorFlow): errors are
`ConfigError`s naming the file and the key, raised before anything runs.
"""

import dataclasses
import json
import os
import pathlib

from packnet_tf.task import validate_task_name

#: Top-level keys.
TOP_KEYS = ("model", "max_tasks", "seed", "network", "defaults", "tasks",
            "log_dir")
#: Keys a task (or `defaults`) may set, with their defaults.
TASK_DEFAULTS = {
    "epochs": 1,
    "finetune_epochs": 1,
    "learning_rate": 1e-3,
    "finetune_learning_rate": None,  # a tenth of learning_rate
    "prune_fraction": 0.5,
    "batch_size": 32,
    "optimizer": "adam",
    "preprocess": "auto",
    "resize": True,
    "from_logits": True,
    "num_classes": None,
    "validation": False,
}
#: Keys only a task has.
TASK_ONLY_KEYS = ("name", "data")
#: Network types and the keys each accepts (besides `type`).
NETWORK_KEYS = {
    "cnn": ("input_shape", "conv", "dense", "kernel_size", "batch_norm",
            "batch_norm_momentum", "global_pool"),
    "mlp": ("input_shape", "dense", "batch_norm", "batch_norm_momentum"),
    "application": ("name", "input_shape", "weights", "first_task",
                    "args"),
    "file": ("path", "first_task"),
}


class ConfigError(ValueError):
    """A bad config: one line naming the file, the key and the problem.

    Attributes:
        path: the config file.
        key: the key at fault, dotted (`tasks[2].data.classes`).
    """

    def __init__(self, path, key, message):
        self.path, self.key = str(path), key
        where = f"{self.path}: {key}" if key else self.path
        super().__init__(f"{where}: {' '.join(str(message).split())}")


@dataclasses.dataclass
class TaskConfig:
    """One task of a run.

    Attributes:
        name: the task's name.
        data: its data spec (see `packnet_tf.data.from_spec`), or a
            `DataSource` given from Python.
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
        prune_plan: the defaults' `prune_fraction` (number, list, "equal").
        tasks: the `TaskConfig`s in order.
        log_dir: TensorBoard folder, or None.
        raw: the file's content, for records.
    """

    path: str
    base_dir: pathlib.Path
    model: pathlib.Path
    max_tasks: int
    seed: int
    network: dict
    prune_plan: object
    tasks: list
    log_dir: pathlib.Path = None
    raw: dict = None

    def error(self, key, message):
        """A `ConfigError` about `key` of this config."""
        return ConfigError(self.path, key, message)

    def resolve(self, value):
        """A path from the config, `~`/`$VARS` expanded, made absolute."""
        return resolve_path(value, self.base_dir)


def resolve_path(value, base_dir):
    """Expands `~` and `$VARS` and reads relative paths from `base_dir`."""
    path = pathlib.Path(os.path.expandvars(os.path.expanduser(str(value))))
    return path if path.is_absolute() else pathlib.Path(base_dir) / path


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


def _unknown(where, keys, allowed, path):
    unknown = sorted(set(keys) - set(allowed))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(path, key,
                          f"unknown key. Allowed here: {sorted(allowed)}.")


def _int(value, key, path, minimum=0):
    if isinstance(value, bool) or not isinstance(value, int) or (
            value < minimum):
        raise ConfigError(path, key, f"expected an int >= {minimum}. "
                          f"Received: {value!r}")
    return value


def _number(value, key, path, none_ok=False):
    if value is None and none_ok:
        return None
    if isinstance(value, str):
        try:  # YAML reads 1e-3 (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            value <= 0):
        raise ConfigError(path, key,
                          f"expected a positive number. Received: {value!r}")
    return float(value)


def check_task_options(options, where, path, plan_ok):
    """Checks and normalizes the task keys in `options` (in place)."""
    for key in ("epochs", "finetune_epochs"):
        if key in options:
            _int(options[key], f"{where}.{key}", path)
    if "batch_size" in options:
        _int(options["batch_size"], f"{where}.batch_size", path, 1)
    for key in ("learning_rate", "finetune_learning_rate"):
        if key in options:
            options[key] = _number(options[key], f"{where}.{key}", path,
                                   none_ok=key.startswith("finetune"))
    if options.get("num_classes") is not None:
        _int(options["num_classes"], f"{where}.num_classes", path, 1)
    for key in ("resize", "from_logits", "validation"):
        if key in options and not isinstance(options[key], bool):
            raise ConfigError(path, f"{where}.{key}", "expected true or "
                              f"false. Received: {options[key]!r}")
    if "preprocess" in options and not isinstance(options["preprocess"],
                                                  str):
        raise ConfigError(path, f"{where}.preprocess", "expected a name. "
                          f"Received: {options['preprocess']!r}")
    optimizer = options.get("optimizer")
    if optimizer is not None and not isinstance(optimizer, (str, dict)):
        raise ConfigError(path, f"{where}.optimizer", "expected a name "
                          "('adam') or {class_name: ..., config: {...}}. "
                          f"Received: {optimizer!r}")
    if "prune_fraction" in options:
        value = options["prune_fraction"]
        if isinstance(value, (str, list)) and not plan_ok:
            raise ConfigError(path, f"{where}.prune_fraction", "a task takes "
                              "a number in [0, 1); set a list or 'equal' in "
                              f"`defaults`. Received: {value!r}")
        if not isinstance(value, (str, list)) and (
                isinstance(value, bool) or not isinstance(value, (int, float))
                or not 0 <= value < 1):
            raise ConfigError(path, f"{where}.prune_fraction", "expected a "
                              "number in [0, 1), a list of them (one per "
                              f"task) or 'equal'. Received: {value!r}")


def _check_network(network, path):
    if not isinstance(network, dict) or network.get("type") not in (
            NETWORK_KEYS):
        raise ConfigError(path, "network.type", "expected one of "
                          f"{sorted(NETWORK_KEYS)}. Received: "
                          f"{network.get('type') if isinstance(network, dict) else network!r}")
    kind = network["type"]
    _unknown("network", set(network) - {"type"}, NETWORK_KEYS[kind], path)
    if kind in ("cnn", "mlp", "application") and "input_shape" in network:
        shape = network["input_shape"]
        if not isinstance(shape, list) or not shape or not all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0
                for d in shape):
            raise ConfigError(path, "network.input_shape", "expected a list "
                              f"of positive ints. Received: {shape!r}")
    elif kind in ("cnn", "mlp"):
        raise ConfigError(path, "network.input_shape", "missing: the shape "
                          "of one example, e.g. [32, 32, 3].")
    if kind == "file" and "path" not in network:
        raise ConfigError(path, "network.path", "missing: the .keras file.")
    if kind == "application" and not isinstance(network.get("name"), str):
        raise ConfigError(path, "network.name", "expected a "
                          "keras.applications name such as 'VGG16'.")
    for key in ("conv", "dense"):
        layers = network.get(key, [])
        if not isinstance(layers, list) or not all(
                (isinstance(w, int) and not isinstance(w, bool) and w > 0)
                or (key == "conv" and w == "pool") for w in layers):
            allowed = "positive ints" + (" or 'pool'" if key == "conv"
                                         else "")
            raise ConfigError(path, f"network.{key}", f"expected a list of "
                              f"{allowed}. Received: {layers!r}")
    if network.get("first_task") is not None:
        try:
            validate_task_name(network["first_task"], [])
        except ValueError as error:
            raise ConfigError(path, "network.first_task", error) from None


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
    _unknown("", data, TOP_KEYS, path)
    for key in ("network", "tasks"):
        if key not in data:
            raise ConfigError(path, key, "missing.")
    _check_network(data["network"], path)
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(path, "defaults", "expected a mapping.")
    _unknown("defaults", defaults, TASK_DEFAULTS, path)
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
        _unknown(where, entry, TASK_ONLY_KEYS + tuple(TASK_DEFAULTS), path)
        for key in TASK_ONLY_KEYS:
            if key not in entry:
                raise ConfigError(path, f"{where}.{key}", "missing.")
        try:
            validate_task_name(entry["name"], names)
        except ValueError as error:
            raise ConfigError(path, f"{where}.name", error) from None
        names.append(entry["name"])
        options = {k: v for k, v in entry.items() if k not in TASK_ONLY_KEYS}
        check_task_options(options, where, path, plan_ok=False)
        merged = {**TASK_DEFAULTS, **defaults, **options}
        tasks.append(TaskConfig(entry["name"], entry["data"], merged, index))
    max_tasks = data.get("max_tasks")
    if max_tasks is not None:
        _int(max_tasks, "max_tasks", path, 1)
        if max_tasks < len(tasks):
            raise ConfigError(path, "max_tasks", f"{max_tasks} is fewer "
                              f"than the {len(tasks)} tasks listed.")
    seed = _int(data.get("seed", 0), "seed", path)
    model = model or data.get("model")
    if not model:
        raise ConfigError(path, "model", "missing: the .keras file the run "
                          "writes (and resumes from).")
    if not str(model).endswith(".keras"):
        raise ConfigError(path, "model", f"expected a path ending in "
                          f"'.keras'. Received: {model!r}")
    log_dir = log_dir or data.get("log_dir")
    return RunConfig(
        path=str(path), base_dir=pathlib.Path(base_dir),
        model=resolve_path(model, base_dir), max_tasks=max_tasks, seed=seed,
        network=dict(data["network"]),
        prune_plan=defaults.get("prune_fraction",
                                TASK_DEFAULTS["prune_fraction"]),
        tasks=tasks,
        log_dir=None if log_dir is None else resolve_path(log_dir, base_dir),
        raw=data)


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
