"""Image files that cannot be decoded, found before anything trains.

A truncated JPEG in a folder of 50,000 good ones stops `fit` when the
shuffle reaches it, possibly hours into a run, with a TensorFlow error that
names no file. `check_source` decodes every encoded example of a source
once, before training, with the decoder the training pipeline uses
(`DataSource.decode`), in parallel with `tf.data`: a file is reported bad
exactly when training would fail on it. Files found good are remembered in
an optional cache, keyed by what identifies their bytes (path, size and
modification time; for a zip member the archive's size and time and the
member's CRC), so a resumed run checks only files that are new or changed.

Sources that do not hold encoded images (arrays) check their values when
they are built (`packnet_tf.data.arrays`).
"""

import dataclasses
import json
import pathlib
import re

import tensorflow as tf

from packnet_tf.data.options import ON_BAD_FILES
from packnet_tf.data.source import DataError
from packnet_tf.io.atomic import write_json

#: Bad files named in a message.
SHOWN = 10
#: Format of the cache file.
_CACHE_FORMAT = 1


class BadFilesError(DataError):
    """Files of a source that cannot be decoded (`on_bad_files="error"`).

    Attributes:
        report: the `CheckReport`.
    """

    def __init__(self, message, report):
        super().__init__(message, key="on_bad_files")
        self.report = report


def validate_on_bad_files(value):
    """Returns `value` if it is one of `ON_BAD_FILES`.

    Raises:
        ValueError: otherwise.
    """
    if value not in ON_BAD_FILES:
        raise ValueError(
            f"Expected `on_bad_files` to be one of {list(ON_BAD_FILES)} "
            "('error': stop before training and name the files; 'skip': "
            f"leave them out and count them). Received: {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class SplitCheck:
    """What the check found in one split.

    Attributes:
        split: the split's name.
        total: examples checked (before any were left out).
        bad: names of the examples that cannot be decoded, in the
            source's order (paths relative to an image folder, zip member
            names, TFDS example ids).
        reason: why the first bad file failed (one line), when known.
    """

    split: str
    total: int
    bad: tuple = ()
    reason: str = None


@dataclasses.dataclass(frozen=True)
class CheckReport:
    """What `check_source` found, split by split.

    Attributes:
        source: the source's description.
        splits: `SplitCheck`s in the source's split order (empty for
            sources without encoded images).
        skipped: whether bad files were left out of the source.
    """

    source: str
    splits: tuple = ()
    skipped: bool = False

    @property
    def num_bad(self):
        """Bad files in all splits."""
        return sum(len(s.bad) for s in self.splits)

    def counts(self):
        """`{split: number of bad files}` for splits that have some."""
        return {s.split: len(s.bad) for s in self.splits if s.bad}

    def as_dict(self):
        """A JSON-friendly summary: per split the count and first names."""
        return {s.split: {"count": len(s.bad), "checked": s.total,
                          "first": list(s.bad[:SHOWN])}
                for s in self.splits if s.bad}

    def summary(self):
        """One line: the bad files per split, the first `SHOWN` named."""
        parts, shown = [], 0
        for s in self.splits:
            if not s.bad:
                continue
            names = list(s.bad[:max(SHOWN - shown, 0)])
            shown += len(names)
            more = len(s.bad) - len(names)
            listed = ", ".join(names) + (f" and {more} more" if more else "")
            parts.append(f"split {s.split!r}: {len(s.bad)} of {s.total} "
                         f"({listed})")
        first = next((s for s in self.splits if s.bad), None)
        reason = (f"; the first fails with: {first.reason}"
                  if first is not None and first.reason else "")
        return "; ".join(parts) + reason


class CheckCache:
    """Fingerprints of files already found good, kept in a JSON file.

    Only what one run sees is kept: `save()` writes the fingerprints looked
    up or added since loading, so entries of removed or changed files do
    not pile up.

    Args:
        path: the JSON file (created on `save()`), or None for a cache that
            lives only in memory.
    """

    def __init__(self, path=None):
        self.path = None if path is None else pathlib.Path(path)
        self._known = set()
        self._seen = set()
        if self.path is not None:
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError):
                data = {}
            if isinstance(data, dict) and data.get("format") == (
                    _CACHE_FORMAT):
                self._known = set(data.get("good", []))

    def __contains__(self, fingerprint):
        if fingerprint in self._known:
            self._seen.add(fingerprint)
            return True
        return False

    def add(self, fingerprints):
        """Records files found good."""
        self._known.update(fingerprints)
        self._seen.update(fingerprints)

    def save(self):
        """Writes the fingerprints seen by this run (atomically)."""
        if self.path is not None:
            write_json(self.path, {"format": _CACHE_FORMAT,
                                   "good": sorted(self._seen)})


