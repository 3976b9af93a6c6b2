"""`packnet-tf`: pack task after task into one network, from the shell.

Commands:
    demo      five digit tasks into one CNN, then export (no download)
    train     a config's task sequence; re-run to resume or add tasks
    eval      one task's accuracy on a data split
    info      tasks, states, capacity per layer (and a plot)
    verify    every finished task still gives its stored outputs
    export    TF Serving SavedModels and LiteRT files

Exit codes: 0 ok; 1 verify found a changed task; 2 bad input (config,
arguments, model file, data files that cannot be decoded), nothing was
trained; 3 a phase stopped (NaN loss, or an error while training) or the
run is busy; the model file keeps its last complete state.

The command keeps TensorFlow's own log lines (C++ logging, tf.function
retracing warnings) off the terminal unless `--verbose`; `--help`,
`--version` and a config error answer without importing TensorFlow.
"""

import argparse
import sys

from packnet_tf import __version__
from packnet_tf.cli.quiet import import_tensorflow, quiet_tensorflow

#: Exit codes.
OK, CHANGED, BAD_INPUT, STOPPED = 0, 1, 2, 3

#: The errors that end a command with an exit code other than a traceback:
#: `(module, class, code)`, first match wins. A module that is not imported
#: cannot have raised its error, so the check looks in `sys.modules` and
#: imports nothing (a config error stays quick, without TensorFlow).
_EXIT_CODES = (
    ("packnet_tf.cli.schema", "ConfigError", BAD_INPUT),
    ("packnet_tf.cli.commands", "UsageError", BAD_INPUT),
    ("packnet_tf.cli.strategy", "StrategyError", BAD_INPUT),
    ("packnet_tf.cli.progress", "PhaseFailed", STOPPED),
    ("packnet_tf.io.checkpoint", "RunBusyError", STOPPED),
)

def _add_data_args(parser, split_default, per_task=False):
    data_help = ("tfds:NAME, an image folder or .zip "
                 "(<root>/<split>/<label>/*), or a .npz file")
    split_help = f"split to read (default: {split_default})"
    if per_task:  # eval: --task auto takes each task's data
        data_help += ("; with --task auto, TASK=SPEC once per task, or one "
                      "folder holding an image folder per task "
                      "(<root>/<task>/<split>/<label>/*), or --config")
        split_help = (split_help[:-1]
                      + "; with --config, each task's test split)")
    parser.add_argument("--data", action="append" if per_task else "store",
                        help=data_help)
    parser.add_argument("--split", help=split_help,
                        default=None if per_task else split_default)
    parser.add_argument("--data-dir", help="TFDS data_dir")
    parser.add_argument("--classes", help="comma-separated class subset, in "
                        "the order of the task's labels; default: the "
                        "task's class names from its input contract")
    parser.add_argument("--preprocess", help="auto, unit, none or a "
                        "keras.applications module (vgg16, ...); default: "
                        "the task's input contract (auto without one)")
    parser.add_argument("--on-bad-files", choices=("error", "skip"),
                        default="error", help="image files that cannot be "
                        "decoded: stop and name them (default), or leave "
                        "them out and count them")
    # Default: packnet_tf.data.ImageLimits' (TensorFlow-free --help).
    parser.add_argument("--max-image-pixels", type=int, metavar="N",
                        help="the most pixels one image file may declare (a "
                        "GIF: all its frames); larger ones are bad files, "
                        "never decoded, and (export) the limit of every "
                        "SavedModel request; default 16 megapixels")


_VERBOSE_HELP = ("show TensorFlow's own log lines (C++ logging, tf.function "
                 "retracing warnings), which are kept off by default")


