"""`packnet-tf demo`, then `packnet-tf train examples/digits_folder.yaml`.

The README's path for a new user: the demo packs the digits and exports
them, and writes the digits as an image folder that the example config
trains on.
"""

import zipfile

import pytest
import yaml
from cli_support import ROOT, run_cli, run_subprocess, write_config

from packnet_tf.io import checkpoint

TASKS = ["digits_0_1", "digits_2_3", "digits_4_5", "digits_6_7",
         "digits_8_9"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    done = run_subprocess("demo", "--out", out, "--epochs", "1",
                          "--finetune-epochs", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stdout


@pytest.mark.slow
def test_demo_trains_reports_and_exports_every_task(demo):
    out, stdout = demo
    for index, name in enumerate(TASKS, 1):
        assert f"[task {index}/5 {name}] end      test accuracy" in stdout
    table = stdout.split("right after each task and now:")[1]
    assert table.split("Who owns")[0].count("False") == 5
    assert "Who owns the network:" in stdout and "total" in stdout
    assert f"model (all tasks, resumable):  {out / 'digits.keras'}" in stdout
    for name in TASKS:
        assert (out / "serving" / name / "1" / "saved_model.pb").is_file()
        assert (out / "tflite" / f"{name}.tflite").read_bytes()[4:8] == (
            b"TFL3")
    assert (out / "capacity.png").read_bytes()[:4] == b"\x89PNG"
    model = checkpoint.load_model(out / "digits.keras")
    assert [t.name for t in model.tasks] == TASKS
    assert model.verify() == {name: 0.0 for name in TASKS}
    code, report, _ = run_cli("verify", out / "digits.keras")
    assert code == 0 and "verified: 5" in report


@pytest.mark.slow
def test_demo_refuses_a_folder_with_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = run_cli("demo", "--out", tmp_path)
    assert code == 2 and "holds files the demo did not write" in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.slow
@pytest.mark.parametrize("zipped", [False, True], ids=["folder", "zip"])
def test_the_example_config_trains_on_the_image_folder(demo, tmp_path,
                                                       zipped):
    images = demo[0] / "images"
    if zipped:
        root = tmp_path / "images.zip"
        with zipfile.ZipFile(root, "w") as archive:
            for file in sorted(images.rglob("*.png")):
                archive.write(file, f"images/{file.relative_to(images)}")
    else:
        root = images
    config = yaml.safe_load(
        (ROOT / "examples" / "digits_folder.yaml").read_text())
    assert all(t["data"]["folder"] == "../runs/demo/images"
               for t in config["tasks"])
    # Two of the five tasks, one epoch each: the config's shape, quickly.
    config["model"] = str(tmp_path / "model.keras")
    config["defaults"].update(epochs=1, finetune_epochs=1)
    config["tasks"] = config["tasks"][:2]
    for task in config["tasks"]:
        task["data"]["folder"] = str(root)
    path = write_config(tmp_path / "digits_folder.yaml", config)
    code, out, err = run_cli("train", path, "--quiet")
    assert code == 0, err
    model = checkpoint.load_model(tmp_path / "model.keras")
    assert [(t.name, t.state) for t in model.tasks] == [
        ("digits_0_1", "frozen"), ("digits_2_3", "frozen")]
    # "equal" over the five planned tasks: the first keeps a fifth.
    assert model.capacity().fractions()["digits_0_1"] == pytest.approx(
        0.2, abs=0.01)
    assert "[task 2/2 digits_2_3] end      test accuracy" in out
