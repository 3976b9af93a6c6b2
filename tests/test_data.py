"""Task data sources: folders, zips, TFDS, arrays; subsets, shapes, seeds."""

import pathlib
import zipfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from packnet_tf import data
from packnet_tf.data import DataError

CLASSES = ("cat", "dog", "emu")


def _write_folder(root, sizes=((5, 7), (4, 6), (3, 5)), splits=None):
    """<root>/<split>/<class>/*.png with a class's id in every pixel."""
    splits = splits or {"train": (3, 2, 4), "test": (2, 1, 2)}
    for split, counts in splits.items():
        for label, (name, count) in enumerate(zip(CLASSES, counts)):
            folder = pathlib.Path(root) / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                h, w = sizes[(label + i) % len(sizes)]
                pixels = np.full((h, w, 3), 40 * label + i, dtype=np.uint8)
                png = tf.io.encode_png(pixels).numpy()
                (folder / f"{i}.png").write_bytes(png)
    (pathlib.Path(root) / "train" / "cat" / ".DS_Store").write_bytes(b"x")
    return pathlib.Path(root)


def _zip_folder(root, path, top="images"):
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(pathlib.Path(root).rglob("*")):
            archive.write(file, f"{top}/{file.relative_to(root)}")
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _write_folder(tmp_path_factory.mktemp("images") / "root")


@pytest.fixture(scope="module")
def zipped(folder, tmp_path_factory):
    return _zip_folder(folder, tmp_path_factory.mktemp("zip") / "im.zip")