def _first_line(error):
    text = getattr(error, "message", None) or str(error)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else type(error).__name__
    # TensorFlow wraps messages in the op's function node and name.
    line = line.split("}} ", 1)[-1]
    return re.sub(r"\s*\[Op:\w+\].*$", "", line).strip()


def _why(source, name, channels):
    """Why one file does not decode (eager; for the message only)."""
    try:
        data = source.read_bytes(name)
        source.decode(tf.constant(data), channels)
    except Exception as error:  # any failure is the reason to show
        return _first_line(error)
    return None


def _decodable(source, encoded, channels):
    """Names of the `(name, bytes)` examples of `encoded` that decode."""
    def decode(name, data):
        image = source.decode(data, channels)
        # A value that needs every pixel: with a static shape (TFDS sets
        # one) an op on the shape alone lets the graph drop the decode.
        return name, tf.reduce_max(image)

    checked = encoded.map(decode, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=False).ignore_errors()
    good = set()
    for names, _ in checked.batch(4096):
        good.update(n.decode() for n in names.numpy())
    return good


def _check_split(source, split, channels, cache):
    files = source.example_fingerprints(split)
    if files is None:  # no file identities: decode every example
        names = []
        for batch in source.encoded_examples(split).map(
                lambda name, data: name).batch(4096):
            names.extend(n.decode() for n in batch.numpy())
        good = _decodable(source, source.encoded_examples(split), channels)
        return SplitCheck(split, len(names),
                          tuple(n for n in names if n not in good))
    key = f"channels={channels}|"
    todo = [(n, key + f) for n, f in files if (key + f) not in cache]
    good = (_decodable(source, source.read_examples([n for n, _ in todo]),
                       channels) if todo else set())
    cache.add([f for n, f in todo if n in good])
    bad = tuple(n for n, _ in todo if n not in good)
    return SplitCheck(split, len(files), bad,
                      _why(source, bad[0], channels) if bad else None)


def check_source(source, channels=None, on_bad_files="error", cache=None,
                 task=None):
    """Decodes every encoded example of `source` once; names the bad ones.

    Args:
        source: a `DataSource`. Sources without encoded images pass as
            they are (their values are checked when they are built).
        channels: the channel count the pipeline decodes to (a
            `FitPlan.decode_channels`), or None for the file's own.
        on_bad_files: `"error"` raises `BadFilesError` naming the first
            bad files of each split; `"skip"` leaves them out of `source`
            (so its `dataset()` and `num_examples()` no longer count them)
            and reports them.
        cache: an optional `CheckCache` (or the path of its JSON file):
            files it holds are not decoded again; files found good are
            added and the cache is saved.
        task: the task's name, for the message.

    Returns:
        A `CheckReport`.

    Raises:
        BadFilesError: with `on_bad_files="error"`, if any file cannot be
            decoded; `source` is left unchanged.
        ValueError: for an unknown `on_bad_files`.

    Example:

    >>> source = data.from_spec("photos/")
    >>> report = data.check_source(source, channels=3, on_bad_files="skip")
    >>> report.counts()
    {'train': 2}
    """
    validate_on_bad_files(on_bad_files)
    if not source.encoded:
        return CheckReport(source.description)
    if not isinstance(cache, CheckCache):
        cache = CheckCache(cache)
    splits = tuple(_check_split(source, split, channels, cache)
                   for split in source.splits)
    cache.save()
    report = CheckReport(source.description, splits,
                         skipped=on_bad_files == "skip")
    if report.num_bad and on_bad_files == "error":
        who = f"task {task!r}: " if task else ""
        raise BadFilesError(
            f"{who}{report.num_bad} file(s) of {source.description} cannot "
            f"be decoded as images: {report.summary()}. Replace or delete "
            "them, or set `on_bad_files: skip` to train without them.",
            report)
    for split in splits:
        if split.bad:
            source.exclude(split.split, split.bad)
    return report
