"""Task data from NumPy arrays, `.npz` files and `tf.data` datasets."""

import numpy as np
import tensorflow as tf

from packnet_tf.data.source import (DataError, DataSource, class_positions,
                                    labelled, subset_positions)


class ArraySource(DataSource):
    """Task data from NumPy arrays, one `(x, y)` pair per split.

    Args:
        splits: dict `{split name: (x, y)}`; `y` holds integer labels.
        class_names: names of the labels 0..n-1 (default: `"0"`, `"1"`, ...
            up to the largest label).
        classes: optional subset of classes (names or ids), relabelled
            0..k-1 in this order.
        train_split: the split to train on.
        test_split: the split to evaluate on, or None.
        description: a name for messages.
        array_names: optional `{split: (x name, y name)}` for messages
            (the keys of a `.npz` file).

    Raises:
        DataError: on mismatched lengths, non-integer labels, NaN or
            infinite values, examples whose shapes differ between splits,
            test labels of classes the train split lacks (without
            `class_names`), or a bad class subset.
    """

    def __init__(self, splits, class_names=None, classes=None,
                 train_split="train", test_split="test",
                 description="arrays", array_names=None):
        self.description = description
        self.train_split, self.test_split = train_split, test_split
        names = array_names or {}
        arrays = {}
        for split in self.splits:
            if split not in splits:
                raise DataError(
                    f"{description} has no split {split!r}. Available: "
                    f"{sorted(splits)}.",
                    key="train_split" if split == train_split
                    else "test_split")
            x, y = (np.asarray(a) for a in splits[split])
            if len(x) != len(y):
                raise DataError(
                    f"{description}: split {split!r} has {len(x)} examples "
                    f"but {len(y)} labels.")
            if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
                raise DataError(
                    f"{description}: expected integer class labels of shape "
                    f"(n,) in split {split!r}. Received: dtype {y.dtype}, "
                    f"shape {y.shape}.")
            x_name = names.get(split, (f"x of split {split!r}",))[0]
            _check_values(x, x_name, description)
            arrays[split] = (x, y)
        _check_shapes(arrays, names, description)
        if class_names is None:
            # The train split defines the classes; a test label beyond them
            # is a class the head would never have learned.
            train_y = arrays[train_split][1]
            top = int(train_y.max()) + 1 if len(train_y) else 0
            for split, (_, y) in arrays.items():
                extra = sorted({int(v) for v in y[y >= top]})
                if extra:
                    y_name = names.get(split, (None, f"y of split "
                                               f"{split!r}"))[1]
                    raise DataError(
                        f"{description}: {y_name} has label(s) "
                        f"{extra[:10]} that never occur in split "
                        f"{train_split!r} (labels 0..{top - 1}). Store "
                        "`class_names` in the file, or fix the labels.")
            class_names = [str(i) for i in range(top)]
        class_names = [str(n) for n in class_names]
        positions = class_positions(classes, class_names, description)
        lookup = np.full(max(len(class_names), 1), -1, dtype=np.int64)
        lookup[positions] = np.arange(len(positions))
        self._arrays = {}
        for split, (x, y) in arrays.items():
            if len(y) and (y.min() < 0 or y.max() >= len(class_names)):
                raise DataError(
                    f"{description}: split {split!r} has labels from "
                    f"{y.min()} to {y.max()} but {len(class_names)} class "
                    "names.")
            new = lookup[y] if len(y) else y
            keep = new >= 0
            self._arrays[split] = (x[keep], new[keep].astype("int32"))
        self.class_names = tuple(class_names[p] for p in positions)
        self.example_shape = tuple(arrays[train_split][0].shape[1:])

    def num_examples(self, split):
        return len(self._arrays[split][1])

    def take_subset(self, split, count, seed=0):
        x, y = self._arrays[split]
        keep = subset_positions(len(y), count, seed)
        self._arrays[split] = (x[keep], y[keep])

    def dataset(self, split, shuffle=False, seed=0):
        x, y = self._arrays[split]
        dataset = tf.data.Dataset.from_tensor_slices((x, y))
        if shuffle:
            dataset = dataset.shuffle(len(y), seed=seed,
                                      reshuffle_each_iteration=True)
        return dataset


