"""The data path of dissimilar tasks: greyscale arrays read by an RGB
network (`color_mode`), and a seeded random subset of a train split
(`train_examples`, `subset_seed`), from a spec and by hand."""

import pathlib
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from packnet_tf import data
from packnet_tf.data import DataError
from packnet_tf.data.source import subset_positions


def _grey_npz(path, count=12, size=28):
    rng = np.random.default_rng(0)
    np.savez(path,
             x_train=rng.integers(0, 256, (count, size, size), np.uint8),
             y_train=np.arange(count) % 3,
             x_test=rng.integers(0, 256, (4, size, size), np.uint8),
             y_test=np.arange(4) % 3,
             class_names=np.array(["a", "b", "c"]))
    return path


def _all(dataset):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(xs), np.concatenate(ys)


def test_grey_arrays_resized_and_repeated_to_rgb(tmp_path):
    path = _grey_npz(tmp_path / "grey.npz")
    source = data.from_spec({"npz": str(path), "color_mode": "rgb"})
    x, y = _all(data.batches(source, "test", (32, 32, 3), batch_size=3,
                             preprocess="unit"))
    raw = np.load(path)["x_test"]
    # What the workload says: 28x28 grey resized bilinearly to 32x32,
    # the same values in all 3 channels, then scaled to [0, 1].
    expected = tf.image.resize(raw[..., None].astype("float32"),
                               (32, 32)).numpy() / 255.0
    assert x.shape == (4, 32, 32, 3)
    for channel in range(3):
        np.testing.assert_array_equal(x[..., channel], expected[..., 0])
    np.testing.assert_array_equal(y, np.load(path)["y_test"])


def test_one_channel_arrays_and_rgb_to_grayscale():
    grey = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 1)
    source = data.ArraySource({"train": (grey, np.array([0, 1]))},
                              test_split=None)
    source.color_mode = "rgb"
    x, _ = _all(data.batches(source, "train", (4, 4, 3), preprocess="none",
                             shuffle=False))
    np.testing.assert_array_equal(x, np.repeat(grey, 3, -1).astype("f4"))
    rgb = np.stack([grey[..., 0]] * 3, -1)
    source = data.ArraySource({"train": (rgb, np.array([0, 1]))},
                              test_split=None)
    source.color_mode = "grayscale"
    x, _ = _all(data.batches(source, "train", (4, 4, 1), preprocess="none",
                             shuffle=False))
    # Luma weights (ITU-R 601), summing to 0.9999: TensorFlow's own.
    np.testing.assert_array_equal(
        x, tf.image.rgb_to_grayscale(rgb.astype("f4")).numpy())
    np.testing.assert_allclose(x, grey.astype("f4"), rtol=2e-4)


def test_grey_arrays_without_color_mode_name_the_option(tmp_path):
    source = data.from_spec(str(_grey_npz(tmp_path / "grey.npz")))
    with pytest.raises(DataError, match=r"\(28, 28\).*\(32, 32, 3\).*"
                       r"color_mode: rgb"):
        data.fit_plan(source, (32, 32, 3))


def test_color_mode_errors(tmp_path):
    path = str(_grey_npz(tmp_path / "grey.npz"))
    with pytest.raises(DataError, match=r"one of \['auto', 'rgb', "
                       r"'grayscale'\].*Received: 'RGB'") as error:
        data.from_spec({"npz": path, "color_mode": "RGB"})
    assert error.value.key == "color_mode"
    source = data.from_spec({"npz": path, "color_mode": "rgb"})
    with pytest.raises(DataError, match="color_mode 'rgb' makes 3-channel"):
        data.fit_plan(source, (32, 32, 1))
    with pytest.raises(DataError, match="color_mode 'rgb' makes 3-channel"):
        data.fit_plan(source, (784,))


