"""Model files that are always whole: atomic saves and checked loads.

A training run writes its model after every phase. If the process dies
(SIGKILL, power loss, a full disk) while writing, the previous file must
still be there, complete: every file is written beside its target, fsynced
and renamed over it (`packnet_tf.io.atomic`). (Keras' public `save_model`
insists on the `.keras` suffix, hence the suffix after the pid.)

Loading checks the archive before Keras reads it, so that a truncated or
foreign file gives one clear sentence instead of a stack trace from deep in
Keras' deserialisation.
"""

import hashlib
import pathlib
import zipfile

import keras

from packnet_tf.io.atomic import atomic_path, write_json, write_text

__all__ = ["CheckpointError", "RunBusyError", "RunLock", "atomic_path",
           "check_archive", "file_digest", "load_model", "save_model",
           "write_json", "write_text"]

#: Members every `.keras` archive has (see `keras.saving.save_model`).
KERAS_MEMBERS = ("config.json", "metadata.json", "model.weights.h5")


class CheckpointError(ValueError):
    """A model file is missing, truncated, corrupt, or not a PackNet model."""


class RunBusyError(RuntimeError):
    """Another process holds the lock of a model file (see `RunLock`)."""


def save_model(model, path, include_optimizer=True):
    """Saves `model` to the `.keras` file `path` atomically.

    Args:
        model: a Keras model (a `PackNetModel`).
        path: the target, ending in `.keras`.
        include_optimizer: whether the optimizer's state goes in the file.
            PackNet starts every phase with a fresh optimizer, so a run
            does not need it; Adam's slots would triple the file.

    Returns:
        `path` as a `pathlib.Path`.

    Raises:
        ValueError: if `path` does not end in `.keras`.
        OSError: if writing fails (e.g. a full disk); `path` is unchanged.
    """
    path = pathlib.Path(path)
    if path.suffix != ".keras":
        raise ValueError(
            "Expected a model path ending in '.keras' (the Keras 3 format). "
            f"Received: {str(path)!r}"
        )
    optimizer = getattr(model, "optimizer", None)
    with atomic_path(path, suffix=".keras") as tmp:
        detach = not include_optimizer and optimizer is not None
        try:
            if detach:
                # Keras 3 saves whatever `model.optimizer` holds and has no
                # `include_optimizer` for .keras files: detach it meanwhile.
                model.optimizer = None
            model.save(tmp)
        finally:
            if detach:
                model.optimizer = optimizer
    return path


def file_digest(path):
    """The SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_archive(path):
    """Checks that `path` is a complete `.keras` archive, without loading it.

    Args:
        path: the file.

    Raises:
        CheckpointError: with the reason, if it is missing, not a zip file,
            truncated, fails its checksums, or lacks a Keras member.
    """
    path = pathlib.Path(path)
    fix = (
        "If a copy was interrupted, copy it again; a `packnet-tf train` "
        "run never leaves a half-written model, so re-running it resumes "
        "from the last complete state."
    )
    if not path.exists():
        raise CheckpointError(f"No model file at {str(path)!r}.")
    if path.is_dir() or path.suffix != ".keras":
        raise CheckpointError(
            f"{str(path)!r} is not a .keras model file (expected a file "
            "written by `model.save('....keras')`)."
        )
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{str(path)!r} is not a complete .keras file: it is not a zip "
            f"archive (truncated or overwritten, {path.stat().st_size} "
            f"bytes). {fix}"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [m for m in KERAS_MEMBERS if m not in names]
            bad = None if missing else archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise CheckpointError(
            f"{str(path)!r} is a corrupt .keras file ({error}). {fix}"
        ) from error
    if missing:
        raise CheckpointError(
            f"{str(path)!r} is a zip file but not a Keras model: it lacks "
            f"{', '.join(missing)}."
        )
    if bad is not None:
        raise CheckpointError(
            f"{str(path)!r} is a corrupt .keras file: member {bad!r} fails "
            f"its checksum. {fix}"
        )


def load_model(path, packnet_only=True):
    """Loads a `PackNetModel` from a `.keras` file, checking it first.

    Args:
        path: the file.
        packnet_only: whether any other Keras model is an error.

    Returns:
        The model (a `PackNetModel` unless `packnet_only` is False), not
        compiled.

    Raises:
        CheckpointError: if the file is missing, truncated, corrupt, not a
            Keras model or (with `packnet_only`) not a `PackNetModel`.
    """
    from packnet_tf.core.model import PackNetModel

    check_archive(path)
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types on bad content
        first = str(error).strip().splitlines()[0] if str(error) else ""
        raise CheckpointError(
            f"{str(path)!r} could not be loaded as a Keras model "
            f"({type(error).__name__}: {first[:300]}). It may come from "
            "another version of packnet_tf or Keras."
        ) from error
    if packnet_only and not isinstance(model, PackNetModel):
        raise CheckpointError(
            f"{str(path)!r} holds a {type(model).__name__}, not a "
            "packnet_tf PackNetModel. Convert it with `packnet_tf.convert.converter` "
            "first."
        )
    return model


class RunLock:
    """An exclusive lock on a run's model file, released if the process dies.

    Two processes writing one run would interleave phases; `fcntl.flock` is
    dropped by the kernel when its holder dies, so a killed run never
    leaves a stale lock. (No-op where `fcntl` does not exist.)

    Args:
        model_path: the model file; the lock is `<model_path>.lock`.

    Raises:
        RunBusyError: on entering, if another process holds the lock.
    """

    def __init__(self, model_path):
        model_path = pathlib.Path(model_path)
        self.path = model_path.with_name(model_path.name + ".lock")
        self._file = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.close()
            raise RunBusyError(
                f"Another process is training {self.path.with_suffix('')}: "
                "wait for it to finish (or stop it) and re-run.") from None
        return self

    def __exit__(self, *exc):
        if self._file is not None:
            self._file.close()