class DatasetSource(DataSource):
    """Task data from `tf.data` datasets of single `(x, y)` examples.

    Args:
        splits: dict `{split name: tf.data.Dataset}` of unbatched examples.
        num_classes: the number of classes (labels 0..num_classes-1), or
        class_names: their names.
        classes: optional subset (names or ids), relabelled 0..k-1.
        train_split, test_split: split names (test may be None).
        shuffle_buffer: examples held for shuffling.
        description: a name for messages.

    Raises:
        DataError: if neither `num_classes` nor `class_names` is given, or
            a dataset does not yield `(x, y)` pairs.
    """

    def __init__(self, splits, num_classes=None, class_names=None,
                 classes=None, train_split="train", test_split="test",
                 shuffle_buffer=10_000, description="tf.data"):
        self.description = description
        self.train_split, self.test_split = train_split, test_split
        if class_names is None:
            if num_classes is None:
                raise DataError(
                    f"{description}: pass `num_classes` or `class_names`; a "
                    "dataset's classes cannot be known without reading it.")
            class_names = [str(i) for i in range(int(num_classes))]
        class_names = [str(n) for n in class_names]
        self._positions = class_positions(classes, class_names, description)
        self.class_names = tuple(class_names[p] for p in self._positions)
        self._subset = classes is not None
        self._datasets = {}
        for split in self.splits:
            if split not in splits:
                raise DataError(f"{description} has no split {split!r}. "
                                f"Available: {sorted(splits)}.")
            spec = splits[split].element_spec
            if not isinstance(spec, tuple) or len(spec) != 2:
                raise DataError(
                    f"{description}: expected a dataset of (x, y) pairs in "
                    f"split {split!r}. Received elements {spec}.")
            self._datasets[split] = splits[split]
        self.example_shape = tuple(
            self._datasets[train_split].element_spec[0].shape)
        self.shuffle_buffer = shuffle_buffer

    def dataset(self, split, shuffle=False, seed=0):
        return labelled(self._datasets[split],
                        self._positions if self._subset else None,
                        shuffle, self.shuffle_buffer, seed)


def _check_values(x, name, description):
    """Raises a `DataError` for NaN or infinite values in float examples."""
    if not np.issubdtype(x.dtype, np.floating) or not x.size:
        return
    finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise DataError(
            f"{description}: {name} has NaN or infinite values in "
            f"{len(bad)} example(s) (first at index {bad[0]}). Clean or "
            "drop those examples.")


def _check_shapes(arrays, names, description):
    """Raises a `DataError` when splits hold examples of other shapes."""
    shapes = {split: tuple(x.shape[1:]) for split, (x, _) in arrays.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(
            f"{names.get(split, (f'split {split!r}',))[0]} {shape}"
            for split, shape in shapes.items())
        raise DataError(
            f"{description}: the splits hold examples of different shapes "
            f"({listed}). Every split must have the same example shape.")


def npz_source(path, classes=None, train_split="train", test_split="test",
               x_key="x_{split}", y_key="y_{split}"):
    """Task data from a `.npz` file of arrays.

    The file holds `x_train`, `y_train`, `x_test`, `y_test` (the key
    patterns are configurable) and optionally `class_names`.

    Args:
        path: the `.npz` file.
        classes: optional class subset (names or ids).
        train_split, test_split: split names (test may be None).
        x_key, y_key: key patterns, `{split}` replaced by the split name.

    Returns:
        An `ArraySource`.

    Raises:
        DataError: if the file is missing, unreadable or lacks a key.
    """
    import os
    import zipfile

    if not os.path.isfile(path):
        raise DataError(f"No .npz file at {str(path)!r}.", key="npz")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(f"{str(path)!r} is not a readable .npz file "
                        f"({error}).", key="npz") from error
    with archive:
        splits, array_names = {}, {}
        for split in (s for s in (train_split, test_split) if s):
            keys = (x_key.format(split=split), y_key.format(split=split))
            missing = [k for k in keys if k not in archive.files]
            if missing:
                raise DataError(
                    f"{str(path)!r} has no array {missing[0]!r} (split "
                    f"{split!r}). It holds: {sorted(archive.files)}.",
                    key="train_split" if split == train_split
                    else "test_split")
            splits[split] = (archive[keys[0]], archive[keys[1]])
            array_names[split] = keys
        names = (list(archive["class_names"])
                 if "class_names" in archive.files else None)
    return ArraySource(splits, class_names=names, classes=classes,
                       train_split=train_split, test_split=test_split,
                       description=f"npz:{path}",
                       array_names=array_names)
