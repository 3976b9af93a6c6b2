"""Task data from a TensorFlow Datasets name (`tfds:oxford_flowers102`).

Prepared data is read from `data_dir` (TFDS' default, `~/tensorflow_datasets`,
when None). Nothing is downloaded unless `download=True`: a missing data set
is an error that says how to prepare it. Images are read encoded and decoded
after shuffling, so the shuffle buffer holds compressed bytes, not pixels.
"""

from packnet_tf.data.source import (DataError, DataSource, class_positions,
                                    labelled)


def _how_to_prepare(name, data_dir, builder):
    where = f" --data_dir {data_dir}" if data_dir else ""
    manual = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
    extra = (
        " It needs a manual download first: see "
        f"https://www.tensorflow.org/datasets/catalog/{name}."
        if manual else ""
    )
    return (f"Prepare it once with `tfds build {name}{where}`, or set "
            f"`download: true` in the task's data.{extra}")


class TFDSSource(DataSource):
    """A TFDS data set's (image, label) pairs.

    Args:
        name: the TFDS name, optionally with a config/version
            (`"cifar10"`, `"oxford_flowers102"`).
        data_dir: where prepared data lives (TFDS' default when None).
        classes: optional class subset (names from the label feature, or
            ids), relabelled 0..k-1 in this order.
        train_split, test_split: TFDS split strings (`"train+validation"`,
            `"train[:90%]"`); test may be None.
        download: whether to download and prepare missing data.
        image_key, label_key: feature names (default: the data set's
            supervised keys).
        shuffle_buffer: examples (encoded) held for shuffling.

    Raises:
        DataError: for an unknown name (key "tfds"), data that is not
            prepared (with how to prepare it), or unknown feature keys or
            classes.

    Example:

    >>> source = TFDSSource("oxford_flowers102", data_dir="/data/tfds",
    ...                     train_split="train+validation")
    """

    def __init__(self, name, data_dir=None, classes=None,
                 train_split="train", test_split="test", download=False,
                 image_key=None, label_key=None, shuffle_buffer=10_000):
        import tensorflow_datasets as tfds

        self.name = name
        self.data_dir = None if data_dir is None else str(data_dir)
        self.description = f"tfds:{name}"
        self.train_split, self.test_split = train_split, test_split
        self.download = bool(download)
        self._prepared = False
        self.shuffle_buffer = int(shuffle_buffer)
        try:
            self._builder = tfds.builder(name, data_dir=self.data_dir)
        except Exception as error:  # DatasetNotFoundError and friends
            first = str(error).strip().splitlines()[0]
            raise DataError(
                f"Unknown TFDS data set {name!r} ({first}). See "
                "https://www.tensorflow.org/datasets/catalog/overview for "
                "names.", key="tfds") from error
        info = self._builder.info
        keys = info.supervised_keys or (None, None)
        self.image_key = image_key or keys[0]
        self.label_key = label_key or keys[1]
        features = info.features
        for key, value in (("image_key", self.image_key),
                           ("label_key", self.label_key)):
            if value is None or value not in features:
                raise DataError(
                    f"tfds:{name} has no feature {value!r}. Set `{key}` to "
                    f"one of {sorted(features.keys())}.", key=key)
        label = features[self.label_key]
        if not hasattr(label, "num_classes"):
            raise DataError(
                f"tfds:{name}'s {self.label_key!r} is not a class label "
                f"({type(label).__name__}).", key="label_key")
        names = list(label.names)
        self._positions = class_positions(classes, names, self.description)
        self._subset = classes is not None
        self.class_names = tuple(names[p] for p in self._positions)
        image = features[self.image_key]
        self.example_shape = tuple(image.shape)
        # Image features can be read undecoded; other tensors cannot.
        self.encoded = type(image).__name__ == "Image"
        self._image_feature = image
        # Example ids (`tfds_id`) left out per split (`exclude`).
        self._excluded = {}
        if not self.download:
            for split in self.splits:
                self._open(split, shuffle=False, seed=0)

    def prepare(self):
        """Downloads and prepares the data if `download` was asked for.

        Runs once per source; every `dataset()` call asks for it.
        """
        if self.download and not self._prepared:
            self._builder.download_and_prepare()
            self._prepared = True

    def num_examples(self, split):
        try:
            total = int(self._builder.info.splits[split].num_examples)
        except (KeyError, ValueError, TypeError):
            return None
        return total - len(self._excluded.get(split, ()))

    def _named(self, split, shuffle, seed):
        """`(name, example)` pairs: TFDS' `tfds_id`, else the position.

        Data read without `tfds_id` (some mocks and custom readers) is
        named by its position, in file order (so not shuffled here).
        """
        import tensorflow as tf

        dataset = self._open(split, shuffle, seed, with_ids=True)
        if "tfds_id" in dataset.element_spec:
            return dataset.map(lambda example: (example["tfds_id"], example))
        dataset = self._open(split, shuffle=False, seed=seed, with_ids=True)
        return dataset.enumerate().map(lambda i, example: (
            tf.strings.join(["#", tf.strings.as_string(i)]), example))

    def encoded_examples(self, split):
        self.prepare()
        return self._named(split, shuffle=False, seed=0).map(
            lambda name, example: (name, example[self.image_key]))

    def exclude(self, split, names):
        self._excluded[split] = set(self._excluded.get(split, ())) | set(
            names)

    def _open(self, split, shuffle, seed, with_ids=False):
        import tensorflow_datasets as tfds

        decoders = ({self.image_key: tfds.decode.SkipDecoding()}
                    if self.encoded else None)
        try:
            return self._builder.as_dataset(
                split=split,
                shuffle_files=shuffle,
                decoders=decoders,
                read_config=tfds.ReadConfig(shuffle_seed=seed,
                                            add_tfds_id=with_ids),
            )
        except AssertionError as error:  # TFDS' "could not find data"
            raise DataError(
                f"tfds:{self.name} is not prepared in "
                f"{self.data_dir or '~/tensorflow_datasets'}. "
                f"{_how_to_prepare(self.name, self.data_dir, self._builder)}",
                key="tfds") from error
        except (ValueError, KeyError) as error:
            first = str(error).strip().splitlines()[0]
            raise DataError(
                f"tfds:{self.name} cannot read split {split!r}: {first}. "
                f"Known splits: {sorted(self._builder.info.splits)}.",
                key="train_split" if split == self.train_split
                else "test_split") from error

    def dataset(self, split, shuffle=False, seed=0):
        import tensorflow as tf

        self.prepare()
        excluded = sorted(self._excluded.get(split, ()))
        if excluded:
            left_out = tf.constant(excluded, tf.string)
            dataset = self._named(split, shuffle, seed).filter(
                lambda name, example: tf.logical_not(
                    tf.reduce_any(tf.equal(name, left_out)))).map(
                lambda name, example: example)
        else:
            dataset = self._open(split, shuffle, seed)
        dataset = dataset.map(
            lambda example: (example[self.image_key],
                             example[self.label_key]))
        return labelled(dataset, self._positions if self._subset else None,
                        shuffle, self.shuffle_buffer, seed)

    def decode(self, x, channels):
        import tensorflow as tf

        from packnet_tf.data.image_limits import pixel_check

        # TFDS' own decoder, once the header check has passed.
        with tf.control_dependencies([pixel_check(
                x, self.max_image_pixels, self.description)]):
            image = self._image_feature.decode_example(x)
        if channels and image.shape[-1] != channels:
            image = tf.io.decode_image(x, channels=channels,
                                       expand_animations=False)
        return image
