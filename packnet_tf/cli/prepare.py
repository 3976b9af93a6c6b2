"""Everything checked before a run trains: model, data, labels, capacity.

`prepare` turns a `RunConfig` into a `RunPlan`: the model (loaded from the
run's file to resume, or built), and per task its data source, how its
examples reach the network's input, its class count and prune fraction.
Every problem is a one-line `ConfigError` naming the file and key, raised
before the first training step.
"""

import dataclasses
import json

import keras
import tensorflow as tf

from packnet_tf.cli import networks
from packnet_tf.cli.config import ConfigError
from packnet_tf.core.contract import InputContract
from packnet_tf.data import (CheckCache, DataError, DataSource, check_source,
                             fit_plan, from_spec)
from packnet_tf.data.pipeline import preprocess_function
from packnet_tf.io import checkpoint


@dataclasses.dataclass
class TaskPlan:
    """One task, ready to train.

    Attributes:
        config: its `TaskConfig`.
        source: its `DataSource`.
        num_classes: its head's width.
        prune_fraction: what it prunes (0: not pruned, not fine-tuned;
            "auto": chosen after training by held-out accuracy).
        check: the `CheckReport` of its data (files left out with
            `on_bad_files: skip`).
        recipe: how it trains (`packnet_tf.training.phases.Recipe`).
    """

    config: object
    source: object  # None: a task without data (pruned and frozen only)
    num_classes: int
    prune_fraction: float
    check: object = None
    recipe: object = None

    @property
    def name(self):
        return self.config.name

    @property
    def options(self):
        return self.config.options


@dataclasses.dataclass
class RunPlan:
    """A checked run.

    Attributes:
        config: the `RunConfig`.
        model: the `PackNetModel` (loaded to resume, or new).
        resumed: whether `model` was loaded from the run's file.
        tasks: the `TaskPlan`s in order.
        sidecar: the run's record from its last phase (a dict, maybe empty).
    """

    config: object
    model: object
    resumed: bool
    tasks: list
    sidecar: dict


def sidecar_path(model_path):
    """The run record kept next to the model file."""
    return model_path.with_name(model_path.stem + ".run.json")


def check_cache_path(model_path):
    """The cache of image files found good, kept next to the model file."""
    return model_path.with_name(model_path.stem + ".data-check.json")


def read_sidecar(model_path):
    """The run record, or {} when there is none or it does not parse."""
    try:
        return json.loads(sidecar_path(model_path).read_text())
    except (OSError, ValueError):
        return {}


def network_record(config):
    """The network section as recorded in the run record (paths absolute)."""
    spec = dict(config.network)
    if "path" in spec:
        spec["path"] = str(config.resolve(spec["path"]))
    weights = spec.get("weights")
    if isinstance(weights, str) and weights != "imagenet":
        # A weights file, read from the config's folder like every path.
        spec["weights"] = str(config.resolve(weights))
    return spec


def _load_or_build(config, sidecar):
    if config.model.exists():
        try:
            model = checkpoint.load_model(config.model)
        except checkpoint.CheckpointError as error:
            raise ConfigError(config.path, "model", error) from None
        if config.max_tasks is not None and (
                config.max_tasks != model.max_tasks):
            raise config.error(
                "max_tasks", f"{config.max_tasks}, but {config.model} was "
                f"built with max_tasks={model.max_tasks}, which cannot "
                "change. Use a new `model` path for a new network.")
        built_from = sidecar.get("network")
        if built_from is not None and built_from != network_record(config):
            raise config.error(
                "network", f"differs from the network {config.model} was "
                f"built with ({built_from}). Restore it, or use a new "
                "`model` path for a new network.")
        return model, True
    max_tasks = config.max_tasks or len(config.tasks)
    spec = network_record(config)
    # The initial weights follow the run's seed, like every phase.
    keras.utils.set_random_seed(config.seed)
    try:
        model = networks.build_network(
            spec, max_tasks,
            load=lambda p: checkpoint.load_model(p, packnet_only=False))
    except checkpoint.CheckpointError as error:
        raise config.error("network.path", error) from None
    except (ValueError, TypeError) as error:
        raise config.error("network", error) from None
    if config.max_tasks is not None and config.max_tasks != model.max_tasks:
        raise config.error("max_tasks", f"{config.max_tasks}, but the "
                           f"network file has max_tasks={model.max_tasks}.")
    return model, False


