"""Importing packnet_tf: what it makes reachable, and what it leaves alone."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

_PROBE = """
import json, logging, os, sys
import keras, tensorflow  # their own import effects are not ours
before = dict(os.environ)
level = logging.getLogger().level
import packnet_tf
print(json.dumps({
    "env_changed": sorted(k for k in set(before) | set(os.environ)
                          if before.get(k) != os.environ.get(k)),
    "root_log_level_same": logging.getLogger().level == level,
    "tfmot_imported": any(m.startswith("tensorflow_model_optimization")
                          for m in sys.modules),
    "export": [packnet_tf.export.saved_model.__name__,
               packnet_tf.export.tflite.__name__],
}))
"""


@pytest.mark.slow
def test_import_changes_no_global_state_and_reaches_export():
    root = pathlib.Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_USE_LEGACY_KERAS",)}
    env["PYTHONPATH"] = str(root)
    result = subprocess.run([sys.executable, "-c", _PROBE], env=env,
                            capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"env_changed": [], "root_log_level_same": True,
                      "tfmot_imported": False,
                      "export": ["saved_model", "tflite"]}
