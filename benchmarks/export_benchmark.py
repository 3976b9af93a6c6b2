"""Export benchmark: size and latency of every exported form, against plain Keras.

Trains the split-cifar10-5 network (../shared/data/README.md) on its five
tasks *briefly* (a few hundred steps per task: enough for realistic owner
masks, 50% pruned per task; not for accuracy), exports it in every format
and layout of `packnet_tf.export`, and prints
- file sizes, against a plain Keras model of the same shape (the same
  layers from `keras.layers`, holding task 5's weights) exported by Keras'
  own exporters, and against one network's float32 weights;
- per-batch latency of each exported form against that plain model,
  measured side by side in one process: every round times every form in a
  rotated order (this machine switches between two speeds; see
  ../shared/NOTES.md), and the ratio to the plain reference is taken
  within each round; the median and the spread over rounds are reported.
Writes benchmarks/results/export.json. Not a test: run it by hand.

    python benchmarks/export_benchmark.py [--steps 200] [--rounds 10]
"""

import argparse
import os
import pathlib
import sys
import tempfile
import time
import zipfile

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from common import (  # noqa: E402
    cifar_cnn_layers,
    command,
    machine,
    summary,
    write_json,
)

DATA = (pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
        / "cifar10_jpg.zip")
#: split-cifar10-5's tasks, in order.
TASKS = {"t1": ("airplane", "automobile"), "t2": ("bird", "cat"),
         "t3": ("deer", "dog"), "t4": ("frog", "horse"),
         "t5": ("ship", "truck")}
BATCH = 64


def read_split(archive, split, classes, limit=None):
    """Images in [0, 1] and labels of `classes` from the zip, shuffled."""
    import tensorflow as tf

    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(n for n in archive.namelist()
                       if n.startswith(f"{split}/{name}/")
                       and n.endswith(".jpg"))
        for file in files[:limit]:
            images.append(tf.io.decode_jpeg(archive.read(file)).numpy())
            labels.append(label)
    order = np.random.default_rng(0).permutation(len(labels))
    x = np.stack(images).astype("float32") / 255.0
    return x[order], np.asarray(labels)[order]


