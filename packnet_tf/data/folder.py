"""Task data from an image folder `<root>/<split>/<label>/*`, or a zip of one.

A zip is read in place: its member list is indexed once, the (name, label)
index is shuffled by `tf.data`, and each image's bytes are read from the
archive inside the pipeline (`tf.py_function`) and decoded by
`tf.io.decode_image` in parallel. Why not extract to a cache: a cache
doubles the disk used, must be invalidated when the zip changes and cleaned
up, and extracting 60,000 small files costs more than reading them: a
member read is a few microseconds, the JPEG decode that follows dominates.
The one cost of reading in place is that the pipeline holds Python code and
cannot be serialised (tf.data service, SavedModel), which training does not
need.
"""

import os
import pathlib
import threading
import zipfile

import numpy as np
import tensorflow as tf

from packnet_tf.data.source import (DataError, DataSource, class_positions,
                                    subset_positions)

#: File types `tf.io.decode_image` reads.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
#: Zip members read per Python call.
_ZIP_CHUNK = 128


def _is_image(name):
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(
        IMAGE_EXTENSIONS)


def _index_directory(root, split):
    """`{label: [file paths]}` of `<root>/<split>/<label>/*`."""
    folder = root / split
    if not folder.is_dir():
        return None
    index = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_dir() and not entry.name.startswith("."):
            index[entry.name] = sorted(
                os.path.join(entry.path, f.name) for f in os.scandir(entry)
                if f.is_file() and _is_image(f.name))
    return index


def _index_zip(names, split):
    """`{label: [member names]}` of `[<top>/]<split>/<label>/*` in a zip."""
    index = {}
    for name in names:
        parts = name.split("/")
        if len(parts) < 3 or not _is_image(name):
            continue
        # Accept one optional top-level folder (a zipped `root/` folder).
        for offset in (0, 1):
            if len(parts) == 3 + offset and parts[offset] == split:
                index.setdefault(parts[offset + 1], []).append(name)
    if not index:
        return None
    return {label: sorted(files) for label, files in sorted(index.items())}


class _ZipReader:
    """Reads members of one zip file, one open handle per thread.

    `zipfile.ZipFile` handles are not safe to share between the threads
    `tf.data` maps in parallel, so each OS thread gets its own, kept for
    later calls. (Not `threading.local`: TensorFlow's threads enter Python
    with a fresh thread state on every `py_function` call, which would
    reopen the archive, and re-read its index, for every image.)
    """

    def __init__(self, path):
        self.path = str(path)
        self._handles = {}
        self._lock = threading.Lock()

    def _archive(self):
        thread = threading.get_ident()
        archive = self._handles.get(thread)
        if archive is None:
            archive = zipfile.ZipFile(self.path)
            with self._lock:
                self._handles[thread] = archive
        return archive

    def read(self, name):
        """The bytes of member `name` (a str)."""
        return self._archive().read(name)

    def read_many(self, names):
        """The bytes of every member in a 1-D string tensor `names`."""
        archive = self._archive()
        return tf.constant([archive.read(n.decode()) for n in names.numpy()],
                           dtype=tf.string)


