"""`packnet-tf` commands that read a saved model: info, eval, verify, export.

Each returns the process exit code; bad input raises `UsageError` (exit 2).
"""

import json
import pathlib

from packnet_tf.cli import contracts
from packnet_tf.cli.networks import input_shape
from packnet_tf.io import checkpoint


class UsageError(ValueError):
    """Bad command-line input (exit code 2)."""


def load(path):
    """Loads a model, turning a bad file into a `UsageError`."""
    try:
        return checkpoint.load_model(path)
    except checkpoint.CheckpointError as error:
        raise UsageError(str(error)) from None


def info(args, out):
    """Prints tasks, states and capacity per layer; optionally plots it."""
    model = load(args.model)
    report = model.capacity()
    shape = input_shape(model)
    if args.json:
        print(json.dumps({
            "model": str(args.model), "max_tasks": model.max_tasks,
            "input_shape": list(shape),
            "tasks": [{"name": t.name, "id": t.task_id,
                       "num_classes": t.num_classes, "state": t.state,
                       "headless": t.headless,
                       "fingerprint": t.fingerprint is not None,
                       "input_contract": (
                           None if t.input_contract is None
                           else t.input_contract.to_config())}
                      for t in model.tasks],
            "capacity": report.as_dict(),
        }, indent=2), file=out)
    else:
        print(f"{args.model}: input {shape}, {len(model.tasks)} of "
              f"max_tasks={model.max_tasks} tasks", file=out)
        width = max([4] + [len(t.name) for t in model.tasks]) + 2
        print(f"\n{'id':>3}  {'task':<{width}}{'classes':>8}  state",
              file=out)
        for t in model.tasks:
            classes = "-" if t.headless else t.num_classes
            print(f"{t.task_id:>3}  {t.name:<{width}}{classes:>8}  "
                  f"{t.state}", file=out)
            if t.headless:
                print(f"{'':>5}no head: a pretrained network's own weights, "
                      "read by later tasks; never exported", file=out)
            else:
                print(f"{'':>5}inputs: {contracts.describe(t)}", file=out)
        print(f"\nWho owns the network:\n{report}", file=out)
    if args.plot:
        from packnet_tf.cli.plot import plot_capacity

        plot_capacity(report, args.plot,
                      title=f"Who owns {pathlib.Path(args.model).name}")
        print(f"\nCapacity plot written to {args.plot}", file=out)
    return 0


def _contract_problems(model):
    """`{task: message}` for input contracts that do not fit the model."""
    problems = {}
    for task in model.tasks:
        contract = task.input_contract
        if contract is None:
            continue
        try:
            contract.check_classes(task.num_classes, task.name)
            contract.check_input_shape(input_shape(model), task.name)
        except ValueError as error:
            problems[task.name] = str(error)
    return problems


def verify(args, out):
    """Recomputes each finished task's fingerprint; 1 if any changed.

    Also checks each task's input contract against its head and the
    trunk's input (1 if one does not fit).
    """
    model = load(args.model)
    diffs = model.verify()
    changed = {name: d for name, d in diffs.items() if d != 0.0}
    problems = _contract_problems(model)
    for name, problem in problems.items():
        print(f"{name}: INPUT CONTRACT DOES NOT FIT: {problem}", file=out)
    for task in model.tasks:
        if task.name in diffs:
            status = ("CHANGED" if task.name in changed else "ok")
            print(f"{task.name}: {status} (max |output - stored| = "
                  f"{diffs[task.name]:.3g})", file=out)
        else:
            print(f"{task.name}: not finished ({task.state}), no "
                  "fingerprint yet", file=out)
    if changed:
        names = ", ".join(repr(n) for n in changed)
        print(f"VERIFY FAILED: the outputs of task(s) {names} changed "
              f"since they were finished; {args.model} is not the model "
              "that learned them. Restore it from a copy or retrain those "
              "tasks.", file=out)
        return 1
    if problems:
        print(f"VERIFY FAILED: the input contract of task(s) "
              f"{', '.join(repr(n) for n in problems)} does not fit the "
              "model; exports and `eval` would prepare their inputs wrongly. "
              "Record a fitting one with `model.set_input_contract(...)`.",
              file=out)
        return 1
    print(f"verified: {len(diffs)} finished task(s) give exactly their "
          "stored outputs; input contracts fit the model", file=out)
    return 0


