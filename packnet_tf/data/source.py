"""`DataSource`: one task's labelled examples, split by split.

A source knows its class names (after any class-subset selection, in the
order the labels 0..k-1 are given), the shape of one example as stored, and
returns a `tf.data.Dataset` of single `(x, y)` examples per split. Batching,
resizing and preprocessing are shared by every source: see
`packnet_tf.data.pipeline`.
"""

import numpy as np
import tensorflow as tf


class DataError(ValueError):
    """Task data that cannot be read or does not fit.

    Attributes:
        key: the data-spec key at fault (`"path"`, `"classes"`, ...), or None.
    """

    def __init__(self, message, key=None):
        super().__init__(message)
        self.key = key


class DataSource:
    """Base class of task data sources.

    Attributes:
        description: a short human-readable name (`"tfds:cifar10"`).
        class_names: tuple of class names; label i is `class_names[i]`.
        example_shape: the shape of one `x` as the source yields it (None for
            sizes that vary between examples).
        encoded: True if `dataset()` yields encoded image bytes (decoded
            with `decode_channels` channels by the pipeline).
        train_split, test_split: split names; `test_split` may be None.
        color_mode: how the pipeline converts colours: `"auto"` (encoded
            images decode to the network's channels; arrays must match
            them), `"rgb"` (greyscale examples repeated to 3 channels) or
            `"grayscale"` (RGB examples reduced to 1 channel). See
            `packnet_tf.data.fit_plan`.
        max_image_pixels: the most pixels an encoded image may declare
            (None: `ImageLimits`' default, 16 megapixels); a larger one is
            refused before it is decoded (a bad file for
            `check_source`).
    """

    description = "data"
    color_mode = "auto"
    max_image_pixels = None
    class_names = ()
    example_shape = ()
    encoded = False
    train_split = "train"
    test_split = "test"

    @property
    def num_classes(self):
        """The number of classes (labels are 0..num_classes-1)."""
        return len(self.class_names)

    @property
    def splits(self):
        """The split names this source reads (train first)."""
        return tuple(s for s in (self.train_split, self.test_split) if s)

    def num_examples(self, split):
        """Examples in `split`, or None when unknown without reading it."""
        return None

    def dataset(self, split, shuffle=False, seed=0):
        """Single `(x, y)` examples of `split`, `y` an int32 label.

        Args:
            split: a split name.
            shuffle: whether to shuffle (reshuffled every epoch).
            seed: the shuffle seed.

        Returns:
            A `tf.data.Dataset`.
        """
        raise NotImplementedError

    # -- encoded sources: what `packnet_tf.data.check_source` reads --------

    def example_fingerprints(self, split):
        """`[(name, fingerprint)]` of a split's files, or None.

        A fingerprint changes whenever the file's bytes may have changed
        (see `packnet_tf.data.checks`). None: the examples are not files
        (then `encoded_examples` is read whole).
        """
        return None

    def encoded_examples(self, split):
        """`(name, encoded bytes)` of every example of `split`."""
        raise NotImplementedError(
            f"{type(self).__name__} does not list its encoded examples.")

    def read_examples(self, names):
        """`(name, encoded bytes)` of the named files, as a dataset."""
        raise NotImplementedError(
            f"{type(self).__name__} does not read examples by name.")

    def read_bytes(self, name):
        """The encoded bytes of one named file (raises if unreadable)."""
        raise NotImplementedError(
            f"{type(self).__name__} does not read examples by name.")

    def exclude(self, split, names):
        """Leaves the named examples out of `split` from now on."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot leave examples out.")

    def take_subset(self, split, count, seed=0):
        """Keeps a random subset of `count` examples of `split`, for good.

        The subset is `subset_positions(n, count, seed)` of the split's
        examples in the source's fixed order, so a seed always picks the
        same examples (the same on every machine).

        Args:
            split: a split name.
            count: how many examples to keep, 1..n.
            seed: the subset's seed.

        Raises:
            DataError: (key "train_examples") if this source cannot take a
                subset, or `count` is out of range.
        """
        raise DataError(
            f"{self.description} cannot keep a subset of its examples. "
            "Select one in the source itself (for TFDS a split such as "
            "'train[:10000]').", key="train_examples")

    def decode(self, x, channels):
        """Decodes one encoded example to a uint8 image (encoded sources).

        The image's header is read first: one over `max_image_pixels` is
        refused before it is decoded (`image_limits.decode_image`).
        """
        from packnet_tf.data.image_limits import decode_image

        return decode_image(x, channels, self.max_image_pixels,
                            self.description)

    def __repr__(self):
        return (f"{type(self).__name__}({self.description}, "
                f"classes={list(self.class_names)})")


def class_positions(requested, available, what):
    """Maps a class-subset request to positions in `available`.

    Args:
        requested: None (all classes) or a list of class names or ids, in
            the order their new labels 0..k-1 follow.
        available: the source's class names; ids index this list.
        what: the source, for messages.

    Returns:
        A list of indices into `available`.

    Raises:
        DataError: (key "classes") on unknown, repeated or empty requests.
    """
    if requested is None:
        return list(range(len(available)))
    if isinstance(requested, (str, int)) or not list(requested):
        raise DataError(
            f"Expected `classes` to be a non-empty list of class names or "
            f"ids of {what}. Received: {requested!r}", key="classes")
    names = [str(n) for n in available]
    positions = []
    for item in requested:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= item < len(names):
                raise DataError(
                    f"Class id {item} is out of range for {what}, which has "
                    f"{len(names)} classes (ids 0..{len(names) - 1}).",
                    key="classes")
            position = int(item)
        elif str(item) in names:
            position = names.index(str(item))
        else:
            shown = names if len(names) <= 12 else names[:12] + ["..."]
            raise DataError(
                f"Unknown class {item!r} in {what}. Known classes: "
                f"{shown}.", key="classes")
        if position in positions:
            raise DataError(
                f"Class {item!r} is listed twice in `classes`.",
                key="classes")
        positions.append(position)
    return positions


#: Accepted `color_mode` values (`DataSource.color_mode`).
COLOR_MODES = ("auto", "rgb", "grayscale")


def check_color_mode(value):
    """Returns `value` if it is one of `COLOR_MODES`.

    Raises:
        DataError: (key "color_mode") otherwise.
    """
    if not isinstance(value, str) or value not in COLOR_MODES:
        raise DataError(
            f"Expected `color_mode` to be one of {list(COLOR_MODES)} "
            "('rgb' repeats greyscale examples to 3 channels). Received: "
            f"{value!r}", key="color_mode")
    return value


def subset_positions(total, count, seed=0):
    """Sorted positions of a random subset of `count` out of `total`.

    Args:
        total: examples in the split.
        count: examples to keep, an int in 1..total.
        seed: the seed (NumPy's PCG64 permutation: the same everywhere).

    Returns:
        A sorted int64 array of `count` distinct positions.

    Raises:
        DataError: (key "train_examples") for a count out of range.
    """
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) \
            or not 1 <= count <= total:
        raise DataError(
            f"Expected `train_examples` to be an int from 1 to the split's "
            f"{total} examples. Received: {count!r}. Leave it out to train "
            "on every example.", key="train_examples")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) \
            or seed < 0:
        raise DataError(f"Expected `subset_seed` to be an int >= 0. "
                        f"Received: {seed!r}", key="subset_seed")
    order = np.random.default_rng(int(seed)).permutation(total)
    return np.sort(order[:int(count)])


def remap_labels(dataset, positions):
    """Keeps examples whose label is in `positions`, relabelled 0..k-1.

    Args:
        dataset: `(x, y)` examples with integer labels.
        positions: the original labels to keep, in their new order.

    Returns:
        The filtered, relabelled dataset (labels int32).
    """
    keys = tf.constant(positions, dtype=tf.int64)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            keys, tf.range(len(positions), dtype=tf.int64)),
        default_value=-1)

    def relabel(x, y):
        return x, tf.cast(table.lookup(tf.cast(y, tf.int64)), tf.int32)

    return dataset.map(relabel).filter(lambda x, y: y >= 0)


def labelled(dataset, positions, shuffle, shuffle_buffer, seed):
    """A split's `(x, int32 y)` examples, as every source hands them out.

    Args:
        dataset: `(x, y)` examples with integer labels.
        positions: the original labels to keep, in their new order
            (`remap_labels`), or None to keep every label as it is.
        shuffle: whether to shuffle, reshuffling every iteration.
        shuffle_buffer: the shuffle buffer's size.
        seed: the shuffle seed.

    Returns:
        The dataset.
    """
    if positions is not None:
        dataset = remap_labels(dataset, positions)
    else:
        dataset = dataset.map(lambda x, y: (x, tf.cast(y, tf.int32)))
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed,
                                  reshuffle_each_iteration=True)
    return dataset
