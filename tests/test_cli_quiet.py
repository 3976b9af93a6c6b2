"""A quiet, quick `packnet-tf`: no TensorFlow to answer, no TF log lines.

`--help`, `--version` and a config error answer without importing
TensorFlow (the command starts from its launcher, `packnet_tf_cli`); a
plain `import packnet_tf` registers the Keras classes (tests/
test_registration.py); the demo's output holds none of TensorFlow's own lines unless `--verbose`.
"""

import json
import logging
import os
import re
import subprocess
import sys

import pytest
from cli_support import ROOT, cli_command, write_config

import packnet_tf
from packnet_tf.cli import quiet
from packnet_tf.cli.main import build_parser

#: Runs `packnet-tf` in this fresh process, then says what it imported.
_MAIN_PROBE = """
import contextlib, io, json, sys
from packnet_tf_cli import main
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
        code = main(sys.argv[1:])
    except SystemExit as stop:
        code = stop.code
print(json.dumps({"code": code, "out": out.getvalue(), "err": err.getvalue(),
                  "tensorflow": "tensorflow" in sys.modules,
                  "keras": "keras" in sys.modules}))
"""

_IMPORT_PROBE = """
import json, sys
import packnet_tf_cli  # as the console script does
import packnet_tf
print(json.dumps({"tensorflow": "tensorflow" in sys.modules,
                  "keras": "keras" in sys.modules,
                  "all": packnet_tf.__all__,
                  "dir": sorted(set(packnet_tf.__all__) - set(dir(packnet_tf)))}))
"""

#: A TensorFlow C++ log line (absl), or one of its loading notices.
_TF_LOG = re.compile(r"^[IWEF]\d{4} |oneDNN|cuda|^WARNING:tensorflow|"
                     r"absl::InitializeLog", re.IGNORECASE | re.MULTILINE)


