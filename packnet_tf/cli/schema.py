"""The config's keys and the checks of their values (no TensorFlow)."""

from packnet_tf.core.contract import InputContract
from packnet_tf.core.planning import (FREE_INITS, KEEP_EXPECTED,
                                      check_fraction, check_keep_patterns,
                                      validate_spec)
from packnet_tf.core.task import validate_task_name
from packnet_tf.data.augmentation import check_augment
from packnet_tf.data.options import DEFAULT_BATCH_SIZE, ON_BAD_FILES
from packnet_tf.training import auto_prune, recipe

#: Top-level keys.
TOP_KEYS = ("model", "max_tasks", "seed", "network", "defaults", "tasks",
            "log_dir", "fused_update")
#: The task options of a run config that are `train_task`'s (their
#: defaults are `packnet_tf.training.recipe.DEFAULTS`).
RECIPE_KEYS = ("epochs", "finetune_epochs", "learning_rate",
               "finetune_learning_rate", "prune_fraction", "optimizer",
               "gradual", "recalibrate", "recalibrate_steps", "prune_keep",
               "auto_tolerance", "auto_candidates")
#: Keys a task (or `defaults`) may set, with their defaults: the recipe's,
#: and the data's and the command's own.
TASK_DEFAULTS = {
    **{key: recipe.DEFAULTS[key] for key in RECIPE_KEYS},
    # YAML's form of the fractions tried by `prune_fraction: auto`.
    "auto_candidates": list(recipe.DEFAULTS["auto_candidates"]),
    "batch_size": DEFAULT_BATCH_SIZE,
    "preprocess": "auto",
    "resize": True,
    "from_logits": InputContract.from_logits,
    "num_classes": None,
    "validation": False,
    "on_bad_files": ON_BAD_FILES[0],  # packnet_tf.data.check_source
    "augment": None,  # or {flip: horizontal, translate: 0.1}
    "autotune": False,  # tf.data autotuning (packnet_tf.data.batches)
    # With prune_fraction: auto, every k-th training example is held out to
    # measure the accuracy a fraction keeps.
    "auto_holdout": 10,
}
#: Keys of `gradual`, with the least value of each int key.
GRADUAL_KEYS = recipe.GRADUAL_TIMINGS
#: Keys only a task has.
TASK_ONLY_KEYS = ("name", "data")
#: Network types and the keys each accepts (besides `type`).
NETWORK_KEYS = {
    "cnn": ("input_shape", "conv", "dense", "kernel_size", "batch_norm",
            "batch_norm_momentum", "global_pool", "free_init"),
    "mlp": ("input_shape", "dense", "batch_norm", "batch_norm_momentum",
            "free_init"),
    "application": ("name", "input_shape", "weights", "first_task",
                    "args", "free_init"),
    "file": ("path", "first_task", "free_init"),
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


def check_unknown(where, keys, allowed, path):
    """Raises a `ConfigError` for the first key of `keys` not `allowed`."""
    unknown = sorted(set(keys) - set(allowed))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(path, key,
                          f"unknown key. Allowed here: {sorted(allowed)}.")


def check_int(value, key, path, minimum=0):
    """Returns `value` if it is an int >= `minimum`; else `ConfigError`."""
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
    """Checks and normalizes the task keys in `options` (in place).

    Args:
        options: a task's (or `defaults`') keys.
        where: the config key of `options`, for messages.
        path: the config file, for messages.
        plan_ok: whether `prune_fraction` may be a list or "equal" (in
            `defaults`) rather than only a number (in a task).

    Raises:
        ConfigError: on a value of the wrong type or range.
    """
    for key in ("epochs", "finetune_epochs"):
        if key in options:
            check_int(options[key], f"{where}.{key}", path)
    if "batch_size" in options:
        check_int(options["batch_size"], f"{where}.batch_size", path, 1)
    for key in ("learning_rate", "finetune_learning_rate"):
        if key in options:
            options[key] = _number(options[key], f"{where}.{key}", path,
                                   none_ok=key.startswith("finetune"))
    if options.get("num_classes") is not None:
        check_int(options["num_classes"], f"{where}.num_classes", path, 1)
    if options.get("prune_keep") is not None:
        try:
            check_keep_patterns(options["prune_keep"], "prune_keep")
        except TypeError:
            raise ConfigError(path, f"{where}.prune_keep", f"expected "
                              f"{KEEP_EXPECTED}. Received: "
                              f"{options['prune_keep']!r}") from None
    if options.get("recalibrate_steps") is not None:
        check_int(options["recalibrate_steps"], f"{where}.recalibrate_steps",
                  path, 1)
    for key in ("resize", "from_logits", "validation", "autotune",
                "recalibrate"):
        if key in options and not isinstance(options[key], bool):
            raise ConfigError(path, f"{where}.{key}", "expected true or "
                              f"false. Received: {options[key]!r}")
    if "preprocess" in options and not isinstance(options["preprocess"],
                                                  str):
        raise ConfigError(path, f"{where}.preprocess", "expected a name. "
                          f"Received: {options['preprocess']!r}")
    if "on_bad_files" in options and (
            options["on_bad_files"] not in ON_BAD_FILES):
        raise ConfigError(path, f"{where}.on_bad_files", "expected 'error' "
                          "(stop before training, naming the files) or "
                          "'skip' (train without them). Received: "
                          f"{options['on_bad_files']!r}")
    optimizer = options.get("optimizer")
    if optimizer is not None and not isinstance(optimizer, (str, dict)):
        raise ConfigError(path, f"{where}.optimizer", "expected a name "
                          "('adam') or {class_name: ..., config: {...}}. "
                          f"Received: {optimizer!r}")
    if "prune_fraction" in options:
        value = options["prune_fraction"]
        if value == auto_prune.AUTO:
            pass  # chosen per task by validation accuracy
        elif isinstance(value, (str, list)) and not plan_ok:
            raise ConfigError(path, f"{where}.prune_fraction", "a task takes "
                              "a number in [0, 1) or 'auto'; set a list or "
                              f"'equal' in `defaults`. Received: {value!r}")
        else:
            try:
                validate_spec(value)  # the length: against the tasks
            except ValueError as error:
                raise ConfigError(path, f"{where}.prune_fraction",
                                  error) from None
    for key, check in (("auto_tolerance", auto_prune.check_tolerance),
                       ("auto_candidates", auto_prune.check_candidates)):
        if key in options:
            try:
                check(options[key])
            except ValueError as error:
                raise ConfigError(path, f"{where}.{key}", error) from None
    if "auto_holdout" in options:
        check_int(options["auto_holdout"], f"{where}.auto_holdout", path, 2)
    if "augment" in options:
        try:
            options["augment"] = check_augment(options["augment"])
        except (TypeError, ValueError) as error:
            raise ConfigError(path, f"{where}.augment", error) from None
    if options.get("gradual") is not None:
        _check_gradual(options["gradual"], f"{where}.gradual", path,
                       options.get("finetune_epochs"))


def _check_gradual(gradual, key, path, finetune_epochs):
    """Checks `gradual`: PolynomialDecay timings, the fraction decides."""
    if not isinstance(gradual, dict):
        raise ConfigError(path, key, "expected PolynomialDecay timings, "
                          "e.g. {end_step: 100, frequency: 10}; the final "
                          "sparsity is the task's prune_fraction. Received: "
                          f"{gradual!r}")
    check_unknown(key, gradual, GRADUAL_KEYS, path)
    if "end_step" not in gradual:
        raise ConfigError(path, f"{key}.end_step", "missing: the training "
                          "step of fine-tuning that reaches the prune "
                          "fraction.")
    for name, least in GRADUAL_KEYS.items():
        if name in gradual and least is not None:
            check_int(gradual[name], f"{key}.{name}", path, least)
    if "power" in gradual:
        _number(gradual["power"], f"{key}.power", path)
    if "initial_sparsity" in gradual:
        try:
            check_fraction(gradual["initial_sparsity"])
        except ValueError as error:
            raise ConfigError(path, f"{key}.initial_sparsity",
                              error) from None
    if finetune_epochs == 0:
        raise ConfigError(path, key, "gradual pruning happens while "
                          "fine-tuning: set finetune_epochs >= 1 (it is 0).")


def check_network(network, path):
    """Checks the `network` section's type, keys and values.

    Raises:
        ConfigError: naming the key at fault.
    """
    if not isinstance(network, dict) or network.get("type") not in (
            NETWORK_KEYS):
        received = (network.get("type") if isinstance(network, dict)
                    else network)
        raise ConfigError(path, "network.type", "expected one of "
                          f"{sorted(NETWORK_KEYS)}. Received: {received!r}")
    kind = network["type"]
    check_unknown("network", set(network) - {"type"}, NETWORK_KEYS[kind],
                  path)
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
    if "free_init" in network and network["free_init"] not in FREE_INITS:
        raise ConfigError(path, "network.free_init", "expected one of "
                          f"{list(FREE_INITS)}: where a new task's free "
                          "weights start (0, their values when pruned, or "
                          "fresh draws from the layer's initializer). "
                          f"Received: {network['free_init']!r}")
    if network.get("first_task") is not None:
        try:
            validate_task_name(network["first_task"], [])
        except ValueError as error:
            raise ConfigError(path, "network.first_task", error) from None
