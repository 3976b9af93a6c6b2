"""The one rule for paths in configs and data specs (no TensorFlow)."""

import os
import pathlib


def resolve_path(value, base_dir=None):
    """Expands `~` and `$VARS` and reads a relative path from `base_dir`.

    Args:
        value: a path (str or `os.PathLike`).
        base_dir: the folder relative paths are read from (a config file's
            folder), or None to leave them relative.

    Returns:
        A normalized `pathlib.Path` ("examples/../runs" becomes "runs";
        symlinks are kept).
    """
    path = pathlib.Path(os.path.expandvars(os.path.expanduser(str(value))))
    if not path.is_absolute() and base_dir is not None:
        path = pathlib.Path(base_dir) / path
    return pathlib.Path(os.path.normpath(path))