def build_parser():
    """The argument parser of `packnet-tf`.

    `--verbose` is accepted before or after the command's name.

    Returns:
        An `argparse.ArgumentParser`.
    """
    parser = argparse.ArgumentParser(
        prog="packnet-tf",
        description="PackNet for Keras: many tasks in one network, each "
        "task's outputs frozen bit for bit.",
        epilog="Exit codes: 0 ok, 1 verify found a change, 2 bad input, "
        "3 a phase stopped (the model file keeps its last complete state).")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {__version__}")
    parser.add_argument("--verbose", action="store_true", help=_VERBOSE_HELP)
    # SUPPRESS: a command's parser leaves a `--verbose` given before the
    # command's name in place instead of resetting it to False.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true",
                        default=argparse.SUPPRESS, help=_VERBOSE_HELP)
    commands = parser.add_subparsers(dest="command", required=True)

    def add_command(name, **kwargs):
        return commands.add_parser(name, parents=[common], **kwargs)

    demo = add_command("demo", help="pack five digit tasks, export")
    demo.add_argument("--out", default="runs/demo",
                      help="output folder (default: %(default)s)")
    demo.add_argument("--epochs", type=int, default=6,
                      help="training epochs per task (default: %(default)s)")
    demo.add_argument("--finetune-epochs", type=int, default=2,
                      help="fine-tuning epochs per task after pruning "
                      "(default: %(default)s)")
    demo.add_argument("--no-export", action="store_true",
                      help="skip the SavedModel and LiteRT exports")

    train = add_command(
        "train", help="train a config's tasks (resumes where it stopped)")
    train.add_argument("config", help="YAML or JSON run config")
    train.add_argument("--model", help="override the config's model file")
    train.add_argument("--log-dir", help="TensorBoard log folder")
    train.add_argument(
        "--strategy", default="default",
        choices=("default", "mirrored", "multiworker"),
        help="tf.distribute strategy: mirrored = every GPU of this machine; "
             "multiworker = several machines (TF_CONFIG from the "
             "environment; worker 0 writes the model file)")
    train.add_argument("--quiet", action="store_true",
                       help="no Keras progress, only phase summaries")
    train.add_argument("--deterministic", action="store_true",
                       help="TensorFlow op determinism (bit-reproducible "
                       "runs, slower on some devices)")

    evaluate = add_command(
        "eval", help="evaluate one task, or infer the task (--task auto)")
    evaluate.add_argument("model")
    evaluate.add_argument(
        "--task", required=True, help="a task's name, or auto: every "
        "finished task's test data mixed, the task inferred per example or "
        "batch (a confusion table, end-to-end accuracy and accuracy with "
        "the task given)")
    _add_data_args(evaluate, "test", per_task=True)
    evaluate.add_argument("--batch-size", type=int, default=64,
                          help="examples per batch; --per batch: the "
                          "same-task examples that choose one task "
                          "together (default: %(default)s)")
    evaluate.add_argument("--probabilities", action="store_true",
                          help="the task's head outputs probabilities, "
                          "not logits")
    evaluate.add_argument("--config", help="--task auto: read every task's "
                          "data from this run config (its --split)")
    evaluate.add_argument("--per", choices=("example", "batch"),
                          default="example", help="--task auto: choose the "
                          "task per example or per batch (default: "
                          "%(default)s)")
    evaluate.add_argument("--score",
                          choices=("entropy", "confidence", "statistics"),
                          default="entropy", help="--task auto: normalized "
                          "entropy, max probability, or how typical the "
                          "input's activation statistics are of each task "
                          "(default: %(default)s)")
    evaluate.add_argument("--calibrated", action="store_true",
                          help="--task auto: read each task's score as its "
                          "percentile among its own training scores "
                          "(recorded when the task ended)")
    evaluate.add_argument("--reject-threshold", type=float, metavar="S",
                          help="--task auto: answer no task below this "
                          "score in [0, 1]")
    evaluate.add_argument("--json", action="store_true",
                          help="--task auto: print the report as JSON")

    info = add_command("info", help="tasks, states and capacity")
    info.add_argument("model")
    info.add_argument("--plot", help="write the capacity plot (.png/.svg)")
    info.add_argument("--json", action="store_true")

    verify = add_command("verify", help="check finished tasks' "
                         "outputs against their fingerprints")
    verify.add_argument("model")

    export = add_command("export", help="SavedModel / LiteRT files")
    export.add_argument("model")
    export.add_argument("--task", action="append",
                        help="a task to export (repeat; default: all)")
    export.add_argument("--saved-model", metavar="DIR",
                        help="TF Serving base folder")
    export.add_argument("--layout", choices=("per_task", "multi"),
                        default="per_task")
    export.add_argument("--version", type=int, default=1)
    export.add_argument("--tflite", metavar="FILE",
                        help="one LiteRT file (one task, or a signature "
                        "per task)")
    export.add_argument("--tflite-dir", metavar="DIR",
                        help="one LiteRT file per task")
    export.add_argument("--quantize",
                        choices=("dynamic", "float16", "int8"))
    export.add_argument("--sparse", action="store_true")
    export.add_argument("--tflite-inputs", choices=("float", "pixels"),
                        default="float", help="TFLite input: trunk-ready "
                        "floats, or uint8 pixels at the trunk's size "
                        "preprocessed inside the file (integer-only with "
                        "--quantize int8)")
    export.add_argument("--any-task-score", choices=("entropy", "statistics"),
                        default="entropy", help="how the any_task "
                        "signatures (--layout multi, a multi-task --tflite "
                        "file) choose the task: the heads' entropy, or each "
                        "task's input statistics (recorded when it ended)")
    limits = export.add_argument_group(
        "limits of every SavedModel request besides --max-image-pixels, "
        "checked before decoding (recorded in "
        "<version>/assets/image_limits.json)")
    # Defaults: packnet_tf.export.ImageLimits' (TensorFlow-free --help);
    # --max-image-pixels is with the data options.
    limits.add_argument("--max-batch-size", type=int, metavar="N",
                        help="images or examples per request; default 256")
    limits.add_argument("--max-request-bytes", type=int, metavar="N",
                        help="encoded image bytes per request; default 64 "
                        "MiB")
    _add_data_args(export, "train")
    return parser