def _check_model_tasks(config, model, resumed):
    held = [t.name for t in model.tasks]
    listed = [t.name for t in config.tasks]
    if listed[:len(held)] != held:
        what = config.model if resumed else "the network"
        raise config.error(
            "tasks", f"{what} holds tasks {held} in this order; the config "
            f"must list them first, in the same order. Listed: {listed}.")
    if len(listed) > model.max_tasks:
        raise config.error(
            "tasks", f"{len(listed)} tasks, but the network holds at most "
            f"max_tasks={model.max_tasks}.")


def _source(config, task):
    where = f"tasks[{task.index}].data"
    if task.data is None:
        return None
    if isinstance(task.data, DataSource):
        return task.data
    try:
        return from_spec(task.data, base_dir=config.base_dir)
    except DataError as error:
        key = f"{where}.{error.key}" if error.key and isinstance(
            task.data, dict) else where
        raise config.error(key, f"task {task.name!r}: {error}") from None


def _prune_fraction(config, task, model):
    from packnet_tf.core.planning import prune_fraction_for

    value = task.options["prune_fraction"]
    if value == "auto":
        return value  # chosen after training (packnet_tf.training.auto_prune)
    if not isinstance(value, (str, list, tuple)):
        return float(value)
    try:
        return prune_fraction_for(value, task.index, model.max_tasks)
    except ValueError as error:
        raise config.error("defaults.prune_fraction", error) from None


def _recipe(config, task, fraction):
    """The task's `phases.Recipe`, or a `ConfigError` naming the key."""
    from packnet_tf.training import phases

    where = f"tasks[{task.index}]"
    options = task.options
    try:
        phases.fresh_optimizer(options["optimizer"])
    except (ValueError, TypeError) as error:
        raise config.error(f"{where}.optimizer", error) from None
    try:
        return phases.Recipe(
            epochs=options["epochs"], prune_fraction=fraction,
            finetune_epochs=options["finetune_epochs"],
            optimizer=options["optimizer"],
            learning_rate=options["learning_rate"],
            finetune_learning_rate=options["finetune_learning_rate"],
            loss=keras.losses.SparseCategoricalCrossentropy(
                from_logits=options["from_logits"]),
            gradual=options["gradual"],
            auto_tolerance=options["auto_tolerance"],
            auto_candidates=tuple(options["auto_candidates"]),
            recalibrate=options["recalibrate"],
            recalibrate_steps=options["recalibrate_steps"],
            prune_keep=options["prune_keep"])
    except ValueError as error:
        key = "prune_keep" if "prune_keep" in str(error) else "gradual"
        raise config.error(f"{where}.{key}", error) from None


def _check_keep(config, task, model):
    """Every `prune_keep` pattern names a kernel of the network."""
    from packnet_tf.core.pruning import kept_kernels

    try:
        kept_kernels(task.options["prune_keep"], model.kernel_keys())
    except (TypeError, ValueError) as error:
        raise config.error(f"tasks[{task.index}].prune_keep",
                           error) from None


def _plan_without_data(config, task, source, model, held):
    """The plan of a task without data, or of a headless task.

    Raises:
        ConfigError: for data given to a headless task, or a task without
            data that the network does not hold (only a converted or
            loaded network's own first task may go without).
    """
    where = f"tasks[{task.index}]"
    info = held.get(task.name)
    if source is not None:
        raise config.error(
            f"{where}.data", f"task {task.name!r} has no head (the "
            "pretrained network's own weights): it cannot train or be "
            "evaluated on data. Leave `data` out of it, and list the tasks "
            "to train after it.")
    if info is None:
        raise config.error(
            f"{where}.data", f"missing. Task {task.name!r} has no data, so "
            "it must be the network's own first task (network.first_task: "
            f"{task.name}, for a converted network, or the first task of a "
            "loaded model), pruned and frozen as it is. Give it `data` to "
            "train a new task.")
    fraction = _prune_fraction(config, task, model)
    _check_keep(config, task, model)
    return TaskPlan(task, None, info.num_classes, fraction,
                    recipe=_recipe(config, task, fraction))