def _classes(args):
    if not args.classes:
        return None
    return [c.strip() for c in args.classes.split(",")]


def _options(args, info):
    """How to read data for a task: its input contract, then the flags."""
    try:
        return contracts.data_options(info, args.preprocess, _classes(args))
    except ValueError as error:
        raise UsageError(f"--task {info.name}: {error}") from None


def _source(args, options=None):
    from packnet_tf.data import DataError, from_spec, normalize_spec

    spec = normalize_spec(args.data)
    spec.update(train_split=args.split, test_split=None)
    if args.data_dir and "tfds" in spec:
        spec["data_dir"] = args.data_dir
    classes = options["classes"] if options else _classes(args)
    if classes:
        spec["classes"] = classes
    if args.max_image_pixels is not None:
        spec["max_image_pixels"] = args.max_image_pixels
    try:
        return from_spec(spec)
    except DataError as error:
        hint = ""
        if options and not args.classes and options["classes"]:
            hint = (" (the task's classes, from its input contract; map "
                    "them to this data's classes with --classes)")
        raise UsageError(f"--data {args.data}: {error}{hint}") from None


def _check_files(args, source, shape, out):
    """Decodes the split's image files once first; names any bad one."""
    from packnet_tf.data import DataError, check_source, fit_plan

    try:
        report = check_source(
            source, channels=fit_plan(source, shape).decode_channels,
            on_bad_files=args.on_bad_files)
    except DataError as error:
        raise UsageError(f"--data {args.data}: {error}") from None
    if report.num_bad:
        print(f"left out {report.num_bad} file(s) that cannot be decoded: "
              f"{report.summary()}", file=out)


def evaluate(args, out):
    """Accuracy and loss of one task on a data split."""
    from packnet_tf.cli.metrics import task_metrics
    from packnet_tf.data import DataError, batches

    if args.task == "auto":
        from packnet_tf.cli.auto_eval import evaluate_auto

        return evaluate_auto(args, out)
    auto_only = [flag for flag, given in (
        ("--config", args.config), ("--per batch", args.per == "batch"),
        ("--score", args.score != "entropy"),
        ("--reject-threshold", args.reject_threshold is not None),
        ("--calibrated", args.calibrated),
        ("--json", args.json)) if given]
    if auto_only:
        raise UsageError(f"{', '.join(auto_only)}: for --task auto only "
                         f"(--task {args.task} evaluates that task).")
    if not args.data or len(args.data) > 1:
        raise UsageError(
            f"--task {args.task}: give its data once with --data SPEC "
            f"(received {len(args.data or [])}).")
    args.data = args.data[0]
    args.split = args.split or "test"
    model = load(args.model)
    names = [t.name for t in model.tasks]
    if args.task not in names:
        raise UsageError(f"--task {args.task!r}: unknown task. "
                         f"{args.model} holds {names}.")
    info = next(t for t in model.tasks if t.name == args.task)
    if info.headless:
        raise UsageError(
            f"--task {args.task!r} has no head (a pretrained network's own "
            "weights): nothing to evaluate. Evaluate the tasks trained on "
            f"it: {[t.name for t in model.tasks if not t.headless]}.")
    options = _options(args, info)
    source = _source(args, options)
    if source.num_classes != info.num_classes:
        raise UsageError(
            f"--data {args.data}: {source.num_classes} classes, but task "
            f"{args.task!r} has a head of {info.num_classes}. Pick its "
            "classes with --classes.")
    shape = input_shape(model)
    _check_files(args, source, shape, out)
    try:
        data = batches(source, args.split, shape, batch_size=args.batch_size,
                       shuffle=False, preprocess=options["preprocess"],
                       resize=options["resize"])
    except DataError as error:
        raise UsageError(f"--data {args.data}: {error}") from None
    from_logits = not args.probabilities and (
        info.input_contract is None or info.input_contract.from_logits)
    accuracy, loss, count = task_metrics(model, args.task, data,
                                         from_logits=from_logits)
    if not count:
        raise UsageError(f"--data {args.data}: split {args.split!r} has no "
                         "examples (of the chosen classes).")
    print(f"{args.task} on {source.description} [{args.split}] "
          f"({count} examples): accuracy {accuracy:.4f}, loss "
          f"{loss:.4f}", file=out)
    return 0