def _train(args, out):
    from packnet_tf.cli.config import load_config
    from packnet_tf.cli.strategy import make_strategy, worker_model_path

    if args.strategy != "default":
        import_tensorflow(args.verbose)  # the strategy is made with it
    # The strategy first: a multi-worker one must exist before other TF ops.
    strategy, chief, index = make_strategy(args.strategy)
    config = load_config(args.config, model=args.model, log_dir=args.log_dir)
    if not chief:
        # Every worker saves (saving is collective); only the chief's file
        # is the run's, the others write where nothing collides.
        config = load_config(
            args.config, model=worker_model_path(config.model, index),
            log_dir=None)
    # After the config's checks: a bad config answers without TensorFlow.
    tf = import_tensorflow(args.verbose)

    from packnet_tf.cli.runner import train

    if args.deterministic:
        # The command owns its process: a global switch is fine here.
        tf.config.experimental.enable_op_determinism()
    verbose = 0 if args.quiet else (1 if sys.stdout.isatty() else 2)
    train(config, stream=out, verbose=verbose, strategy=strategy)
    return OK


def _demo(args, out):
    import_tensorflow(args.verbose)
    from packnet_tf.cli.demo import run_demo

    run_demo(args.out, epochs=args.epochs,
             finetune_epochs=args.finetune_epochs,
             export=not args.no_export, stream=out)
    return OK


def _model_command(name):
    """The handler of a command that reads a saved model (`commands`)."""

    def handle(args, out):
        import_tensorflow(args.verbose)
        from packnet_tf.cli import commands

        return getattr(commands, name)(args, out)

    return handle


#: Each command's handler; each imports what it needs when it runs.
_HANDLERS = {"demo": _demo, "train": _train,
             "eval": _model_command("evaluate"),
             "info": _model_command("info"),
             "verify": _model_command("verify"),
             "export": _model_command("export")}


def _exit_code(error):
    """The exit code `error` ends the command with, or None (a bug)."""
    for module, name, code in _EXIT_CODES:
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(error, getattr(loaded, name)):
            return code
    return None


def main(argv=None, out=None):
    """Runs `packnet-tf` with `argv`; returns the exit code.

    Args:
        argv: the arguments (default: `sys.argv[1:]`).
        out: where output goes (default stdout).

    Returns:
        The exit code (see the module docstring).

    Raises:
        SystemExit: for `--help`, `--version` and arguments argparse
            refuses (code 2).
    """
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        with quiet_tensorflow(args.verbose):
            return _HANDLERS[args.command](args, out)
    except Exception as error:
        code = _exit_code(error)
        if code is None:
            raise
        kind = "error" if code == BAD_INPUT else "stopped"
        print(f"packnet-tf {args.command}: {kind}: {error}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
