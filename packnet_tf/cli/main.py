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
"""

import argparse
import sys

#: Exit codes.
OK, CHANGED, BAD_INPUT, STOPPED = 0, 1, 2, 3


def _add_data_args(parser, split_default):
    parser.add_argument("--data", help="tfds:NAME, an image folder or .zip "
                        "(<root>/<split>/<label>/*), or a .npz file")
    parser.add_argument("--split", default=split_default,
                        help="split to read (default: %(default)s)")
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


def build_parser():
    """The argument parser of `packnet-tf`."""
    parser = argparse.ArgumentParser(
        prog="packnet-tf",
        description="PackNet for Keras: many tasks in one network, each "
        "task's outputs frozen bit for bit.",
        epilog="Exit codes: 0 ok, 1 verify found a change, 2 bad input, "
        "3 a phase stopped (the model file keeps its last complete state).")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="pack five digit tasks, export")
    demo.add_argument("--out", default="runs/demo",
                      help="output folder (default: %(default)s)")
    demo.add_argument("--epochs", type=int, default=6)
    demo.add_argument("--finetune-epochs", type=int, default=2)
    demo.add_argument("--no-export", action="store_true")

    train = commands.add_parser(
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

    evaluate = commands.add_parser("eval", help="evaluate one task")
    evaluate.add_argument("model")
    evaluate.add_argument("--task", required=True)
    _add_data_args(evaluate, "test")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--probabilities", action="store_true",
                          help="the task's head outputs probabilities, "
                          "not logits")

    info = commands.add_parser("info", help="tasks, states and capacity")
    info.add_argument("model")
    info.add_argument("--plot", help="write the capacity plot (.png/.svg)")
    info.add_argument("--json", action="store_true")

    verify = commands.add_parser("verify", help="check finished tasks' "
                                 "outputs against their fingerprints")
    verify.add_argument("model")

    export = commands.add_parser("export", help="SavedModel / LiteRT files")
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
    _add_data_args(export, "train")
    return parser


def _train(args, out):
    from packnet_tf.cli.config import load_config
    from packnet_tf.cli.strategy import make_strategy, worker_model_path

    # The strategy first: a multi-worker one must exist before other TF ops.
    strategy, chief, index = make_strategy(args.strategy)
    config = load_config(args.config, model=args.model, log_dir=args.log_dir)
    if not chief:
        # Every worker saves (saving is collective); only the chief's file
        # is the run's, the others write where nothing collides.
        config = load_config(
            args.config, model=worker_model_path(config.model, index),
            log_dir=None)
    import tensorflow as tf

    from packnet_tf.cli.runner import train

    if args.deterministic:
        # The command owns its process: a global switch is fine here.
        tf.config.experimental.enable_op_determinism()
    verbose = 0 if args.quiet else (1 if sys.stdout.isatty() else 2)
    train(config, stream=out, verbose=verbose, strategy=strategy)
    return OK


def _demo(args, out):
    from packnet_tf.cli.demo import run_demo

    run_demo(args.out, epochs=args.epochs,
             finetune_epochs=args.finetune_epochs,
             export=not args.no_export, stream=out)
    return OK


def main(argv=None, out=None):
    """Runs `packnet-tf` with `argv`; returns the exit code.

    Args:
        argv: the arguments (default: `sys.argv[1:]`).
        out: where output goes (default stdout).

    Returns:
        The exit code (see the module docstring).
    """
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    from packnet_tf.cli import commands
    from packnet_tf.cli.config import ConfigError
    from packnet_tf.cli.strategy import StrategyError

    handlers = {"demo": _demo, "train": _train, "eval": commands.evaluate,
                "info": commands.info, "verify": commands.verify,
                "export": commands.export}
    try:
        return handlers[args.command](args, out)
    except (ConfigError, commands.UsageError, StrategyError) as error:
        print(f"packnet-tf {args.command}: error: {error}", file=sys.stderr)
        return BAD_INPUT
    except Exception as error:
        from packnet_tf.checkpoint import RunBusyError
        from packnet_tf.cli.progress import PhaseFailed

        if isinstance(error, (PhaseFailed, RunBusyError)):
            print(f"packnet-tf {args.command}: stopped: {error}",
                  file=sys.stderr)
            return STOPPED
        raise


if __name__ == "__main__":
    sys.exit(main())