def test_encoded_grey_images_decode_to_rgb(tmp_path):
    root = tmp_path / "images"
    for split in ("train", "test"):
        folder = root / split / "a"
        folder.mkdir(parents=True)
        pixels = np.full((5, 5, 1), 77, np.uint8)
        (folder / "0.png").write_bytes(tf.io.encode_png(pixels).numpy())
    source = data.from_spec({"folder": str(root), "color_mode": "rgb"})
    x, _ = _all(data.batches(source, "test", (5, 5, 3), preprocess="none"))
    np.testing.assert_array_equal(x, np.full((1, 5, 5, 3), 77, "f4"))


def test_subset_positions_are_seeded_sorted_and_distinct():
    a = subset_positions(100, 10, seed=0)
    np.testing.assert_array_equal(a, subset_positions(100, 10, seed=0))
    assert not np.array_equal(a, subset_positions(100, 10, seed=1))
    assert list(a) == sorted(set(a)) and len(a) == 10
    # NumPy's PCG64: the same positions on every machine and release.
    np.testing.assert_array_equal(
        a, np.sort(np.random.default_rng(0).permutation(100)[:10]))
    assert len(subset_positions(100, 100)) == 100


@pytest.mark.parametrize("count", [0, 13, 2.5, True, "5"])
def test_subset_counts_out_of_range(tmp_path, count):
    path = str(_grey_npz(tmp_path / "grey.npz"))
    with pytest.raises(DataError, match=r"`train_examples` to be an int from "
                       rf"1 to the split's 12 examples. Received: "
                       rf"{count!r}") as error:
        data.from_spec({"npz": path, "train_examples": count})
    assert error.value.key == "train_examples"


def test_npz_subset_keeps_the_seeded_examples_and_every_test_example(
        tmp_path):
    path = _grey_npz(tmp_path / "grey.npz")
    source = data.from_spec({"npz": str(path), "train_examples": 5,
                             "subset_seed": 3})
    assert source.num_examples("train") == 5
    assert source.num_examples("test") == 4
    raw = np.load(path)
    keep = subset_positions(12, 5, seed=3)
    x, y = _all(data.batches(source, "train", (28, 28, 1), shuffle=False,
                             preprocess="none"))
    np.testing.assert_array_equal(x[..., 0], raw["x_train"][keep])
    np.testing.assert_array_equal(y, raw["y_train"][keep])


def test_zip_subset_reads_only_the_chosen_files(tmp_path):
    root = tmp_path / "images"
    for split, count in (("train", 9), ("test", 2)):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.full((3, 3, 3), i, np.uint8)
                (folder / f"{i}.png").write_bytes(
                    tf.io.encode_png(pixels).numpy())
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for file in sorted(root.rglob("*.png")):
            z.write(file, str(file.relative_to(root)))
    whole = data.from_spec(str(archive))
    source = data.from_spec({"folder": str(archive), "train_examples": 6})
    keep = subset_positions(18, 6, seed=0)
    files, labels = whole._files["train"]
    assert list(source._files["train"][0]) == list(files[keep])
    x, y = _all(data.batches(source, "train", (3, 3, 3), shuffle=False,
                             preprocess="none"))
    assert len(y) == 6
    np.testing.assert_array_equal(y, labels[keep])
    expected = [int(pathlib.PurePosixPath(f).stem) for f in files[keep]]
    np.testing.assert_array_equal(x[:, 0, 0, 0], expected)


def test_subset_seed_needs_train_examples(tmp_path):
    with pytest.raises(DataError, match="set `train_examples` too") as error:
        data.from_spec({"npz": str(_grey_npz(tmp_path / "g.npz")),
                        "subset_seed": 1})
    assert error.value.key == "subset_seed"


def test_a_source_without_subsets_says_what_to_do():
    source = data.DatasetSource(
        {"train": tf.data.Dataset.from_tensor_slices(([1.0], [0]))},
        num_classes=1, test_split=None)
    with pytest.raises(DataError, match=r"train\[:10000\]"):
        source.take_subset("train", 1)
