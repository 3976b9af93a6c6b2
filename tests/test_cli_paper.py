"""examples/paper_vgg16.yaml stays valid: the same config on mock TFDS data.

The real run needs ImageNet and three TFDS data sets and days of compute.
Here the very same config runs with `tfds.testing.mock_data`, a 32x32
input, random initial weights (no download), one epoch per phase and tiny
batches: VGG-16 converted with its ImageNet classifier as task 1, pruned by
half, then three tasks, the last unpruned.
"""

import copy

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
import yaml
from cli_support import ROOT, run_cli, write_config

from packnet_tf.io import checkpoint

PAPER = ROOT / "examples" / "paper_vgg16.yaml"
EXAMPLES = 4


def _valid_mock_examples(builder, split, decoders=None, read_config=None,
                         shuffle_files=False, **kwargs):
    """Mock examples with only the supervised features, all valid.

    TFDS' default mock draws bounding boxes with min > max for
    caltech_birds2011 and fails; these data sets' images and labels are
    all the run reads.
    """
    image_key, label_key = builder.info.supervised_keys
    classes = builder.info.features[label_key].num_classes
    rng = np.random.default_rng(len(builder.name))
    images = [rng.integers(0, 256, (20 + 3 * i, 24, 3), dtype=np.uint8)
              for i in range(EXAMPLES)]
    labels = rng.integers(0, classes, EXAMPLES)
    encoded = [tf.io.encode_jpeg(image).numpy() for image in images]
    dataset = tf.data.Dataset.from_tensor_slices(
        {image_key: encoded, label_key: labels})
    if decoders and image_key in decoders:
        return dataset  # encoded bytes, as SkipDecoding asks
    return dataset.map(lambda ex: {
        image_key: tf.io.decode_jpeg(ex[image_key], channels=3),
        label_key: ex[label_key]})


def _tiny_copy(tmp_path):
    config = yaml.safe_load(PAPER.read_text())
    config = copy.deepcopy(config)
    config["model"] = str(tmp_path / "paper.keras")
    config["network"].update(weights=None, input_shape=[32, 32, 3])
    config["defaults"].update(batch_size=2, epochs=1, finetune_epochs=1)
    for task in config["tasks"]:
        task["data"]["data_dir"] = str(tmp_path / "tfds")
    return write_config(tmp_path / "paper.yaml", config), config


def test_the_paper_config_is_as_documented():
    config = yaml.safe_load(PAPER.read_text())
    assert config["network"]["name"] == "VGG16"
    assert config["network"]["weights"] == "imagenet"
    names = [t["name"] for t in config["tasks"]]
    assert names == ["imagenet", "cubs", "stanford_cars", "flowers"]
    datasets = [t["data"]["tfds"] for t in config["tasks"]]
    assert datasets == ["imagenet2012", "caltech_birds2011", "cars196",
                        "oxford_flowers102"]
    first, last = config["tasks"][0], config["tasks"][-1]
    assert first["prune_fraction"] == 0.5 and first["epochs"] == 0
    defaults = config["defaults"]
    assert (defaults["epochs"], defaults["learning_rate"]) == (20, 0.001)
    assert defaults["prune_fraction"] == 0.75
    assert (defaults["finetune_epochs"],
            defaults["finetune_learning_rate"]) == (10, 0.0001)
    assert last["prune_fraction"] == 0


def test_without_prepared_data_it_says_how_to_prepare(tmp_path):
    path, _ = _tiny_copy(tmp_path)
    code, _, err = run_cli("train", path)
    assert code == 2
    assert "tasks[0].data.tfds: task 'imagenet': tfds:imagenet2012 is not " \
           "prepared" in err
    assert "needs a manual download first" in err


@pytest.mark.slow
def test_the_paper_config_runs_on_mock_data(tmp_path):
    path, config = _tiny_copy(tmp_path)
    with tfds.testing.mock_data(num_examples=EXAMPLES,
                                as_dataset_fn=_valid_mock_examples):
        code, out, err = run_cli("train", path, "--quiet")
    assert code == 0, err
    model = checkpoint.load_model(config["model"])
    assert [(t.name, t.num_classes, t.state) for t in model.tasks] == [
        ("imagenet", 1000, "frozen"), ("cubs", 200, "frozen"),
        ("stanford_cars", 196, "frozen"), ("flowers", 102, "frozen")]
    assert all(d == 0.0 for d in model.verify().values())
    shares = model.capacity().fractions()
    # ImageNet keeps half; cubs and cars keep a quarter of what they got;
    # flowers takes the rest.
    assert shares["imagenet"] == pytest.approx(0.5, abs=1e-3)
    assert shares["cubs"] == pytest.approx(0.125, abs=1e-3)
    assert shares["stanford_cars"] == pytest.approx(0.5 * 0.75 * 0.25,
                                                    abs=1e-3)
    assert shares["free"] == 0.0
    assert "[task 1/4 imagenet] train    0 epochs" in out
    assert "[task 4/4 flowers] end" in out
