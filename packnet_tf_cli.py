"""The `packnet-tf` command's launcher (setup.py's console script).

`import packnet_tf` registers every Keras class of the library, and so
imports TensorFlow (about 3 s), so that `keras.saving.load_model` works
after a plain import. The command must not pay that to answer `--help`,
`--version` or a config error, and must set TensorFlow's log level before
TensorFlow loads. A process started here is the command's own: the package
sees this module in `sys.modules` and leaves its classes to be imported by
the command paths that read or build models.

Run: `packnet-tf ...` or `python -m packnet_tf_cli ...`.
"""

import sys

#: The module name `packnet_tf/__init__.py` looks for.
NAME = "packnet_tf_cli"


def main(argv=None):
    """Runs `packnet-tf` (see `packnet_tf.cli.main.main`).

    Args:
        argv: the arguments (default: the command line's).

    Returns:
        The exit code.
    """
    # Also when run as `python -m packnet_tf_cli` (then named __main__).
    sys.modules.setdefault(NAME, sys.modules[__name__])
    from packnet_tf.cli.main import main as run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