def export(args, out):
    """SavedModels (TF Serving layout) and/or LiteRT files of tasks."""
    if not (args.saved_model or args.tflite or args.tflite_dir):
        raise UsageError("say where to export: --saved-model DIR, "
                         "--tflite FILE or --tflite-dir DIR.")
    if args.tflite and args.tflite_dir:
        raise UsageError("use --tflite FILE (one file) or --tflite-dir DIR "
                         "(one file per task), not both.")
    score = args.any_task_score
    if score != "entropy" and not (
            (args.saved_model and args.layout == "multi") or args.tflite):
        raise UsageError(
            f"--any-task-score {score} sets the any_task signatures, which "
            "only a --layout multi SavedModel and a multi-task --tflite "
            "file have: add --layout multi or --tflite FILE.")
    from packnet_tf import export as exporter

    model = load(args.model)
    tasks = args.task or None
    representative = None
    if args.quantize == "int8":
        if not args.data:
            raise UsageError("--quantize int8 calibrates on example "
                             "inputs: pass --data with the task's data.")
        representative = _representative(args, model, tasks, out)
    inputs = args.tflite_inputs
    try:
        if args.saved_model:
            written = exporter.saved_model(
                model, args.saved_model, tasks=tasks, version=args.version,
                layout=args.layout, limits={
                    name: value for name, value in (
                        ("max_image_pixels", args.max_image_pixels),
                        ("max_batch_size", args.max_batch_size),
                        ("max_request_bytes", args.max_request_bytes))
                    if value is not None},
                any_task_score=score if args.layout == "multi" else "entropy")
            folders = (written.values() if isinstance(written, dict)
                       else [written])
            for folder in folders:
                print(f"SavedModel: {folder}", file=out)
        if args.tflite:
            single = tasks[0] if tasks and len(tasks) == 1 else None
            path = exporter.tflite(
                model, args.tflite, task=single,
                tasks=None if single else tasks, quantize=args.quantize,
                representative_data=representative, sparse=args.sparse,
                inputs=inputs, any_task_score=score)
            print(f"TFLite: {path}", file=out)
        if args.tflite_dir:
            names = tasks or [t.name for t in model.tasks
                              if t.finished and not t.headless]
            for name in names:
                path = exporter.tflite(
                    model, pathlib.Path(args.tflite_dir) / f"{name}.tflite",
                    task=name, quantize=args.quantize,
                    representative_data=representative, sparse=args.sparse,
                    inputs=inputs)
                print(f"TFLite: {path}", file=out)
    except (ValueError, FileExistsError) as error:
        raise UsageError(" ".join(str(error).split())) from None
    except Exception as error:
        from packnet_tf.errors import TaskStateError

        if isinstance(error, TaskStateError):
            raise UsageError(" ".join(str(error).split())) from None
        raise
    return 0


def _representative(args, model, tasks, out):
    """`{task: calibration inputs}`, each read as the task's contract says.

    Pixel files calibrate on pixels at the trunk's size (no preprocessing:
    it is inside the file).
    """
    import numpy as np

    from packnet_tf.data import batches

    infos = {t.name: t for t in model.tasks}
    names = tasks or [t.name for t in model.tasks if t.finished]
    shape = input_shape(model)
    read, data = {}, {}
    for name in names:
        if name not in infos:
            continue  # the exporter names unknown tasks
        options = _options(args, infos[name])
        if args.tflite_inputs == "pixels":
            options["preprocess"] = "none"
        key = repr(sorted(options.items()))
        if key not in read:
            source = _source(args, options)
            _check_files(args, source, shape, out)
            # Shuffled (seeded): the first files of a folder are all of
            # one class, and calibration should see every class.
            batched = batches(source, args.split, shape,
                              shuffle=True, seed=0,
                              preprocess=options["preprocess"],
                              resize=options["resize"])
            read[key] = np.concatenate([x.numpy() for x, _ in batched.take(8)])
        data[name] = read[key]
    return data
