"""Helpers the benchmarks share: the reference network, machine facts, JSON."""

import json
import os
import pathlib
import platform
import sys
import tempfile

import numpy as np

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def machine():
    """A short description of this machine for the results."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()}"


def command():
    """The command line that produced the results."""
    return " ".join(["python"] + sys.argv)


def write_json(name, payload):
    """Writes `results/<name>` atomically and returns its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    fd, tmp = tempfile.mkstemp(dir=RESULTS, prefix=f".{name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path


def summary(values):
    """Median, min and max of `values`."""
    values = np.asarray(values, dtype=float)
    return {"median": float(np.median(values)), "min": float(values.min()),
            "max": float(values.max())}


def cifar_cnn_layers(module, width=1, packed=False):
    """The split-cifar10-5 trunk (shared/data/README.md) as a layer list.

    Args:
        module: `keras.layers` (Keras 3) or `tf_keras.layers`.
        width: channel multiplier (1 is the reference network).
        packed: use packnet_tf's packed layers instead of `module`'s.
    """
    if packed:
        from packnet_tf import layers as packed_layers

        conv, dense = packed_layers.PackedConv2D, packed_layers.PackedDense
    else:
        conv, dense = module.Conv2D, module.Dense
    w = width
    return [
        conv(32 * w, 3, padding="same", activation="relu"),
        conv(32 * w, 3, padding="same", activation="relu"),
        module.MaxPooling2D(),
        conv(64 * w, 3, padding="same", activation="relu"),
        conv(64 * w, 3, padding="same", activation="relu"),
        module.MaxPooling2D(),
        conv(128 * w, 3, padding="same", activation="relu"),
        module.MaxPooling2D(),
        module.Flatten(),
        dense(256 * w, activation="relu"),
    ]
