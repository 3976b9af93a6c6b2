"""Training-time augmentation: checked specs, seeded, off by default, train only."""

import json

import numpy as np
import pytest
from cli_support import make_npz_tasks, run_cli, tiny_config, write_config

from packnet_tf.data import ArraySource, batches
from packnet_tf.data.augmentation import check_augment
from packnet_tf.io import checkpoint

SPEC = {"flip": "horizontal", "translate": 0.25}


def _source(n=48):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 8, 8, 3)).astype("float32")
    y = np.arange(n) % 2
    return ArraySource({"train": (x, y), "test": (x[:16], y[:16])},
                       class_names=["a", "b"])


def _all(dataset):
    xs, ys = zip(*dataset.as_numpy_iterator())
    return np.concatenate(xs), np.concatenate(ys)


@pytest.mark.parametrize("spec, match", [
    ({"flip": "sideways"}, r"`flip` to be one of \['horizontal'"),
    ({"translate": 1.5}, r"`translate` to be a number in \(0, 1\)"),
    ({"translate": True}, r"translate=True"),
    ({"rotate": 0.1}, r"Unknown augmentation key\(s\) \['rotate'\]"),
])
def test_bad_specs_say_what_was_expected(spec, match):
    with pytest.raises(ValueError, match=match):
        check_augment(spec)
    with pytest.raises(TypeError, match="Expected augmentation as a dict"):
        check_augment("flip")


def test_specs_that_turn_nothing_on_are_none():
    assert check_augment(None) is None
    assert check_augment({}) is None
    assert check_augment({"flip": None, "translate": 0}) is None
    assert check_augment(SPEC) == {"flip": "horizontal", "translate": 0.25}


def test_augmentation_is_seeded_and_changes_every_epoch():
    source = _source()
    plain_x, plain_y = _all(batches(source, "train", (8, 8, 3),
                                    batch_size=16, shuffle=False))
    first = batches(source, "train", (8, 8, 3), batch_size=16,
                    shuffle=False, seed=3, augment=SPEC)
    epoch_1, labels = _all(first)
    epoch_2, _ = _all(first)
    again, _ = _all(batches(source, "train", (8, 8, 3), batch_size=16,
                            shuffle=False, seed=3, augment=SPEC))
    other, _ = _all(batches(source, "train", (8, 8, 3), batch_size=16,
                            shuffle=False, seed=4, augment=SPEC))
    np.testing.assert_array_equal(epoch_1, again)  # same seed, same data
    np.testing.assert_array_equal(labels, plain_y)
    assert not np.array_equal(epoch_1, plain_x)
    assert not np.array_equal(epoch_1, epoch_2)
    assert not np.array_equal(epoch_1, other)


def test_off_by_default_and_never_for_evaluation_data():
    source = _source()
    default, _ = _all(batches(source, "train", (8, 8, 3), shuffle=False))
    none, _ = _all(batches(source, "train", (8, 8, 3), shuffle=False,
                           augment=None))
    np.testing.assert_array_equal(default, none)
    rng = np.random.default_rng(0)  # _source()'s images, untouched
    np.testing.assert_array_equal(
        default, rng.normal(size=(48, 8, 8, 3)).astype("float32"))
    with pytest.raises(ValueError, match="training batches only; received "
                                         "split 'test'"):
        batches(source, "test", (8, 8, 3), augment=SPEC)
    with pytest.raises(ValueError, match=r"input shape \(192,\)"):
        batches(source, "train", (192,), augment=SPEC)


def test_a_config_error_names_the_augment_key(tmp_path):
    make_npz_tasks(tmp_path)
    config = tiny_config(tmp_path)
    config["tasks"][1]["augment"] = {"flip": "diagonal"}
    path = write_config(tmp_path / "bad.yaml", config)
    code, _, err = run_cli("train", path)
    assert code == 2
    assert f"{path}: tasks[1].augment: Expected `flip`" in err


@pytest.mark.slow
def test_a_run_with_augmentation_reports_unaugmented_test_accuracy(tmp_path):
    make_npz_tasks(tmp_path, tasks=(("a", 2),))
    config = tiny_config(tmp_path, tasks=(("a", 2),))
    config["defaults"].update(augment={"flip": "horizontal"},
                              prune_fraction=0.5)
    path = write_config(tmp_path / "run.yaml", config)
    code, out, err = run_cli("train", path, "--quiet")
    assert code == 0, out + err
    model_path = tmp_path / "out" / "model.keras"
    record = json.loads((tmp_path / "out" / "model.run.json").read_text())
    model = checkpoint.load_model(model_path)
    model.use_task("a")
    data = np.load(tmp_path / "a.npz")
    predicted = np.argmax(model.predict(data["x_test"], verbose=0), axis=-1)
    accuracy = float(np.mean(predicted == data["y_test"]))
    assert record["accuracy"]["a"] == pytest.approx(accuracy, abs=1e-6)


def test_holdout_splits_the_train_split_in_two_fixed_parts():
    source = _source(n=50)
    kept, kept_y = _all(batches(source, "train", (8, 8, 3), shuffle=False,
                                holdout=5))
    held, held_y = _all(batches(source, "train", (8, 8, 3), shuffle=False,
                                holdout=5, held_out=True))
    x = np.random.default_rng(0).normal(size=(50, 8, 8, 3)).astype("float32")
    np.testing.assert_array_equal(held, x[::5])
    np.testing.assert_array_equal(kept, np.delete(x, np.s_[::5], axis=0))
    assert len(held_y) == 10 and len(kept_y) == 40
    dataset = batches(source, "train", (8, 8, 3), batch_size=16, seed=1,
                      holdout=5)
    assert int(dataset.cardinality()) == 3  # 40 examples, batches of 16
    shuffled, _ = _all(dataset)
    assert sorted(map(bytes, shuffled)) == sorted(map(bytes, kept))
    with pytest.raises(ValueError, match="`holdout` to be an int >= 2"):
        batches(source, "train", (8, 8, 3), holdout=1)
