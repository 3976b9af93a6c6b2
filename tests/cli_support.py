"""Helpers shared by the command-line tests: tiny data, configs, runs."""

import contextlib
import io
import os
import pathlib
import subprocess
import sys

import numpy as np
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: Tiny tasks: (name, classes).
TASKS = (("a", 2), ("b", 3), ("c", 2))


def make_npz_tasks(folder, tasks=TASKS, n_train=96, n_test=32, seed=0,
                   shape=(8, 8, 1)):
    """Writes one learnable `.npz` per task; returns their paths by name."""
    rng = np.random.default_rng(seed)
    paths = {}
    for name, classes in tasks:
        arrays = {}
        for split, n in (("train", n_train), ("test", n_test)):
            y = rng.integers(0, classes, n)
            x = rng.normal(size=(n,) + shape).astype("float32")
            x += y.reshape((-1,) + (1,) * len(shape)) * 0.8
            arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
        paths[name] = pathlib.Path(folder) / f"{name}.npz"
        np.savez(paths[name], **arrays)
    return paths


def tiny_config(folder, tasks=TASKS, **top):
    """A small, fast run config over `make_npz_tasks` data, as a dict."""
    config = {
        "model": "out/model.keras",
        "seed": 1,
        "network": {"type": "cnn", "input_shape": [8, 8, 1], "conv": [4,
                    "pool"], "dense": [8], "batch_norm": True},
        "defaults": {"epochs": 2, "finetune_epochs": 1, "batch_size": 16,
                     "prune_fraction": "equal"},
        "tasks": [{"name": name, "data": f"{name}.npz"}
                  for name, _ in tasks],
    }
    config.update(top)
    return config


def write_config(path, config):
    """Writes `config` as YAML to `path`; returns the path."""
    path = pathlib.Path(path)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_cli(*argv):
    """Runs `packnet-tf` in this process: `(exit code, stdout, stderr)`."""
    from packnet_tf.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv], out=out)
    return code, out.getvalue(), err.getvalue()


def cli_command(*argv):
    """The command line that runs `packnet-tf` in a fresh process."""
    # The console script's module: TensorFlow loads only when needed.
    return [sys.executable, "-m", "packnet_tf_cli"] + [str(a) for a in argv]


def cli_env():
    """The environment for `cli_command`: this checkout importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def run_subprocess(*argv, timeout=600):
    """Runs `packnet-tf` in a fresh process; returns the CompletedProcess."""
    return subprocess.run(cli_command(*argv), env=cli_env(), text=True,
                          capture_output=True, timeout=timeout)


def fingerprints(model_path):
    """`{task: fingerprint}` of a saved model."""
    from packnet_tf.io import checkpoint

    model = checkpoint.load_model(model_path)
    return {t.name: t.fingerprint for t in model.tasks}