def _all(dataset):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(xs), np.concatenate(ys)


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_image_folder_subset_is_relabelled_in_the_given_order(
        kind, folder, zipped):
    root = folder if kind == "folder" else zipped
    source = data.from_spec({"folder": str(root),
                             "classes": ["emu", "cat"]})
    assert source.class_names == ("emu", "cat")
    assert source.num_examples("train") == 4 + 3
    assert source.num_examples("test") == 2 + 2
    x, y = _all(data.batches(source, "train", (4, 4, 3), batch_size=3,
                             shuffle=False))
    assert x.shape == (7, 4, 4, 3) and x.dtype == np.float32
    # emu images (original class 2) are now label 0; pixels are 80 + i.
    np.testing.assert_array_equal(y, [0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(x[:4, 0, 0, 0] * 255, [80, 81, 82, 83],
                               atol=1e-4)
    np.testing.assert_allclose(x[4:, 0, 0, 0] * 255, [0, 1, 2], atol=1e-4)


def test_folder_and_zip_give_identical_batches(folder, zipped):
    a = data.from_spec(str(folder))
    b = data.from_spec(str(zipped))
    assert a.class_names == b.class_names == CLASSES
    for split in ("train", "test"):
        xa, ya = _all(data.batches(a, split, (6, 5, 1), seed=3))
        xb, yb = _all(data.batches(b, split, (6, 5, 1), seed=3))
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_images_of_the_input_size_are_not_resampled(folder):
    source = data.from_spec({"folder": str(folder), "classes": ["cat"]})
    x, _ = _all(data.batches(source, "train", (5, 7, 3), shuffle=False,
                             preprocess="none"))
    # The first cat image is 5x7 and every pixel is exactly 0.
    assert np.array_equal(x[0], np.zeros((5, 7, 3), np.float32))


def test_shuffling_is_seeded_and_differs_per_epoch(folder):
    source = data.from_spec(str(folder))
    first = data.batches(source, "train", (4, 4, 3), batch_size=100, seed=7)
    again = data.batches(source, "train", (4, 4, 3), batch_size=100, seed=7)
    epoch1 = _all(first)[1]
    epoch2 = _all(first)[1]
    np.testing.assert_array_equal(epoch1, _all(again)[1])
    assert sorted(epoch1) == sorted(epoch2)
    assert not np.array_equal(epoch1, epoch2)
    # The test split is read in order.
    np.testing.assert_array_equal(
        _all(data.batches(source, "test", (4, 4, 3)))[1], [0, 0, 1, 2, 2])


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_autotuning_is_off_by_default_and_changes_no_batch(
        kind, folder, zipped):
    source = data.from_spec(str(folder if kind == "folder" else zipped))
    fixed = data.batches(source, "train", (4, 4, 3), batch_size=4, seed=5)
    tuned = data.batches(source, "train", (4, 4, 3), batch_size=4, seed=5,
                         autotune=True)
    assert fixed.options().autotune.enabled is False
    assert tuned.options().autotune.enabled is not False
    for _ in range(2):  # two epochs: the same per-epoch orders
        for a, b in zip(_all(fixed), _all(tuned)):
            np.testing.assert_array_equal(a, b)


def test_missing_folder_and_split_and_class(folder, tmp_path):
    with pytest.raises(DataError, match="no such folder or file") as error:
        data.from_spec({"folder": str(tmp_path / "nope")})
    assert error.value.key == "folder"
    with pytest.raises(DataError, match="no split folder 'val'") as error:
        data.from_spec({"folder": str(folder), "test_split": "val"})
    assert error.value.key == "test_split"
    with pytest.raises(DataError, match="Unknown class 'owl'.*'cat'"):
        data.from_spec({"folder": str(folder), "classes": ["owl"]})
    with pytest.raises(DataError, match="listed twice"):
        data.from_spec({"folder": str(folder), "classes": ["cat", 0]})


def test_a_class_missing_from_the_test_split(tmp_path):
    root = _write_folder(tmp_path / "r",
                         splits={"train": (1, 1, 1), "test": (1, 0, 1)})
    with pytest.raises(DataError, match="'dog' has no images in split"):
        data.from_spec(str(root))


def test_arrays_subset_and_counts():
    x = np.arange(10, dtype="float32").reshape(10, 1)
    y = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    source = data.ArraySource({"train": (x, y), "test": (x, y)},
                              classes=[3, 1])
    assert source.class_names == ("3", "1")
    xs, ys = _all(data.batches(source, "train", (1,), shuffle=False))
    np.testing.assert_array_equal(xs[:, 0], [1, 3, 6, 8])
    np.testing.assert_array_equal(ys, [1, 0, 1, 0])


def test_npz_file(tmp_path):
    path = tmp_path / "t.npz"
    x = np.zeros((6, 8, 8), "uint8")
    x[:, 0, 0] = 255
    np.savez(path, x_train=x, y_train=np.array([0, 1] * 3), x_test=x[:2],
             y_test=np.array([1, 0]), class_names=np.array(["no", "yes"]))
    source = data.from_spec(str(path))
    assert source.class_names == ("no", "yes")
    xs, ys = _all(data.batches(source, "test", (8, 8, 1), shuffle=False))
    # Grey 2-D arrays gain a channel axis; uint8 -> [0, 1] ("auto").
    assert xs.shape == (2, 8, 8, 1) and xs[0, 0, 0, 0] == 1.0
    with pytest.raises(DataError, match="no array 'x_val'"):
        data.from_spec({"npz": str(path), "test_split": "val"})


def test_datasets_from_python_need_a_class_count():
    pairs = tf.data.Dataset.from_tensor_slices(
        (np.zeros((4, 3), "float32"), np.array([0, 2, 1, 2])))
    with pytest.raises(DataError, match="pass `num_classes`"):
        data.DatasetSource({"train": pairs}, test_split=None)
    source = data.DatasetSource({"train": pairs}, num_classes=3,
                                classes=[2, 0], test_split=None)
    _, ys = _all(data.batches(source, "train", (3,), shuffle=False))
    np.testing.assert_array_equal(ys, [1, 0, 0])


def test_shapes_that_do_not_fit_name_both_shapes():
    x = np.zeros((4, 8, 8, 3), "float32")
    source = data.ArraySource({"train": (x, np.arange(4)),
                               "test": (x, np.arange(4))})
    with pytest.raises(DataError, match=r"shape \(8, 8, 3\).*input "
                       r"\(8, 8, 1\).*3 channels"):
        data.fit_plan(source, (8, 8, 1))
    with pytest.raises(DataError, match="input \\(10,\\)"):
        data.fit_plan(source, (10,))
    assert data.fit_plan(source, (192,)).flatten
    assert data.fit_plan(source, (16, 16, 3)).resize == (16, 16)
    with pytest.raises(DataError, match="sizes differ and `resize` is off"):
        data.fit_plan(source, (16, 16, 3), resize=False)


def test_unknown_preprocess(folder):
    source = data.from_spec(str(folder))
    with pytest.raises(DataError, match="Unknown preprocess 'vgg99'"):
        data.batches(source, "train", (4, 4, 3), preprocess="vgg99")
    x, _ = next(iter(data.batches(source, "train", (4, 4, 3),
                                  preprocess="vgg16", shuffle=False)))
    # Caffe style: BGR minus the ImageNet mean; the first image is black.
    np.testing.assert_allclose(x[0, 0, 0], [-103.939, -116.779, -123.68],
                               rtol=1e-5)


def test_tfds_mock_subset_and_resize(tmp_path):
    with tfds.testing.mock_data(num_examples=40):
        source = data.from_spec({"tfds": "cifar10", "classes": ["3", "0"],
                                 "data_dir": str(tmp_path)})
        assert source.class_names == ("3", "0")
        raw = [int(y) for _, y in tfds.load(
            "cifar10", split="train", data_dir=str(tmp_path),
            as_supervised=True)]
        x, y = _all(data.batches(source, "train", (16, 16, 1),
                                 shuffle=False))
    expected = [0 if r == 3 else 1 for r in raw if r in (3, 0)]
    np.testing.assert_array_equal(y, expected)
    assert x.shape == (len(expected), 16, 16, 1)


def test_tfds_not_prepared_says_how_to_prepare(tmp_path):
    with pytest.raises(DataError, match=r"tfds:mnist is not prepared in "
                       rf"{tmp_path}\. Prepare it once with `tfds build "
                       rf"mnist --data_dir {tmp_path}`") as error:
        data.from_spec({"tfds": "mnist", "data_dir": str(tmp_path)})
    assert error.value.key == "tfds"


def test_tfds_unknown_name(tmp_path):
    with pytest.raises(DataError, match="Unknown TFDS data set 'no_such_"):
        data.from_spec("tfds:no_such_dataset_xyz")


def test_spec_errors():
    with pytest.raises(DataError, match="exactly one of"):
        data.from_spec({"tfds": "mnist", "folder": "x"})
    with pytest.raises(DataError, match="Unknown key 'dowload'") as error:
        data.from_spec({"tfds": "mnist", "dowload": True})
    assert error.value.key == "dowload"