def _env(**extra):
    """This checkout importable, no TensorFlow log variables set."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TF_CPP_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _probe(code, *argv, cwd=None):
    result = subprocess.run([sys.executable, "-c", code, *map(str, argv)],
                            env=_env(), cwd=cwd, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def bad_configs(tmp_path):
    """Configs that fail their checks: `{case: path}`."""
    network = {"type": "cnn", "input_shape": [8, 8, 1]}
    return {
        "missing": tmp_path / "missing.yaml",
        "unknown_key": write_config(tmp_path / "unknown.yaml", {
            "model": "m.keras", "network": network, "bogus": 1,
            "tasks": [{"name": "a", "data": "a.npz"}]}),
        "bad_value": write_config(tmp_path / "bad.yaml", {
            "model": "m.keras", "network": network,
            "tasks": [{"name": "a", "data": "a.npz", "epochs": "zero"}]}),
    }


@pytest.mark.parametrize("argv, code, says", [
    (["--help"], 0, "usage: packnet-tf"),
    (["--version"], 0, f"packnet-tf {packnet_tf.__version__}"),
    (["demo", "--help"], 0, "--finetune-epochs"),
    (["train", "--help"], 0, "--verbose"),
], ids=["help", "version", "demo-help", "train-help"])
def test_help_and_version_answer_without_tensorflow(argv, code, says):
    report = _probe(_MAIN_PROBE, *argv)
    assert report["code"] == code
    assert says in report["out"]
    assert not report["tensorflow"] and not report["keras"]


@pytest.mark.parametrize("case, says", [
    ("missing", "missing.yaml: no such config file."),
    ("unknown_key", "bogus: unknown key. Allowed here: "),
    ("bad_value", "tasks[0].epochs: expected an int >= 0. Received: 'zero'"),
])
def test_a_config_error_exits_2_without_tensorflow(bad_configs, case, says):
    report = _probe(_MAIN_PROBE, "train", bad_configs[case])
    assert report["code"] == 2
    assert report["err"].startswith("packnet-tf train: error: ")
    assert says in report["err"]
    assert not report["tensorflow"] and not report["keras"]


def test_the_command_imports_packnet_tf_without_tensorflow():
    report = _probe(_IMPORT_PROBE)
    assert report == {"tensorflow": False, "keras": False,
                      "all": packnet_tf.__all__, "dir": []}


def test_every_public_name_resolves_as_a_plain_import_would():
    import packnet_tf.convert  # binds the subpackage on the package

    for name in packnet_tf.__all__:
        assert getattr(packnet_tf, name) is not None
    assert packnet_tf.convert is sys.modules["packnet_tf.convert"].convert
    assert packnet_tf.export is sys.modules["packnet_tf.export"]
    assert packnet_tf.layers is sys.modules["packnet_tf.layers"]
    from packnet_tf import PackNetModel, train_task
    from packnet_tf.core.model import PackNetModel as model_class
    from packnet_tf.training.driver import train_task as train_function

    assert (PackNetModel, train_task) == (model_class, train_function)
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        packnet_tf.nothing  # noqa: B018


@pytest.mark.parametrize("argv, verbose", [
    (["demo"], False),
    (["--verbose", "demo"], True),
    (["demo", "--verbose"], True),
    (["train", "run.yaml", "--quiet"], False),
    (["--verbose", "train", "run.yaml", "--quiet"], True),
])
def test_verbose_before_or_after_the_command(argv, verbose):
    args = build_parser().parse_args(argv)
    assert args.verbose is verbose
    if args.command == "train":
        assert args.quiet  # Keras progress stays its own flag


@pytest.mark.parametrize("line, level, hidden", [
    (b"I0000 00:00:1796176618.240198   17438 port.cc:153] oneDNN on\n", 1,
     True),
    (b"I1201 02:01:32.123456   17438 reader.cc:83] Reading\n", 1, True),
    (b"W0000 00:00:1796176762.489151   18639 helpers.cc:364] Ignored\n", 2,
     True),
    (b"W0000 00:00:1796176762.489151   18639 helpers.cc:364] Ignored\n", 1,
     False),
    (b"E0000 00:00:1796176623.904108   17438 cuda.cc:52] failed\n", 3, True),
    (b"F0000 00:00:1796176623.904108   17438 check.cc:52] failed\n", 3,
     False),
    (quiet._ABSL_BANNER + b"\n", 1, True),
    (quiet._ABSL_BANNER + b"\n", 0, False),
    (b"Traceback (most recent call last):\n", 3, False),
    (b"I0000 is not a log line\n", 3, False),
])
def test_which_lines_a_log_level_hides(line, level, hidden):
    assert quiet._is_hidden(line, level) is hidden


def test_filtered_stderr_drops_log_lines_and_keeps_the_rest(capfd):
    with quiet.filtered_stderr(3):
        os.write(2, b"I0000 00:00:1.5   7 port.cc:1] loading\n")
        os.write(2, b"kept line\n")
        os.write(2, b"E0000 00:00:1.5   7 cuda.cc:2] no driver\n")
        os.write(2, b"F0000 00:00:1.5   7 check.cc:3] fatal\n")
        os.write(2, b"no newline at the end")
    assert capfd.readouterr().err == (
        "kept line\nF0000 00:00:1.5   7 check.cc:3] fatal\n"
        "no newline at the end")


def test_quiet_sets_the_log_level_only_if_unset_and_puts_back(monkeypatch):
    logger = logging.getLogger("tensorflow")
    level = logger.level
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    with quiet.quiet_tensorflow():
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
        assert logger.level == logging.ERROR
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    assert logger.level == level
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    with quiet.quiet_tensorflow():
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    with quiet.quiet_tensorflow(verbose=True):
        assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
        assert logger.level == level


def _demo(out, *flags):
    return subprocess.run(
        cli_command("demo", "--out", out, "--epochs", "1",
                    "--finetune-epochs", "1", *flags),
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=600, check=False)


@pytest.mark.slow
def test_the_demo_prints_only_its_own_lines(tmp_path):
    done = _demo(tmp_path / "run")
    assert done.returncode == 0, done.stdout[-3000:]
    assert _TF_LOG.findall(done.stdout) == []
    assert "Trained 5 tasks in " in done.stdout
    assert (tmp_path / "run" / "tflite" / "digits_8_9.tflite").is_file()


@pytest.mark.slow
def test_the_demo_shows_tensorflow_lines_with_verbose(tmp_path):
    done = _demo(tmp_path / "run", "--no-export", "--verbose")
    assert done.returncode == 0, done.stdout[-3000:]
    assert re.search(r"^[IWEF]\d{4} ", done.stdout, re.MULTILINE)
