"""Bad data is found before training: image files, zips, npz arrays, TFDS.

The bad image files are real files on disk: a truncated JPEG, a truncated
PNG, a zero-byte file and a text file named `.jpg`, beside good images.
"""

import pathlib
import zipfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from packnet_tf import data
from packnet_tf.data import BadFilesError, CheckCache, DataError

#: The bad files, relative to the folder root.
BAD = ("train/cat/truncated.jpg", "train/dog/truncated.png",
       "train/dog/empty.jpg", "test/cat/notes.jpg")


def _good_image(seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)


def write_bad_folder(root, good_per_class=4):
    """`<root>/{train,test}/{cat,dog}/` of good PNG/JPEG plus `BAD`."""
    root = pathlib.Path(root)
    for split in ("train", "test"):
        for label in ("cat", "dog"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(good_per_class):
                pixels = _good_image(i)
                encode = tf.io.encode_png if i % 2 else tf.io.encode_jpeg
                suffix = ".png" if i % 2 else ".jpg"
                (folder / f"good{i}{suffix}").write_bytes(
                    encode(pixels).numpy())
    jpeg = tf.io.encode_jpeg(_good_image(7)).numpy()
    png = tf.io.encode_png(_good_image(8)).numpy()
    (root / BAD[0]).write_bytes(jpeg[:len(jpeg) // 2])
    (root / BAD[1]).write_bytes(png[:len(png) // 2])
    (root / BAD[2]).write_bytes(b"")
    (root / BAD[3]).write_text("not an image, just a note\n")
    return root


def zip_folder(root, path):
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(pathlib.Path(root).rglob("*")):
            if file.is_file():
                archive.write(file, str(file.relative_to(root)))
    return path


@pytest.fixture(params=["folder", "zip"])
def bad_root(request, tmp_path):
    root = write_bad_folder(tmp_path / "images")
    if request.param == "zip":
        return zip_folder(root, tmp_path / "images.zip")
    return root


def test_the_default_names_every_bad_file_and_changes_nothing(bad_root):
    source = data.from_spec(str(bad_root))
    before = {s: source.num_examples(s) for s in source.splits}
    with pytest.raises(BadFilesError) as error:
        data.check_source(source, channels=3, task="pets")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("task 'pets': 4 file(s) of image folder ")
    assert ("split 'train': 3 of 11 (train/cat/truncated.jpg, "
            "train/dog/empty.jpg, train/dog/truncated.png)") in message
    assert "split 'test': 1 of 9 (test/cat/notes.jpg)" in message
    # The header is read before anything is decoded (issue 28): TensorFlow's
    # JPEG header reader names the truncation.
    assert "the first fails with: Invalid JPEG data" in message
    assert "set `on_bad_files: skip`" in message
    assert error.value.report.counts() == {"train": 3, "test": 1}
    assert {s: source.num_examples(s) for s in source.splits} == before


def test_skip_leaves_them_out_and_counts_them(bad_root):
    source = data.from_spec(str(bad_root))
    report = data.check_source(source, channels=3, on_bad_files="skip")
    assert report.counts() == {"train": 3, "test": 1}
    assert report.as_dict()["test"] == {"count": 1, "checked": 9,
                                        "first": ["test/cat/notes.jpg"]}
    assert (source.num_examples("train"), source.num_examples("test")) == (
        8, 8)
    # Every remaining file reads and decodes: a whole epoch goes through.
    for split in source.splits:
        batches = data.batches(source, split, (6, 6, 3), batch_size=4)
        assert sum(int(y.shape[0]) for _, y in batches) == 8


def test_the_same_names_for_one_and_for_three_channels(bad_root):
    grey = data.check_source(data.from_spec(str(bad_root)), channels=1,
                             on_bad_files="skip")
    colour = data.check_source(data.from_spec(str(bad_root)), channels=3,
                               on_bad_files="skip")
    assert grey.splits == colour.splits


def test_good_files_are_cached_and_changed_ones_checked_again(tmp_path):
    root = write_bad_folder(tmp_path / "images")
    cache_path = tmp_path / "cache.json"
    read = []

    def counting(source):
        real = source.read_examples

        def read_examples(names):
            read.extend(names)
            return real(names)

        source.read_examples = read_examples
        return source

    report = data.check_source(counting(data.from_spec(str(root))),
                               channels=3, on_bad_files="skip",
                               cache=cache_path)
    assert len(read) == 20 and report.num_bad == 4
    read.clear()
    data.check_source(counting(data.from_spec(str(root))), channels=3,
                      on_bad_files="skip", cache=cache_path)
    assert sorted(read) == sorted(BAD)  # bad files are never cached
    # A good file that is overwritten with garbage is decoded again.
    (root / "train/cat/good0.jpg").write_bytes(b"\xff\xd8garbage")
    read.clear()
    with pytest.raises(BadFilesError, match="train/cat/good0.jpg"):
        data.check_source(counting(data.from_spec(str(root))), channels=3,
                          cache=CheckCache(cache_path))
    assert "train/cat/good0.jpg" in read


def test_a_class_left_with_no_good_image_is_an_error(tmp_path):
    root = write_bad_folder(tmp_path / "images", good_per_class=0)
    (root / "train" / "dog" / "good.png").write_bytes(
        tf.io.encode_png(_good_image(1)).numpy())
    for label in ("cat", "dog"):
        (root / "test" / label / "good.png").write_bytes(
            tf.io.encode_png(_good_image(2)).numpy())
    source = data.from_spec(str(root))
    with pytest.raises(DataError, match="every image of class 'cat' in "
                       "split 'train' is bad"):
        data.check_source(source, on_bad_files="skip")


def test_a_zip_member_whose_bytes_are_corrupt(tmp_path):
    root = write_bad_folder(tmp_path / "images")
    for name in BAD:
        (root / name).unlink()
    path = tmp_path / "images.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for file in sorted(root.rglob("*")):
            if file.is_file():
                archive.write(file, str(file.relative_to(root)))
    # Flip bytes inside one stored member: its CRC no longer matches.
    member = "train/dog/good1.png"
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start + 20:start + 40] = bytes(20)
    path.write_bytes(bytes(raw))
    with pytest.raises(BadFilesError) as error:
        data.check_source(data.from_spec(str(path)), channels=3)
    assert error.value.report.counts() == {"train": 1}
    assert f"({member})" in str(error.value)
    assert "Bad CRC-32" in str(error.value)


def test_unknown_on_bad_files(bad_root):
    with pytest.raises(ValueError, match=r"one of \['error', 'skip'\]"):
        data.check_source(data.from_spec(str(bad_root)), on_bad_files="x")


def test_the_config_schema_knows_the_same_values():
    from packnet_tf.cli import schema
    from packnet_tf.data import checks

    assert schema.ON_BAD_FILES == checks.ON_BAD_FILES


# -- arrays ---------------------------------------------------------------


def _npz(path, **change):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.normal(size=(10, 4, 4, 1)).astype("float32"),
              "y_train": np.arange(10) % 3,
              "x_test": rng.normal(size=(6, 4, 4, 1)).astype("float32"),
              "y_test": np.arange(6) % 3}
    arrays.update(change)
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_npz_with_nan_or_inf(tmp_path, value):
    x = np.zeros((6, 4, 4, 1), "float32")
    x[4, 1, 2, 0] = value
    path = _npz(tmp_path / "a.npz", x_test=x)
    with pytest.raises(DataError, match=r"npz:.*a\.npz: x_test has NaN or "
                       r"infinite values in 1 example\(s\) \(first at "
                       r"index 4\)"):
        data.from_spec(path)


def test_npz_splits_of_other_shapes(tmp_path):
    path = _npz(tmp_path / "a.npz",
                x_test=np.zeros((6, 5, 4, 1), "float32"))
    with pytest.raises(DataError, match=r"different shapes \(x_train "
                       r"\(4, 4, 1\), x_test \(5, 4, 1\)\)"):
        data.from_spec(path)


def test_npz_test_labels_outside_the_train_classes(tmp_path):
    path = _npz(tmp_path / "a.npz", y_test=np.array([0, 1, 2, 5, 7, 1]))
    with pytest.raises(DataError, match=r"y_test has label\(s\) \[5, 7\] "
                       r"that never occur in split 'train' \(labels 0..2\)"):
        data.from_spec(path)


def test_npz_labels_outside_its_class_names(tmp_path):
    path = _npz(tmp_path / "a.npz", class_names=np.array(["a", "b"]))
    with pytest.raises(DataError, match="labels from 0 to 2 but 2 class "
                       "names"):
        data.from_spec(path)


# -- TFDS -----------------------------------------------------------------


def _tfds_with_one_bad_image(tmp_path, with_ids=True):
    """A mock TFDS cifar10 whose train split holds one undecodable image.

    Without `with_ids` its examples lack `tfds_id` (as TFDS' own random
    mock data does): they are named by position.
    """
    good = tf.io.encode_png(np.zeros((32, 32, 3), np.uint8)).numpy()

    def as_dataset(self, split, **kwargs):
        images = [good] * 5
        if split == "train":
            images[2] = b"truncated"
        features = {"image": images, "label": np.arange(5) % 2,
                    "id": [f"{split}_{i}" for i in range(5)]}
        if with_ids:
            features["tfds_id"] = [f"cifar10-{split}.tfrecord__{i}"
                                   for i in range(5)]
        return tf.data.Dataset.from_tensor_slices(features)

    return tfds.testing.mock_data(as_dataset_fn=as_dataset,
                                  data_dir=str(tmp_path))


@pytest.mark.parametrize("with_ids, name", [
    (True, "cifar10-train.tfrecord__2"), (False, "#2")])
def test_tfds_images_are_checked_and_skipped(tmp_path, with_ids, name):
    with _tfds_with_one_bad_image(tmp_path, with_ids):
        source = data.from_spec({"tfds": "cifar10",
                                 "data_dir": str(tmp_path)})
        with pytest.raises(BadFilesError, match=rf"split 'train': 1 of 5 "
                           rf"\({name}\)"):
            data.check_source(source, channels=3)
        report = data.check_source(source, channels=3, on_bad_files="skip")
        assert report.counts() == {"train": 1}
        labels = [int(y) for _, y in data.batches(
            source, "train", (32, 32, 3), shuffle=False).unbatch()]
    assert labels == [0, 1, 1, 0]
