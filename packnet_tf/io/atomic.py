"""Files that are always whole: write beside the target, fsync, rename.

If the process dies (SIGKILL, power loss, a full disk) while writing, the
previous file must still be there, complete. So every file is written next
to its target as `<file>.tmp-<pid><suffix>`, flushed to disk with `fsync`,
and moved over the target with `os.replace`, which is atomic on POSIX and
Windows. Temporary files of processes that died mid-write are removed by the
next write. Folders written by other libraries (SavedModels) are made
durable with `fsync_tree` before their rename. No Keras or TensorFlow here:
the data and export layers use it too.
"""

import contextlib
import json
import os
import pathlib


def fsync_folder(directory):
    """Flushes a folder's entries (a rename into it) to disk.

    Not every OS can open a folder (Windows cannot), and there it is not
    needed: then this does nothing.

    Args:
        directory: the folder.
    """
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path):
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def fsync_tree(directory):
    """Flushes every file and folder under `directory` to disk.

    For a folder written by a library that does not fsync (a SavedModel),
    before it is renamed into place: the rename must not reach the disk
    before the files do.

    Args:
        directory: the root folder.
    """
    for folder, _, files in os.walk(directory, topdown=False):
        for name in files:
            _fsync_file(os.path.join(folder, name))
        fsync_folder(folder)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by another user
        return True
    return True


#: Between a file's name and the writer's pid in its temporary's name.
TEMPORARY_INFIX = ".tmp-"


def is_temporary(name, target_name):
    """Whether file `name` is a temporary of `atomic_path(target_name)`.

    Folders that must hold only known files (an export directory) skip
    these: a process killed mid-write leaves one behind, and the next
    write of `target_name` removes it.

    Args:
        name: a file name (no folder).
        target_name: the final file's name (no folder).

    Returns:
        True when `name` is `<target_name>.tmp-<pid>...`.
    """
    prefix = target_name + TEMPORARY_INFIX
    return name.startswith(prefix) and name[len(prefix):].split(".")[
        0].isdigit()


def _remove_stale_temporaries(path):
    """Deletes `<file>.tmp-<pid>*` left by processes that died mid-write."""
    for stale in path.parent.glob(f"{path.name}{TEMPORARY_INFIX}*"):
        pid = stale.name[len(path.name) + len(TEMPORARY_INFIX):].split(".")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(
                int(pid)):
            with contextlib.suppress(OSError):
                stale.unlink()


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yields a temporary path next to `path`; moves it there on success.

    The caller writes the temporary file; when the block ends without an
    exception the file is fsynced and atomically replaces `path`. On any
    exception (including KeyboardInterrupt) the temporary file is removed
    and `path` is left as it was.

    Args:
        path: the final file.
        suffix: appended to the temporary name (`".keras"` for Keras).

    Yields:
        The temporary `pathlib.Path`.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    tmp = path.with_name(
        f"{path.name}{TEMPORARY_INFIX}{os.getpid()}{suffix}")
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_folder(path.parent)


def write_bytes(path, content, suffix=""):
    """Writes `content` to `path` atomically (see `atomic_path`).

    Args:
        path: the target file.
        content: bytes.
        suffix: appended to the temporary name (see `atomic_path`).
    """
    with atomic_path(path, suffix=suffix) as tmp:
        tmp.write_bytes(content)


def write_text(path, text):
    """Writes `text` to `path` atomically as UTF-8 (see `atomic_path`).

    The bytes are the same on every platform: UTF-8 whatever the locale,
    and no newline translation.

    Args:
        path: the target file.
        text: a str.
    """
    write_bytes(path, text.encode("utf-8"))


def write_json(path, data):
    """Writes `data` as JSON to `path` atomically (see `atomic_path`).

    Args:
        path: the target file.
        data: a JSON-serialisable object.
    """
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
