"""`packnet-tf info`, `verify`, `eval` and `export` on a small saved model."""

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from cli_support import make_npz_tasks, run_cli

from packnet_tf.cli import networks
from packnet_tf.io import checkpoint

NETWORK = {"type": "cnn", "input_shape": [8, 8, 1], "conv": [4, "pool"],
           "dense": [8]}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A model with finished tasks a (2 classes) and b (3), and their data.

    Not trained: these commands read models; training has its own tests.
    """
    folder = tmp_path_factory.mktemp("commands")
    make_npz_tasks(folder, tasks=(("a", 2), ("b", 3)))
    keras.utils.set_random_seed(0)
    model = networks.build_network(NETWORK, max_tasks=3)
    for name, classes in (("a", 2), ("b", 3)):
        model.add_task(name, num_classes=classes)
        model.prune(0.5)
        model.end_task()
    checkpoint.save_model(model, folder / "model.keras")
    return folder


def _image_folder(root, classes=("left", "right")):
    for split in ("train", "test"):
        for label, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(3):
                pixels = np.full((12, 12, 1), 100 * label + i, np.uint8)
                (root / split / name / f"{i}.png").write_bytes(
                    tf.io.encode_png(pixels).numpy())
    return root


def test_info_lists_tasks_and_capacity(saved):
    code, out, _ = run_cli("info", saved / "model.keras")
    assert code == 0
    assert "2 of max_tasks=3 tasks" in out and "input (8, 8, 1)" in out
    assert "  1  a" in out and "  2  b" in out and "frozen" in out
    assert "Who owns the network:" in out and "conv1" in out


def test_info_json_and_plot(saved, tmp_path):
    plot = tmp_path / "capacity.png"
    code, out, _ = run_cli("info", saved / "model.keras", "--json",
                           "--plot", plot)
    assert code == 0
    report = json.loads(out.split("\nCapacity plot written")[0])
    assert [t["name"] for t in report["tasks"]] == ["a", "b"]
    shares = report["capacity"]["total"]
    assert shares["a"] == pytest.approx(0.5, abs=0.01)
    assert shares["b"] == pytest.approx(0.25, abs=0.01)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_verify_passes_on_an_untouched_model(saved):
    code, out, _ = run_cli("verify", saved / "model.keras")
    assert code == 0
    assert "a: ok" in out and "b: ok" in out and "verified: 2" in out


def test_verify_names_each_changed_task(saved, tmp_path):
    model = checkpoint.load_model(saved / "model.keras")
    # Weights only task b owns change b alone; a's head changes a alone.
    # (All of b's weights in fc1: one alone may feed a unit the 4-example
    # probe leaves inactive, and then no output changes.)
    layer = model.trunk.get_layer("fc1")
    owner = layer.kernel_owner.numpy()
    kernel = layer.kernel.numpy()
    kernel[owner == 2] += 1
    layer.kernel.assign(kernel)
    path = checkpoint.save_model(model, tmp_path / "tampered.keras")
    code, out, _ = run_cli("verify", path)
    assert code == 1
    assert "a: ok" in out and "b: CHANGED" in out
    assert "VERIFY FAILED: the outputs of task(s) 'b' changed" in out
    head = model.heads[0]
    head.kernel.assign(head.kernel.numpy() * 2)
    path = checkpoint.save_model(model, tmp_path / "tampered2.keras")
    code, out, _ = run_cli("verify", path)
    assert code == 1 and "task(s) 'a', 'b' changed" in out


def test_verify_on_a_corrupt_file_is_a_clear_error(tmp_path):
    path = tmp_path / "model.keras"
    path.write_bytes(b"\x00" * 100)
    code, _, err = run_cli("verify", path)
    assert code == 2
    assert err.strip().endswith("re-running it resumes from the last "
                                "complete state.")
    assert "\n" not in err.strip()


def test_eval_on_npz_folder_zip_and_tfds(saved, tmp_path):
    model = saved / "model.keras"
    code, out, err = run_cli("eval", model, "--task", "b", "--data",
                             saved / "b.npz")
    assert code == 0, err
    assert "b on npz:" in out and "(32 examples): accuracy" in out
    root = _image_folder(tmp_path / "images")
    code, out, err = run_cli("eval", model, "--task", "a", "--data", root)
    assert code == 0, err
    assert "(6 examples)" in out
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in root.rglob("*.png"):
            zf.write(file, file.relative_to(root))
    code, zipped, err = run_cli("eval", model, "--task", "a", "--data",
                                archive, "--classes", "right,left")
    assert code == 0, err
    assert "(6 examples)" in zipped
    with tfds.testing.mock_data(num_examples=40):
        # Encoded images are decoded to the network's channels.
        code, out, err = run_cli(
            "eval", model, "--task", "a", "--data", "tfds:cifar10",
            "--data-dir", tmp_path, "--classes", "0,1")
    assert code == 0, err
    assert "a on tfds:cifar10 [test]" in out
    with tfds.testing.mock_data(num_examples=40):
        code, out, err = run_cli(
            "eval", model, "--task", "a", "--data", "tfds:mnist",
            "--data-dir", tmp_path, "--classes", "3,5")
    assert code == 0, err
    assert "a on tfds:mnist [test]" in out


def test_eval_errors(saved):
    model = saved / "model.keras"
    code, _, err = run_cli("eval", model, "--task", "zz", "--data",
                           saved / "a.npz")
    assert code == 2 and "unknown task. " in err and "['a', 'b']" in err
    code, _, err = run_cli("eval", model, "--task", "a", "--data",
                           saved / "b.npz")
    assert code == 2 and "3 classes, but task 'a' has a head of 2" in err


def test_export_saved_models_and_tflite(saved, tmp_path):
    model = saved / "model.keras"
    code, out, err = run_cli("export", model, "--saved-model",
                             tmp_path / "serving", "--tflite-dir",
                             tmp_path / "lite", "--task", "a")
    assert code == 0, err
    assert (tmp_path / "serving" / "a" / "1" / "saved_model.pb").is_file()
    assert (tmp_path / "serving" / "models.config").is_file()
    lite = tmp_path / "lite" / "a.tflite"
    assert lite.read_bytes()[4:8] == b"TFL3"
    assert f"SavedModel: {tmp_path / 'serving' / 'a' / '1'}" in out
    assert f"TFLite: {lite}" in out
    # The LiteRT file gives the model's outputs for task a.
    from ai_edge_litert.interpreter import Interpreter

    x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    runner = Interpreter(model_path=str(lite)).get_signature_runner()
    keras_model = checkpoint.load_model(model)
    keras_model.use_task("a")
    np.testing.assert_allclose(runner(inputs=x)["outputs"],
                               keras_model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


def test_export_errors(saved, tmp_path):
    model = saved / "model.keras"
    code, _, err = run_cli("export", model)
    assert code == 2 and "say where to export" in err
    code, _, err = run_cli("export", model, "--tflite", tmp_path / "x",
                           "--task", "zz")
    assert code == 2 and "zz" in err
    code, _, err = run_cli("export", model, "--tflite", tmp_path / "q",
                           "--quantize", "int8")
    assert code == 2 and "pass --data" in err


def test_export_any_task_score(saved, tmp_path):
    model = saved / "model.keras"
    code, _, err = run_cli("export", model, "--saved-model", tmp_path / "s",
                           "--any-task-score", "statistics")
    assert code == 2 and "add --layout multi or --tflite FILE" in err
    # Tasks without an input density: the library's error, nothing written.
    code, _, err = run_cli("export", model, "--saved-model", tmp_path / "s",
                           "--layout", "multi", "--any-task-score",
                           "statistics")
    assert code == 2 and "have none" in err and "calibrate" in err
    assert not (tmp_path / "s").exists()
    from packnet_tf.inference.task_inference import calibrate

    packed = checkpoint.load_model(model)
    rng = np.random.default_rng(0)
    for name, shift in (("a", 0.0), ("b", 3.0)):
        calibrate(packed, name, rng.normal(
            shift, 1.0, size=(64, 8, 8, 1)).astype("float32"))
    checkpoint.save_model(packed, tmp_path / "calibrated.keras")
    code, out, err = run_cli(
        "export", tmp_path / "calibrated.keras", "--saved-model",
        tmp_path / "s", "--layout", "multi", "--any-task-score",
        "statistics")
    assert code == 0, err
    served = tf.saved_model.load(out.split("SavedModel: ")[1].strip())
    assert served.any_task_score().numpy() == b"statistics"
    x = rng.normal(3.0, 1.0, size=(4, 8, 8, 1)).astype("float32")
    answer = served.signatures["any_task"](inputs=x)
    import packnet_tf as pn

    expected = pn.infer_task(packed, x, score="statistics")
    np.testing.assert_array_equal(
        [t.decode() for t in answer["task"].numpy()], expected.task)
