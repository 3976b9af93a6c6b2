"""`packnet-tf eval --task auto`: the task inferred over a mixture of tasks.

Every finished task's test data is read as that task's input contract
says (its own preprocessing and classes), given per task (`--data
TASK=SPEC`, repeated), as one folder with an image folder per task
(`--data ROOT`: `ROOT/<task>/<split>/<class>/*`), or taken from the run
config that trained the model (`--config`). Each task's examples are read
once, batch by batch, through `infer_task` (its traced function is kept
between calls); the choice per example, or per batch of `--batch-size`
same-task examples (`--per batch`), is `choose_tasks` on those scores.
The report: a confusion table of true task against chosen task, task-inference
accuracy per task, end-to-end accuracy (task and class right) and the
accuracy with the true task given.
"""

import json
import pathlib

import numpy as np

from packnet_tf.cli import contracts
from packnet_tf.cli.commands import UsageError, load
from packnet_tf.cli.networks import input_shape

AUTO = "auto"


def _finished(model):
    return [t for t in model.tasks if t.finished and not t.headless]


def _specs_from_data(args, model):
    """`{task: (spec, label)}` from `--data TASK=SPEC` flags."""
    from packnet_tf.data import normalize_spec

    names = [t.name for t in _finished(model)]
    values = list(args.data)
    if len(values) == 1 and "=" not in values[0] and (
            pathlib.Path(values[0]).is_dir()):
        # One folder of every task's images: <root>/<task>/<split>/<class>/*.
        root = pathlib.Path(values[0])
        found = [n for n in names if (root / n).is_dir()]
        if not found:
            raise UsageError(
                f"--data {values[0]}: a folder for --task auto holds one "
                f"image folder per task, named after it ({names}: "
                "<root>/<task>/<split>/<class>/*); none is there. Or give "
                "each task's data as --data TASK=SPEC.")
        values = [f"{n}={root / n}" for n in found]
    specs = {}
    for value in values:
        task, sep, spec = value.partition("=")
        if not sep or task not in names:
            raise UsageError(
                f"--data {value}: with --task auto, give each task's data as "
                f"TASK=SPEC, TASK one of the finished tasks {names} (e.g. "
                f"--data {names[0]}=data.npz), or read them all from the run "
                "config with --config.")
        if task in specs:
            raise UsageError(f"--data {value}: task {task!r} is given data "
                             "twice; give it once.")
        spec = normalize_spec(spec)
        specs[task] = (dict(spec, train_split=args.split or "test",
                            test_split=None), f"--data {value}", None)
    return specs


def _specs_from_config(args, model):
    """`{task: (spec, label, base_dir)}` from the run config's tasks."""
    from packnet_tf.cli.config import ConfigError, load_config
    from packnet_tf.data import DataSource, normalize_spec

    try:
        config = load_config(args.config)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    specs = {}
    finished = {t.name for t in _finished(model)}
    for task in config.tasks:
        if task.name not in finished or task.data is None:
            continue
        if isinstance(task.data, DataSource):  # configs from Python only
            raise UsageError(f"--config {args.config}: task {task.name!r} "
                             "has no data spec to read.")
        spec = dict(normalize_spec(task.data))
        split = args.split or spec.get("test_split") or "test"
        for key in ("train_examples", "subset_seed"):
            spec.pop(key, None)  # a subset of the train split only
        spec.update(train_split=split, test_split=None)
        specs[task.name] = (spec, f"--config {args.config}, task "
                            f"{task.name!r}", config.base_dir)
    return specs


def _task_batches(args, model, info, spec, label, base_dir, out):
    """The task's examples as `(x, y)` batches, read as its contract says."""
    from packnet_tf.data import (DataError, batches, check_source, fit_plan,
                                 from_spec)

    try:
        options = contracts.data_options(info, args.preprocess, None)
    except ValueError as error:
        raise UsageError(f"--task auto: {error}") from None
    if options["classes"] and "classes" not in spec:
        spec = dict(spec, classes=options["classes"])
    if args.max_image_pixels is not None:
        spec = dict(spec, max_image_pixels=args.max_image_pixels)
    shape = input_shape(model)
    try:
        source = from_spec(spec, base_dir=base_dir)
        if source.num_classes != info.num_classes:
            raise UsageError(
                f"{label}: {source.num_classes} classes, but task "
                f"{info.name!r} has a head of {info.num_classes}. Give it "
                "the classes it was trained on (`classes:` in the spec).")
        report = check_source(
            source, channels=fit_plan(source, shape).decode_channels,
            on_bad_files=args.on_bad_files)
        if report.num_bad:
            print(f"{info.name}: left out {report.num_bad} file(s) that "
                  f"cannot be decoded: {report.summary()}", file=out)
        return batches(
            source, spec["train_split"], shape, batch_size=args.batch_size,
            shuffle=False, preprocess=options["preprocess"],
            resize=options["resize"])
    except DataError as error:
        raise UsageError(f"{label}: {error}") from None


