"""Task data described in a config: `"tfds:NAME"`, a path, or a dict.

Forms accepted by `from_spec`:

    data: tfds:oxford_flowers102          # a TFDS name, prepared locally
    data: images/                         # an image folder, or a .zip of one
    data: arrays.npz                      # x_train, y_train, x_test, y_test
    data:
      tfds: cifar10                       # or folder: PATH, or npz: PATH
      data_dir: ~/tensorflow_datasets     # tfds only
      download: false                     # tfds only; never unless asked
      train_split: train
      test_split: test                    # null: no evaluation split
      classes: [airplane, automobile]     # a subset, labels 0..k-1 in order
      train_examples: 10000               # a random subset of the train split
      subset_seed: 0                      # ... chosen with this seed
      color_mode: rgb                     # grey examples -> 3 channels
      max_image_pixels: 40000000          # larger files are bad files
"""

import os

from packnet_tf.data.arrays import npz_source
from packnet_tf.data.folder import ImageFolderSource
from packnet_tf.data.source import DataError, check_color_mode
from packnet_tf.data.tfds_source import TFDSSource
from packnet_tf.io.paths import resolve_path

#: Keys every kind accepts.
COMMON_KEYS = ("train_split", "test_split", "classes", "train_examples",
               "subset_seed", "color_mode", "max_image_pixels")
#: Keys per kind of source (the kind key itself first).
KIND_KEYS = {
    "tfds": ("tfds", "data_dir", "download", "image_key", "label_key",
             "shuffle_buffer"),
    "folder": ("folder",),
    "npz": ("npz", "x_key", "y_key"),
}


def normalize_spec(spec):
    """Turns the short string forms into the dict form.

    Args:
        spec: a string or a dict.

    Returns:
        A new dict with exactly one kind key.

    Raises:
        DataError: if the spec is neither, names no kind or several, or has
            keys its kind does not accept.
    """
    if isinstance(spec, (str, os.PathLike)):
        text = str(spec)
        if text.startswith("tfds:"):
            return {"tfds": text[len("tfds:"):]}
        if text.lower().endswith(".npz"):
            return {"npz": text}
        return {"folder": text}
    if not isinstance(spec, dict):
        raise DataError(
            "Expected `data` to be 'tfds:NAME', a path, or a mapping with "
            f"one of {sorted(KIND_KEYS)}. Received: {spec!r}")
    kinds = [k for k in KIND_KEYS if k in spec]
    if len(kinds) != 1:
        raise DataError(
            f"Expected exactly one of {sorted(KIND_KEYS)} in `data`. "
            f"Received keys: {sorted(spec)}")
    allowed = KIND_KEYS[kinds[0]] + COMMON_KEYS
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise DataError(
            f"Unknown key {unknown[0]!r} for {kinds[0]} data. Allowed: "
            f"{sorted(allowed)}.", key=unknown[0])
    return dict(spec)


def _path(value, base_dir, key):
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise DataError(f"Expected a path in `{key}`. Received: {value!r}",
                        key=key)
    return resolve_path(value, base_dir)


def from_spec(spec, base_dir=None):
    """Builds the `DataSource` a config's `data` value describes.

    Relative paths (folders, `.npz` files, `data_dir`) are read from
    `base_dir` (the config file's folder); `~` and `$VARS` are expanded.

    Args:
        spec: see the module docstring.
        base_dir: the folder relative paths start from (default: the
            current directory).

    Returns:
        A `DataSource`, checked: paths exist, a TFDS data set is prepared
        (unless `download: true`), classes exist; with `train_examples`,
        holding only that random subset of its train split (seeded by
        `subset_seed`, default 0); with `color_mode`, converting colours
        as it says (`DataSource.color_mode`).

    Raises:
        DataError: with the key at fault, on any problem.
    """
    spec = normalize_spec(spec)
    color_mode = check_color_mode(spec.get("color_mode", "auto"))
    if "subset_seed" in spec and "train_examples" not in spec:
        raise DataError("`subset_seed` seeds the subset `train_examples` "
                        "chooses; set `train_examples` too, or leave "
                        "`subset_seed` out.", key="subset_seed")
    limit = spec.get("max_image_pixels")
    if limit is not None and (isinstance(limit, bool) or not isinstance(
            limit, int) or limit < 1):
        raise DataError(f"Expected `max_image_pixels` to be an int >= 1 "
                        f"(pixels one image file may declare). Received: "
                        f"{limit!r}", key="max_image_pixels")
    source = _source(spec, base_dir)
    source.color_mode = color_mode
    source.max_image_pixels = limit
    if "train_examples" in spec:
        source.take_subset(source.train_split, spec["train_examples"],
                           spec.get("subset_seed", 0))
    return source


def _source(spec, base_dir):
    """The source of a normalized spec (no subset, colours as stored)."""
    common = {
        "classes": spec.get("classes"),
        "train_split": spec.get("train_split", "train"),
        "test_split": spec.get("test_split", "test"),
    }
    for key in ("train_split", "test_split"):
        value = common[key]
        if not (isinstance(value, str) and value) and not (
                key == "test_split" and value is None):
            raise DataError(f"Expected a split name in `{key}`. Received: "
                            f"{value!r}", key=key)
    if "tfds" in spec:
        name = spec["tfds"]
        if not isinstance(name, str) or not name:
            raise DataError(f"Expected a TFDS name in `tfds`. Received: "
                            f"{name!r}", key="tfds")
        download = spec.get("download", False)
        if not isinstance(download, bool):
            raise DataError(f"Expected true or false in `download`. "
                            f"Received: {download!r}", key="download")
        data_dir = spec.get("data_dir")
        if data_dir is not None:
            data_dir = _path(data_dir, base_dir, "data_dir")
        return TFDSSource(
            name, data_dir=data_dir, download=download,
            image_key=spec.get("image_key"), label_key=spec.get("label_key"),
            shuffle_buffer=spec.get("shuffle_buffer", 10_000), **common)
    if "npz" in spec:
        return npz_source(
            _path(spec["npz"], base_dir, "npz"),
            x_key=spec.get("x_key", "x_{split}"),
            y_key=spec.get("y_key", "y_{split}"), **common)
    return ImageFolderSource(_path(spec["folder"], base_dir, "folder"),
                             **common)
