"""Training overhead of PackNet's masked step, side by side in one process.

Times one training step of the split-cifar10-5 network (batch 64, real
CIFAR-10 images from ../shared/data) as
- a `PackNetModel` training its second task (half the trunk frozen by task 1),
- the same architecture in plain Keras 3,
- the same architecture in tf_keras wrapped by tfmot's `prune_low_magnitude`
  (the ecosystem's existing masked training),
alternating the three in every round, and reports the median and spread of
the per-round ratios. Not a test: run it by hand.

    python benchmarks/train_overhead.py [--rounds 10] [--steps 30]
"""

import argparse
import os
import time
import zipfile

import numpy as np

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                    "cifar10_jpg.zip")


def load_batches(path, count, batch):
    """`count` batches of real CIFAR-10 training images, two classes."""
    import tensorflow as tf

    with zipfile.ZipFile(path) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".jpg")
                       and n.startswith(("train/airplane/",
                                         "train/automobile/")))
        names = names[::max(1, len(names) // (count * batch))][:count * batch]
        images = np.stack([
            tf.io.decode_jpeg(archive.read(n)).numpy() for n in names])
    labels = np.array([0 if "airplane" in n else 1 for n in names], "int32")
    return (images.astype("float32") / 255.0), labels


def build_plain():
    import keras

    from common import cifar_cnn_layers

    model = keras.Sequential([keras.Input((32, 32, 3))]
                             + cifar_cnn_layers(keras.layers)
                             + [keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(1e-3), keras.losses
                  .SparseCategoricalCrossentropy(from_logits=True))
    return model, []


def build_packnet():
    import keras

    import packnet_tf as pn
    from common import cifar_cnn_layers

    trunk = keras.Sequential([keras.Input((32, 32, 3))]
                             + cifar_cnn_layers(keras.layers, packed=True))
    model = pn.PackNetModel(trunk, max_tasks=5)
    model.add_task("t1", num_classes=2)
    model.prune(0.5)
    model.end_task()
    model.add_task("t2", num_classes=2)
    model.compile(keras.optimizers.Adam(1e-3), keras.losses
                  .SparseCategoricalCrossentropy(from_logits=True))
    return model, []


def build_tfmot():
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    import tensorflow_model_optimization as tfmot
    import tf_keras

    from common import cifar_cnn_layers

    # tfmot sets TF_USE_LEGACY_KERAS on import; put it back.
    if before is None:
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
    else:
        os.environ["TF_USE_LEGACY_KERAS"] = before
    sparsity = tfmot.sparsity.keras
    base = tf_keras.Sequential([tf_keras.Input((32, 32, 3))]
                               + cifar_cnn_layers(tf_keras.layers)
                               + [tf_keras.layers.Dense(2)])
    model = sparsity.prune_low_magnitude(
        base, pruning_schedule=sparsity.ConstantSparsity(0.5, 0, frequency=1))
    model.compile(tf_keras.optimizers.Adam(1e-3), tf_keras.losses
                  .SparseCategoricalCrossentropy(from_logits=True))
    return model, [sparsity.UpdatePruningStep()]


def time_steps(model, callbacks, x, y, batch):
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0,
              callbacks=callbacks)
    return (time.perf_counter() - start) / (len(x) // batch)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--data", default=DATA)
    args = parser.parse_args(argv)

    from common import command, machine, summary, write_json

    x, y = load_batches(args.data, args.steps, args.batch)
    models = {"packnet": build_packnet(), "keras": build_plain(),
              "tfmot": build_tfmot()}
    for model, callbacks in models.values():  # trace and warm up
        time_steps(model, callbacks, x[:2 * args.batch], y[:2 * args.batch],
                   args.batch)
    seconds = {name: [] for name in models}
    names = list(models)
    for r in range(args.rounds):
        order = names[r % 3:] + names[:r % 3]  # rotate who goes first
        for name in order:
            seconds[name].append(time_steps(*models[name], x, y, args.batch))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{n} {seconds[n][-1] * 1e3:.1f} ms/step" for n in names),
            flush=True)
    packnet = np.array(seconds["packnet"])
    result = {
        "workload": "split-cifar10-5 network, batch %d, task 2 of 5 "
                    "(half the trunk frozen)" % args.batch,
        "seconds_per_step": {n: summary(v) for n, v in seconds.items()},
        "ratio_vs_keras": summary(packnet / np.array(seconds["keras"])),
        "ratio_vs_tfmot": summary(packnet / np.array(seconds["tfmot"])),
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "machine": machine(),
        "command": command(),
    }
    path = write_json("train_overhead.json", result)
    print(f"\n{'':<10}{'ms/step median':>16}{'min':>8}{'max':>8}")
    for n, s in result["seconds_per_step"].items():
        print(f"{n:<10}{s['median'] * 1e3:>16.1f}{s['min'] * 1e3:>8.1f}"
              f"{s['max'] * 1e3:>8.1f}")
    for key in ("ratio_vs_keras", "ratio_vs_tfmot"):
        s = result[key]
        print(f"PackNet {key.replace('_', ' ')}: median {s['median']:.2f}x "
              f"(min {s['min']:.2f}, max {s['max']:.2f}) over {args.rounds} "
              "rounds")
    print(f"machine: {result['machine']}\nwrote {path}")


if __name__ == "__main__":
    main()