def _check_args(args):
    if args.data and args.config:
        raise UsageError("--task auto reads each task's data from --config "
                         "or from --data TASK=SPEC flags, not both.")
    if not args.data and not args.config:
        raise UsageError("--task auto needs every task's data: --config "
                         "RUN.yaml (the config that trained the model) or "
                         "--data TASK=SPEC once per task.")
    if args.classes:
        raise UsageError("--classes picks one task's classes; with --task "
                         "auto each task reads its own (its input contract, "
                         "or `classes:` in its spec).")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size}: expected an int "
                         ">= 1.")
    if args.reject_threshold is not None and not (
            0.0 <= args.reject_threshold <= 1.0):
        raise UsageError(f"--reject-threshold {args.reject_threshold}: "
                         "expected a score in [0, 1].")


def evaluate_auto(args, out):
    """`eval --task auto`: prints (or `--json`) the task-inference report.

    Args:
        args: the parsed `eval` arguments.
        out: the stream to print to.

    Returns:
        0.

    Raises:
        UsageError: on bad flags or data, naming the flag.
    """
    from packnet_tf.evaluation.metrics import task_inference_metrics
    from packnet_tf.inference.task_inference import choose_tasks, infer_task

    _check_args(args)
    model = load(args.model)
    finished = _finished(model)
    if not finished:
        raise UsageError(f"{args.model} has no finished task with a head to "
                         "infer.")
    specs = (_specs_from_config(args, model) if args.config
             else _specs_from_data(args, model))
    missing = [t.name for t in finished if t.name not in specs]
    if missing:
        where = (f"--config {args.config} has no data for them"
                 if args.config else "add --data TASK=SPEC for each")
        raise UsageError(f"--task auto mixes every finished task's data; "
                         f"tasks {missing} have none ({where}).")
    candidates = [t.name for t in finished]
    true, chosen, labels, predicted, oracle = [], [], [], [], []
    for info in finished:
        spec, label, base_dir = specs[info.name]
        data = _task_batches(args, model, info, spec, label, base_dir, out)
        scores, classes, ys = [], [], []
        for x, y in data:  # one pass; the traced function is kept
            try:
                result = infer_task(model, x, per="example",
                                    tasks=candidates, score=args.score,
                                    calibrated=args.calibrated)
            except ValueError as error:
                raise UsageError(f"--task auto: {error}") from None
            scores.append(result.task_scores)
            # Every candidate's class per example: [batch, tasks].
            classes.append(np.stack([
                np.argmax(result.probabilities[name], axis=1)
                for name in result.tasks], axis=1))
            ys.append(np.asarray(y))
        scores, classes = np.concatenate(scores), np.concatenate(classes)
        y = np.concatenate(ys)
        pick, _, rejected = choose_tasks(
            scores, per=args.per, group_size=args.batch_size,
            reject_threshold=args.reject_threshold)
        names = np.array(candidates, dtype=object)[pick]
        names[rejected] = ""
        true.append(np.full(len(y), info.name, dtype=object))
        chosen.append(names)
        labels.append(y)
        predicted.append(np.where(
            rejected, -1, classes[np.arange(len(y)), pick]))
        oracle.append(classes[:, candidates.index(info.name)])
    metrics = task_inference_metrics(
        np.concatenate(true), np.concatenate(chosen),
        np.concatenate(labels), np.concatenate(predicted),
        np.concatenate(oracle), tasks=candidates, columns=candidates)
    if args.json:
        print(json.dumps(dict(
            metrics.as_dict(), model=str(args.model), per=args.per,
            batch_size=args.batch_size if args.per == "batch" else None,
            score=args.score, calibrated=args.calibrated,
            reject_threshold=args.reject_threshold)),
            file=out)
        return 0
    _print_report(metrics, args, out)
    return 0


def _print_report(metrics, args, out):
    mode = (f"per batch of {args.batch_size} same-task examples"
            if args.per == "batch" else "per example")
    reject = ("" if args.reject_threshold is None
              else f", no task below {args.reject_threshold:g}")
    rule = args.score + (", calibrated" if args.calibrated else "")
    print(f"task inferred {mode} by {rule}{reject}, "
          f"{int(metrics.counts.sum())} examples of {len(metrics.tasks)} "
          "tasks", file=out)
    columns = [c or "(none)" for c in metrics.columns]
    if args.reject_threshold is None:
        columns = columns[:-1]
    corner = "true \\ chosen"
    width = max(len(n) for n in [*metrics.tasks, *columns, corner])
    width = max(width, 10)
    print(f"{corner:<{width}}  " + "  ".join(
        f"{c:>{width}}" for c in columns), file=out)
    for name, row in zip(metrics.tasks, metrics.confusion):
        print(f"{name:<{width}}  " + "  ".join(
            f"{int(v):>{width}}" for v in row[:len(columns)]), file=out)
    print(f"{'':<{width}}  " + "  ".join(
        f"{h:>10}" for h in ("task acc", "end-to-end", "task given")),
        file=out)
    for i, name in enumerate(metrics.tasks):
        print(f"{name:<{width}}  " + "  ".join(
            f"{v:>10.4f}" for v in (metrics.task_accuracy[i],
                                   metrics.end_to_end[i],
                                   metrics.oracle[i])), file=out)
    print(f"{'mean':<{width}}  " + "  ".join(
        f"{metrics.mean(f):>10.4f}" for f in (
            "task_accuracy", "end_to_end", "oracle")), file=out)