def train(steps):
    """The split-cifar10-5 PackNetModel after 5 brief tasks, and test data."""
    import keras

    import packnet_tf as pn

    keras.utils.set_random_seed(0)
    trunk = keras.Sequential([keras.Input((32, 32, 3))]
                             + cifar_cnn_layers(keras.layers, packed=True))
    model = pn.PackNetModel(trunk, max_tasks=5, name="split_cifar10_5")
    per_class = steps * BATCH // 4  # two epochs of `steps` steps
    tests = {}
    with zipfile.ZipFile(DATA) as archive:
        for task, classes in TASKS.items():
            x, y = read_split(archive, "train", classes, per_class)
            tests[task] = read_split(archive, "test", classes, 500)
            started = time.perf_counter()
            pn.train_task(model, task, (x, y), num_classes=2, epochs=2,
                          prune_fraction=0.5, finetune_epochs=1,
                          batch_size=BATCH, verbose=0)
            accuracy = np.mean(np.argmax(
                model.predict(tests[task][0], batch_size=256, verbose=0),
                axis=1) == tests[task][1])
            print(f"- {task} {classes}: {len(y)} images, "
                  f"{2 * len(y) // BATCH} + {len(y) // BATCH} steps, "
                  f"test accuracy {accuracy:.3f}, "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
    return model, tests


def plain_keras(model, task):
    """The same network from `keras.layers`, holding `task`'s weights."""
    import keras

    from packnet_tf import export

    plain = keras.Sequential([keras.Input((32, 32, 3))]
                             + cifar_cnn_layers(keras.layers)
                             + [keras.layers.Dense(2)], name="plain")
    plain.set_weights(export.plain_model(model, task).get_weights())
    return plain


def size_of(path):
    path = pathlib.Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def export_all(model, plain, root, calibration):
    """Writes every form; returns `{name: (path, kind)}`."""
    from packnet_tf import export
    from packnet_tf.export.checks import select_tasks
    from packnet_tf.export.to_tflite import convert

    forms = {}
    plain.save(root / "plain.keras")
    forms["keras .keras (plain)"] = (root / "plain.keras", "keras")
    plain.export(str(root / "plain_saved"), format="tf_saved_model",
                 verbose=False)
    forms["SavedModel (plain, keras export)"] = (root / "plain_saved", "sm")
    plain.export(str(root / "plain.tflite"), format="litert", verbose=False)
    forms["TFLite float (plain, keras export)"] = (root / "plain.tflite",
                                                   "lite")
    model.save(root / "packed.keras")
    forms["keras .keras (PackNetModel, 5 tasks)"] = (root / "packed.keras",
                                                     "keras")

    per_task = export.saved_model(model, root / "serving")
    forms["SavedModel per-task (t5)"] = (per_task["t5"], "sm")
    forms["SavedModel per-task (5 dirs)"] = (root / "serving", "sm-all")
    multi = export.saved_model(model, root / "serving", layout="multi")
    forms["SavedModel multi (5 tasks)"] = (multi, "sm")

    for quantize in (None, "dynamic", "float16", "int8"):
        name = quantize or "float"
        path = export.tflite(model, root / f"t5_{name}.tflite", task="t5",
                             quantize=quantize,
                             representative_data=calibration["t5"])
        forms[f"TFLite {name} (t5)"] = (path, "lite")
    for task in ("t1", "t5"):
        path = export.tflite(model, root / f"{task}_sparse.tflite", task=task,
                             sparse=True)
        forms[f"TFLite float sparse ({task})"] = (path, "lite-nodelegate")

    infos = select_tasks(model, None)
    for layout, quantize in (("shared", None), ("shared", "float16"),
                             ("stacked", None), ("stacked", "float16"),
                             ("stacked", "dynamic"),
                             ("stacked", "int8")):
        name = f"TFLite multi {layout} {quantize or 'float'} (5 tasks)"
        path = root / f"multi_{layout}_{quantize or 'float'}.tflite"
        path.write_bytes(convert(model, infos, layout=layout,
                                 quantize=quantize,
                                 representative_data=calibration))
        forms[name] = (path, "lite")
    return forms


def runners(forms, model, plain):
    """`{name: callable(batch) -> outputs}` for every latency form."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    spec = tf.TensorSpec([None, 32, 32, 3], tf.float32)
    model.use_task("t5")
    calls = {
        "Keras plain (tf.function)": tf.function(
            lambda x: plain(x, training=False), input_signature=[spec]),
        "Keras PackNetModel t5 (tf.function)": tf.function(
            lambda x: model(x, training=False), input_signature=[spec]),
    }
    loaded = tf.saved_model.load(str(forms["SavedModel (plain, keras "
                                          "export)"][0]))
    calls["SavedModel (plain, keras export)"] = (
        lambda s: lambda x: s.serve(x))(loaded)
    for name, signature in (("SavedModel per-task (t5)", "serving_default"),
                            ("SavedModel multi (5 tasks)", "task_t5")):
        # The closure keeps the loaded object (and its variables) alive.
        served = tf.saved_model.load(str(forms[name][0]))
        calls[name] = (lambda s, k: lambda x: s.signatures[k](inputs=x))(
            served, signature)

    def lite(path, delegates=True):
        resolver = (OpResolverType.AUTO if delegates
                    else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter = Interpreter(model_path=str(path), num_threads=2,
                                  experimental_op_resolver_type=resolver)
        keys = interpreter.get_signature_list()
        key = "task_t5" if "task_t5" in keys else (
            "task_t1" if "task_t1" in keys else next(iter(keys)))
        runner = interpreter.get_signature_runner(key)
        (input_name,) = runner.get_input_details()
        return lambda x: runner(**{input_name: x})

    plain_lite = forms["TFLite float (plain, keras export)"][0]
    calls["TFLite float (plain, keras export)"] = lite(plain_lite)
    calls["TFLite float (plain, no XNNPACK)"] = lite(plain_lite, False)
    for name, (path, kind) in forms.items():
        if kind.startswith("lite") and "plain" not in name:
            calls[name] = lite(path, kind != "lite-nodelegate")
    return calls


def reference_of(name):
    """The plain form a latency form is compared with."""
    if not name.startswith("TFLite"):
        return "Keras plain (tf.function)"
    if "sparse" in name:
        return "TFLite float (plain, no XNNPACK)"
    return "TFLite float (plain, keras export)"


def measure(calls, x, rounds, repeats):
    """Seconds per batch of every form, `rounds` samples each, interleaved."""
    import tensorflow as tf

    names = list(calls)
    inputs = {n: (x if n.startswith("TFLite") else tf.constant(x))
              for n in names}
    for name in names:  # warm up: trace, allocate
        for _ in range(2):
            calls[name](inputs[name])
    times = {n: [] for n in names}
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            for _ in range(repeats):
                calls[name](inputs[name])
            times[name].append((time.perf_counter() - started) / repeats)
    return times


def latency_table(times):
    rows = {}
    for name, samples in times.items():
        reference = reference_of(name)
        ratios = np.asarray(samples) / np.asarray(times[reference])
        rows[name] = {"seconds": summary(samples), "reference": reference,
                      "ratio": summary(ratios)}
    return rows


def check_parity(calls, model, x):
    """Max |output - PackNetModel t5| of every form on one batch."""
    model.use_task("t5")
    expected = np.asarray(model(x, training=False))
    diffs = {}
    for name, call in calls.items():
        if name.endswith("(t1)"):
            continue  # another task
        out = call(x)
        if isinstance(out, dict):
            (out,) = out.values()
        diffs[name] = float(np.max(np.abs(np.asarray(out) - expected)))
    return diffs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200,
                        help="training steps per task (fine-tuning: half)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3,
                        help="calls per form per round")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    print(f"Training split-cifar10-5 BRIEFLY ({args.steps} steps + "
          f"{args.steps // 2} fine-tuning steps per task, batch {BATCH}, "
          "50% pruned per task): for sizes and latency only, not accuracy.",
          flush=True)
    model, tests = train(args.steps)
    plain = plain_keras(model, "t5")
    calibration = {t: tests[t][0][:200] for t in TASKS}
    weights = sum(w.numpy().nbytes for w in plain.weights)
    with tempfile.TemporaryDirectory() as folder:
        forms = export_all(model, plain, pathlib.Path(folder), calibration)
        sizes = {name: size_of(path) for name, (path, _) in forms.items()}
        calls = runners(forms, model, plain)
        x64 = tests["t5"][0][:BATCH]
        parity = check_parity(calls, model, x64)
        latency = {}
        for batch in (BATCH, 1):
            times = measure(calls, tests["t5"][0][:batch], args.rounds,
                            args.repeats)
            latency[batch] = latency_table(times)

    reference_size = {"sm": "SavedModel (plain, keras export)",
                      "sm-all": "SavedModel (plain, keras export)",
                      "lite": "TFLite float (plain, keras export)",
                      "lite-nodelegate": "TFLite float (plain, keras export)",
                      "keras": "keras .keras (plain)"}
    print(f"\nOne network's float32 weights (trunk + one head): "
          f"{weights / 1024:.0f} KiB")
    print(f"\n{'file sizes':<42}{'KiB':>9}{'x plain same format':>21}"
          f"{'x weights':>11}")
    for name, (path, kind) in forms.items():
        plain_size = sizes[reference_size[kind]]
        print(f"{name:<42}{sizes[name] / 1024:>9.0f}"
              f"{sizes[name] / plain_size:>21.2f}"
              f"{sizes[name] / weights:>11.2f}")
    for batch, rows in latency.items():
        print(f"\nlatency per batch of {batch} ({args.rounds} rounds x "
              f"{args.repeats} calls)")
        print(f"{'form':<42}{'median ms':>10}{'min-max ms':>15}"
              f"{'x plain (median, min-max)':>30}")
        for name, row in rows.items():
            s, r = row["seconds"], row["ratio"]
            print(f"{name:<42}{s['median'] * 1e3:>10.2f}"
                  f"{s['min'] * 1e3:>7.2f}-{s['max'] * 1e3:<7.2f}"
                  f"{r['median']:>12.2f} ({r['min']:.2f}-{r['max']:.2f})")
    print("\nmax |output - PackNetModel t5| on one batch of test images:")
    for name, diff in parity.items():
        print(f"  {name:<42}{diff:.2e}")
    print("\nreferences: TF forms vs 'Keras plain (tf.function)'; TFLite "
          "forms vs 'TFLite float (plain, keras export)', sparse ones vs "
          "the plain file without XNNPACK (sparse files cannot use it).")

    path = write_json("export.json", {
        "machine": machine(),
        "command": command(),
        "note": (f"split-cifar10-5 trained briefly: {args.steps} + "
                 f"{args.steps // 2} steps per task (batch {BATCH}), 50% "
                 "pruned per task; sizes and latency only, not accuracy"),
        "weights_bytes": weights,
        "sizes_bytes": sizes,
        "latency": {str(b): rows for b, rows in latency.items()},
        "max_abs_diff_vs_model": parity,
    })
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