class ImageFolderSource(DataSource):
    """Images in `<root>/<split>/<label>/*`, from a folder or a `.zip`.

    Class names are the label folders of the train split, sorted, unless
    `classes` selects some (relabelled 0..k-1 in the given order).

    Args:
        root: the folder, or a `.zip` file holding `<split>/<label>/*`
            (optionally under one top-level folder).
        classes: optional list of label-folder names (or ids into the
            sorted list) to keep, in the order of their new labels.
        train_split, test_split: split folder names (test may be None).

    Raises:
        DataError: if `root` is missing, a split folder is missing or empty,
            or a class is unknown.

    Example:

    >>> source = ImageFolderSource("cifar10_jpg.zip",
    ...                            classes=["airplane", "automobile"])
    """

    encoded = True

    def __init__(self, root, classes=None, train_split="train",
                 test_split="test"):
        self.root = pathlib.Path(root)
        self.description = f"image folder {str(root)!r}"
        self.train_split, self.test_split = train_split, test_split
        self._zip = None
        if self.root.is_file() and zipfile.is_zipfile(self.root):
            self._zip = _ZipReader(self.root)
            with zipfile.ZipFile(self.root) as archive:
                infos = archive.infolist()
            names = [info.filename for info in infos]
            self._members = {i.filename: (i.CRC, i.file_size) for i in infos}
            indexes = {s: _index_zip(names, s) for s in self.splits}
        elif self.root.is_dir():
            indexes = {s: _index_directory(self.root, s) for s in self.splits}
        else:
            what = ("not a zip file" if self.root.exists()
                    else "no such folder or file")
            raise DataError(
                f"{str(root)!r}: {what}. Expected an image folder "
                "<root>/<split>/<label>/* or a .zip of one.", key="folder")
        for split, index in indexes.items():
            if not index:
                raise DataError(
                    f"{self.description} has no split folder {split!r} with "
                    f"label folders of images ({IMAGE_EXTENSIONS}) in it.",
                    key="train_split" if split == train_split
                    else "test_split")
        available = list(indexes[train_split])
        positions = class_positions(classes, available, self.description)
        self.class_names = tuple(available[p] for p in positions)
        self._files = {}
        for split, index in indexes.items():
            files, labels = [], []
            for label, name in enumerate(self.class_names):
                found = index.get(name, [])
                if not found:
                    raise DataError(
                        f"{self.description}: class {name!r} has no images "
                        f"in split {split!r}.", key="classes")
                files += found
                labels += [label] * len(found)
            self._files[split] = (np.array(files),
                                  np.array(labels, dtype="int32"))
        self.example_shape = (None, None, None)

    def num_examples(self, split):
        return len(self._files[split][1])

    def take_subset(self, split, count, seed=0):
        files, labels = self._files[split]
        keep = subset_positions(len(labels), count, seed)
        self._files[split] = (files[keep], labels[keep])

    # -- what `packnet_tf.data.check_source` reads --------------------------

    def _name(self, file):
        """A file's name in messages: relative to the folder, or a member."""
        return file if self._zip else os.path.relpath(file, self.root)

    def example_fingerprints(self, split):
        files = self._files[split][0]
        if self._zip is not None:
            stat = os.stat(self.root)
            archive = (f"{os.path.abspath(self.root)}|{stat.st_size}|"
                       f"{stat.st_mtime_ns}")
            return [(str(f), f"{archive}|{f}|{self._members[f][0]}|"
                     f"{self._members[f][1]}") for f in files]
        found = []
        for file in files:
            try:
                stat = os.stat(file)
                print_ = f"{file}|{stat.st_size}|{stat.st_mtime_ns}"
            except OSError:  # gone: never cached, reported by the read
                print_ = f"{file}|missing"
            found.append((self._name(file), print_))
        return found

    def _path(self, name):
        return name if self._zip else os.path.join(self.root, name)

    def read_bytes(self, name):
        if self._zip is not None:
            return self._zip.read(name)
        with open(self._path(name), "rb") as f:
            return f.read()

    def read_examples(self, names):
        names = list(names)
        if self._zip is None:
            paths = [self._path(n) for n in names]
            return tf.data.Dataset.from_tensor_slices(
                (tf.constant(names, tf.string),
                 tf.constant(paths, tf.string))).map(
                    lambda n, p: (n, tf.io.read_file(p)),
                    num_parallel_calls=tf.data.AUTOTUNE)

        def members():
            for name in names:
                try:
                    data = self._zip.read(name)
                except Exception:  # noqa: BLE001 (bad CRC, truncated...)
                    # Empty bytes never decode: the member is reported.
                    data = b""
                yield name, data

        return tf.data.Dataset.from_generator(
            members, output_signature=(tf.TensorSpec((), tf.string),
                                       tf.TensorSpec((), tf.string)))

    def exclude(self, split, names):
        drop = {self._path(n) for n in names}
        files, labels = self._files[split]
        keep = np.array([f not in drop for f in files], dtype=bool)
        emptied = sorted(set(labels) - set(labels[keep]))
        if emptied:
            raise DataError(
                f"{self.description}: every image of class "
                f"{self.class_names[emptied[0]]!r} in split {split!r} is "
                "bad; none would be left to train on. Replace them.",
                key="classes")
        self._files[split] = (files[keep], labels[keep])

    def _read_zip(self, names, labels):
        data = tf.py_function(self._zip.read_many, [names], tf.string)
        return tf.ensure_shape(data, names.shape), labels

    def dataset(self, split, shuffle=False, seed=0):
        files, labels = self._files[split]
        dataset = tf.data.Dataset.from_tensor_slices((files, labels))
        if shuffle:
            # Shuffling names, not decoded images: the whole split fits.
            dataset = dataset.shuffle(len(labels), seed=seed,
                                      reshuffle_each_iteration=True)
        if self._zip is None:
            return dataset.map(lambda f, y: (tf.io.read_file(f), y),
                               num_parallel_calls=tf.data.AUTOTUNE,
                               deterministic=True)
        # One Python call per chunk of images, not per image: the call's
        # overhead (the GIL, eager tensors) is larger than a member read.
        # (Re-batching hides the length: state it, so Keras knows the
        # epoch's steps.)
        return dataset.batch(_ZIP_CHUNK).map(
            self._read_zip, num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True).unbatch().apply(
                tf.data.experimental.assert_cardinality(len(labels)))
