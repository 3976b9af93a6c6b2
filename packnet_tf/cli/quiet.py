"""A quiet `packnet-tf`: TensorFlow's own log lines off the terminal.

TensorFlow logs from C++ (oneDNN and CUDA notices while it loads, the
TFLite converter's progress) and warns from Python about tf.function
retracing. A command user reads none of it as the command's output. The
`packnet-tf` entry point (never the library: importing `packnet_tf`
changes no global state) runs its commands under `quiet_tensorflow` and
imports TensorFlow with `import_tensorflow`; `--verbose` turns both off.
"""

import contextlib
import logging
import os
import re
import sys
import tempfile

#: TensorFlow's C++ log level of a quiet command (unless the user set
#: TF_CPP_MIN_LOG_LEVEL): fatal messages only. TensorFlow's C++ errors on a
#: working run are noise (no CUDA driver on a CPU machine); what fails
#: reaches the user as a Python exception with its message.
QUIET_CPP_LOG_LEVEL = 3
#: The Python loggers a quiet command sets to ERROR: TensorFlow's, which
#: warns about tf.function retracing (Keras' predict on new shapes).
QUIET_LOGGERS = ("tensorflow",)
#: A C++ log line of TensorFlow (absl): severity and date (MMDD), time
#: (`00:00:<epoch seconds>` before absl's set-up), thread, file:line.
_CPP_LOG_LINE = re.compile(rb"^([IWEF])\d{4} [\d:.]+ +\d+ \S+:\d+\] ")
#: What absl prints once before the log lines that precede its set-up.
_ABSL_BANNER = (b"WARNING: All log messages before absl::InitializeLog() "
                b"is called are written to STDERR")


def _cpp_log_level():
    """TensorFlow's C++ log level in this process (0 unless set)."""
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def _is_hidden(line, level):
    """Whether `line` is a C++ log line below `level` (or absl's banner)."""
    if line.rstrip(b"\r\n") == _ABSL_BANNER:
        return level > 0
    match = _CPP_LOG_LINE.match(line)
    return bool(match) and "IWEF".index(match.group(1).decode()) < level


@contextlib.contextmanager
def filtered_stderr(level):
    """Drops C++ log lines below `level` from the process's stderr.

    Catches the file descriptor (what C++ code writes to), not only
    `sys.stderr`, in a file; when the block ends the lines below `level`
    are dropped and every other line is written out, in order.

    Args:
        level: the lowest C++ severity kept (0 info, 1 warning, 2 error,
            3 fatal), as TF_CPP_MIN_LOG_LEVEL counts.

    Yields:
        None.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as caught:
            os.dup2(caught.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                caught.seek(0)
                kept = b"".join(line for line in caught
                                if not _is_hidden(line, level))
                if kept:
                    os.write(2, kept)
    finally:
        os.close(saved)


def import_tensorflow(verbose=False):
    """Imports TensorFlow; unless `verbose`, without its loading chatter.

    TensorFlow's libraries log while they load (oneDNN, CUDA drivers)
    before their logging has read TF_CPP_MIN_LOG_LEVEL, straight to the
    process's stderr: the import runs under `filtered_stderr` at that
    level. Later C++ lines follow the variable itself.

    Args:
        verbose: import plainly, every line shown.

    Returns:
        The `tensorflow` module.
    """
    level = _cpp_log_level()
    if verbose or level <= 0 or "tensorflow" in sys.modules:
        import tensorflow as tf

        return tf
    with filtered_stderr(level):
        import tensorflow as tf
    return tf


@contextlib.contextmanager
def quiet_tensorflow(verbose=False):
    """Keeps TensorFlow's log lines off the terminal while a command runs.

    The command owns its process and may do this; the library never does
    (importing it changes no global state). Unless `verbose`: sets
    TF_CPP_MIN_LOG_LEVEL to `QUIET_CPP_LOG_LEVEL` if the user has not set
    it (a user's own value is kept) - it must be set before TensorFlow is
    imported to count - and sets the `QUIET_LOGGERS` to ERROR. Both are put
    back when the command returns, for callers of `main` from Python.

    Args:
        verbose: change nothing.

    Yields:
        None.
    """
    if verbose:
        yield
        return
    own_level = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    if own_level:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = str(QUIET_CPP_LOG_LEVEL)
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        if own_level:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