def _check_schedules(config, plans):
    """A gradual schedule must end within its task's fine-tuning steps."""
    for plan in plans:
        if plan.source is None:
            continue
        examples = plan.source.num_examples(plan.source.train_split)
        steps = (None if not examples else
                 -(-examples // plan.options["batch_size"]))
        try:
            plan.recipe.check_fits(steps)
        except ValueError as error:
            raise config.error(f"tasks[{plan.config.index}].gradual",
                               error) from None


def _check_free(config, model, first_new):
    """A new task needs a free weight somewhere (as `add_task` does: a
    layer kept whole by `prune_keep` is read by the new task, which trains
    the others)."""
    if first_new is None or not model.tasks or not model.tasks[-1].finished:
        return
    report = model.capacity()
    full = report.full_layers()
    if full and len(full) == len(report.counts):
        last = model.tasks[-1].name
        raise config.error(
            f"tasks[{first_new.index}]", f"no free weights left for task "
            f"{first_new.name!r} in layer(s) {', '.join(full)}: task "
            f"{last!r} took all it had when it ended (prune fraction 0). "
            "Start a new model with more `max_tasks` planned, or a wider "
            "network.")


def _check_files(config, plans, fits):
    """Decodes every image file once, as training will (cached per file).

    Last of the checks, being the slowest: a bad file stops the run here,
    not hours into an epoch; with `on_bad_files: skip` it is left out.
    """
    cache = CheckCache(check_cache_path(config.model))
    for plan, fit in zip(plans, fits):
        if plan.source is None:
            continue
        try:
            plan.check = check_source(
                plan.source, channels=fit.decode_channels,
                on_bad_files=plan.options["on_bad_files"], cache=cache,
                task=plan.name)
        except DataError as error:
            message = (str(error) if error.key == "on_bad_files"
                       else f"task {plan.name!r}: {error}")
            raise config.error(f"tasks[{plan.config.index}].data",
                               message) from None


def prepare(config, strategy=None):
    """Checks a run and builds (or loads) its model.

    Args:
        config: a `RunConfig`.
        strategy: an optional `tf.distribute.Strategy` to build the model
            under.

    Returns:
        A `RunPlan`.

    Raises:
        ConfigError: on any problem, before anything trains.
    """
    import contextlib

    # Data first: a missing path or an unprepared TFDS data set is
    # reported before a network is built (which may download weights).
    sources = [_source(config, task) for task in config.tasks]
    sidecar = read_sidecar(config.model)
    scope = strategy.scope() if strategy else contextlib.nullcontext()
    with scope:
        model, resumed = _load_or_build(config, sidecar)
    if config.fused_update is not None:
        # How the update runs, not what it computes: may change on resume.
        model.fused_update = config.fused_update
    _check_model_tasks(config, model, resumed)
    shape = networks.input_shape(model)
    held = {t.name: t for t in model.tasks}
    plans = []
    fits = []
    for task, source in zip(config.tasks, sources):
        where = f"tasks[{task.index}]"
        info = held.get(task.name)
        if source is None or (info is not None and info.headless):
            plans.append(_plan_without_data(config, task, source, model,
                                            held))
            fits.append(None)
            continue
        try:
            fits.append(fit_plan(source, shape,
                                 resize=task.options["resize"]))
        except DataError as error:
            raise config.error(f"{where}.data",
                               f"task {task.name!r}: {error}") from None
        if task.options["augment"] is not None and len(shape) != 3:
            raise config.error(
                f"{where}.augment", "augmentation flips and shifts images; "
                f"this network's input has shape {tuple(shape)}, not "
                "(height, width, channels). Leave `augment` out.")
        try:
            # Raises on an unknown mode, whatever the dtype.
            preprocess_function(task.options["preprocess"], tf.float32)
            # A keras.applications preprocessing may not fit the trunk (3
            # channels asked, 1 given): found here, not when the task
            # starts training.
            if task.options["preprocess"] != "auto":  # auto: unit or none
                InputContract(preprocess=task.options["preprocess"]
                              ).check_input_shape(shape, task.name)
        except (DataError, ValueError) as error:
            raise config.error(f"{where}.preprocess", error) from None
        classes = source.num_classes
        wanted = task.options.get("num_classes")
        if wanted is not None and wanted != classes:
            raise config.error(
                f"{where}.num_classes", f"{wanted}, but the data of task "
                f"{task.name!r} ({source.description}) has {classes} "
                f"classes: {list(source.class_names)[:10]}.")
        if task.name in held and held[task.name].num_classes != classes:
            raise config.error(
                f"{where}.data", f"task {task.name!r} in {config.model} has "
                f"a head of {held[task.name].num_classes} classes, but its "
                f"data ({source.description}) has {classes}. Give the task "
                "its original data, or a new name.")
        fraction = _prune_fraction(config, task, model)
        _check_keep(config, task, model)
        plans.append(TaskPlan(task, source, classes, fraction,
                              recipe=_recipe(config, task, fraction)))
    first_new = next((t for t in config.tasks if t.name not in held), None)
    _check_free(config, model, first_new)
    _check_files(config, plans, fits)
    _check_schedules(config, plans)
    return RunPlan(config, model, resumed, plans, sidecar)
