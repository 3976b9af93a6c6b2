"""The serving contract: exports load where packnet_tf and Keras cannot be imported.

TF Serving itself cannot be installed here, so these check what it relies
on: plain `tf.saved_model.load` in a fresh process without Keras,
`saved_model_cli run`, and LiteRT files in that same process.
"""

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from packnet_tf import export

from test_export_plain import (
    FLOAT_TOLERANCE,
    every_kind_trunk,
    model_outputs,
    packed_model,
    probe_inputs,
)

pytestmark = pytest.mark.slow

TASKS = ("a", "b", "c")

#: Runs in the fresh process: Keras, tf_keras and packnet_tf are made
#: unimportable before TensorFlow is imported.
CONSUMER = textwrap.dedent("""
    import sys
    for name in ("keras", "tf_keras", "packnet_tf"):
        sys.modules[name] = None  # `import keras` now raises ImportError
    try:
        import keras
    except ImportError:
        pass
    else:
        raise SystemExit("keras is importable")

    import numpy as np
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    root = sys.argv[1]
    x = np.load(f"{root}/x.npy")
    for task in "abc":
        served = tf.saved_model.load(f"{root}/saved/{task}/1")
        out = served.signatures["serving_default"](inputs=x)["outputs"]
        np.save(f"{root}/per_task_{task}.npy", out.numpy())
    multi = tf.saved_model.load(f"{root}/saved/multi_model/1")
    lite = Interpreter(model_path=f"{root}/all.tflite")
    for task in "abc":
        out = multi.signatures[f"task_{task}"](inputs=x)["outputs"]
        np.save(f"{root}/multi_{task}.npy", out.numpy())
        runner = lite.get_signature_runner(f"task_{task}")
        np.save(f"{root}/lite_{task}.npy", runner(inputs=x)["outputs"])
    loaded = sorted(n for n, m in sys.modules.items()
                    if m is not None and n.split(".")[0] in
                    ("keras", "tf_keras", "packnet_tf"))
    print("loaded:", loaded)
""")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("exported")
    model = packed_model(every_kind_trunk(), training_task="d")
    export.saved_model(model, root / "saved")
    export.saved_model(model, root / "saved", layout="multi")
    export.tflite(model, root / "all.tflite")
    x = probe_inputs(model)
    np.save(root / "x.npy", x)
    expected = {task: model_outputs(model, task, x) for task in TASKS}
    return root, expected


def _env():
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def test_exports_load_without_keras_or_packnet(exported):
    root, expected = exported
    script = root / "consumer.py"
    script.write_text(CONSUMER)
    result = subprocess.run(
        [sys.executable, str(script), str(root)], capture_output=True,
        text=True, env=_env(), timeout=300, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loaded: []" in result.stdout
    for task in TASKS:
        for kind in ("per_task", "multi", "lite"):
            np.testing.assert_allclose(
                np.load(root / f"{kind}_{task}.npy"), expected[task],
                rtol=0, atol=FLOAT_TOLERANCE, err_msg=f"{kind} {task}")


@pytest.mark.parametrize("model_dir, signature, task", [
    ("b", "serving_default", "b"),
    ("multi_model", "task_c", "c"),
])
def test_saved_model_cli_runs_the_export(exported, tmp_path, model_dir,
                                         signature, task):
    root, expected = exported
    cli = shutil.which("saved_model_cli") or os.path.join(
        os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run(
        [cli, "run", "--dir", str(root / "saved" / model_dir / "1"),
         "--tag_set", "serve", "--signature_def", signature,
         "--inputs", f"inputs={root / 'x.npy'}", "--outdir", str(tmp_path)],
        capture_output=True, text=True, env=_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(
        np.load(tmp_path / "outputs.npy"), expected[task], rtol=0,
        atol=FLOAT_TOLERANCE)
