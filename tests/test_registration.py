"""`import packnet_tf` registers every Keras class: `load_model` in a fresh
process needs no `custom_objects` and no touch of a public name (issue 29).
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import conv_bn_trunk

import packnet_tf as pn

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: Loads the model file argv[1] after the import named argv[2] only, and
#: prints its outputs on the probe file argv[3] and which classes Keras
#: knows by the names argv[4:].
_LOAD_PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[2])
import keras, numpy as np
registered = {name: keras.saving.get_registered_object(name) is not None
              for name in sys.argv[4:]}
model = keras.saving.load_model(sys.argv[1])
outputs = model(np.load(sys.argv[3]), training=False)
print(json.dumps({"registered": registered,
                  "class": type(model).__name__,
                  "outputs": keras.ops.convert_to_numpy(outputs).tolist()}))
"""


def _registered_names():
    """Every class the package registers, read from its source."""
    pattern = re.compile(
        r'register_keras_serializable\(package="packnet_tf"\)\s*\nclass '
        r"(\w+)")
    names = set()
    for path in (ROOT / "packnet_tf").rglob("*.py"):
        names.update(pattern.findall(path.read_text()))
    return sorted(f"packnet_tf>{name}" for name in names)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved model with batch norm and one finished task, its probe and
    its outputs on it."""
    folder = tmp_path_factory.mktemp("registration")
    keras.utils.set_random_seed(0)
    model = pn.PackNetModel(conv_bn_trunk(), max_tasks=2)
    model.add_task("a", num_classes=3)
    model.prune(0.5)
    model.end_task(recalibrate=False)
    probe = np.random.default_rng(0).normal(size=(4, 6, 6, 2)).astype(
        "float32")
    np.save(folder / "probe.npy", probe)
    model.save(folder / "model.keras")
    expected = keras.ops.convert_to_numpy(model(probe, training=False))
    return folder, expected


def test_the_source_scan_finds_every_class():
    names = _registered_names()
    assert {"packnet_tf>PackNetModel", "packnet_tf>TaskBatchNormalization",
            "packnet_tf>PackedDense", "packnet_tf>GradualPruning"} <= set(
                names)


@pytest.mark.slow
@pytest.mark.parametrize("module", ["packnet_tf", "packnet_tf.layers"])
def test_load_model_after_a_plain_import_in_a_fresh_process(saved, module):
    # Mutation check: without `_register_keras_classes()` at the end of
    # packnet_tf/__init__.py, both cases fail ("Could not locate class").
    folder, expected = saved
    names = _registered_names()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_PROBE, str(folder / "model.keras"),
         module, str(folder / "probe.npy"), *names],
        env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["registered"] == dict.fromkeys(names, True)
    assert report["class"] == "PackNetModel"
    np.testing.assert_array_equal(np.asarray(report["outputs"],
                                             dtype=expected.dtype), expected)
