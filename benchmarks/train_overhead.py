"""Training overhead of PackNet's masked step, side by side in one process.

Times one training step (batch 64, real CIFAR-10 images from
../shared/data) of the split-cifar10-5 CNN (`--network cnn`, the default) or
of a dense-heavy MLP on the flattened images (`--network mlp`,
3072-2048-2048-1024; see `common.STEP_NETWORKS`) as
- a `PackNetModel` training its second task (half the trunk frozen by task 1),
- the same architecture in plain Keras 3,
- the same architecture in tf_keras wrapped by tfmot's `prune_low_magnitude`
  (the ecosystem's existing masked training) at 50% sparsity, twice:
  `tfmot` computes its masks at step 0 only (`ConstantSparsity(0.5,
  begin_step=0, end_step=0)`: then it trains under fixed masks, as PackNet
  does), `tfmot-f100` recomputes them every 100 steps (tfmot's default
  `frequency`, so its top-k sorts are part of the cost),
- the same architecture in plain tf_keras (`tf_keras`: tfmot's framework
  without its masks, to tell the masks' cost from the framework's),
all of them taking turns step by step (`common.interleaved_step_seconds`:
every `train_on_batch` timed on its own), and reports the median and spread
of the per-round ratios. Not a test: run it by hand.

    python benchmarks/train_overhead.py [--network cnn|mlp] [--rounds 10]
        [--steps 30]

The CNN writes `results/train_overhead.json`, the MLP
`results/train_overhead_mlp.json`.
"""

import argparse
import os
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


def build_plain(network):
    import keras

    from common import bench_layers

    model = keras.Sequential([keras.Input((32, 32, 3))]
                             + bench_layers(network, keras.layers)
                             + [keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(1e-3), keras.losses
                  .SparseCategoricalCrossentropy(from_logits=True))
    return model, []


def build_packnet(network):
    import keras

    import packnet_tf as pn
    from common import bench_layers

    trunk = keras.Sequential([keras.Input((32, 32, 3))]
                             + bench_layers(network, keras.layers, packed=True))
    model = pn.PackNetModel(trunk, max_tasks=5)
    model.add_task("t1", num_classes=2)
    model.prune(0.5)
    model.end_task(recalibrate=False)  # timing only: no data
    model.add_task("t2", num_classes=2)
    model.compile(keras.optimizers.Adam(1e-3), keras.losses
                  .SparseCategoricalCrossentropy(from_logits=True))
    return model, []


def build_tfmot(network, end_step=-1, frequency=100, prune=True):
    """tf_keras under tfmot's `prune_low_magnitude`; `prune=False`: plain."""
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    import tensorflow_model_optimization as tfmot
    import tf_keras

    from common import bench_layers

    # tfmot sets TF_USE_LEGACY_KERAS on import; put it back.
    if before is None:
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
    else:
        os.environ["TF_USE_LEGACY_KERAS"] = before
    sparsity = tfmot.sparsity.keras
    base = tf_keras.Sequential([tf_keras.Input((32, 32, 3))]
                               + bench_layers(network, tf_keras.layers)
                               + [tf_keras.layers.Dense(2)])
    if not prune:
        base.compile(tf_keras.optimizers.Adam(1e-3), tf_keras.losses
                     .SparseCategoricalCrossentropy(from_logits=True))
        return base, []
    model = sparsity.prune_low_magnitude(
        base, pruning_schedule=sparsity.ConstantSparsity(
            0.5, begin_step=0, end_step=end_step, frequency=frequency))
    model.compile(tf_keras.optimizers.Adam(1e-3), tf_keras.losses
                  .SparseCategoricalCrossentropy(from_logits=True))
    # Outside fit(), tfmot's callback is driven by hand (its documented
    # custom-loop use): it sets the wrappers' pruning step before training.
    callback = sparsity.UpdatePruningStep()
    callback.set_model(model)
    callback.on_train_begin()
    return model, [callback]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--network", choices=("cnn", "mlp"), default="cnn")
    args = parser.parse_args(argv)

    from common import (batch_stepper, command, interleaved_step_seconds,
                        machine, summary, write_json)

    x, y = load_batches(args.data, args.steps, args.batch)
    models = {"packnet": build_packnet(args.network),
              "keras": build_plain(args.network),
              "tfmot": build_tfmot(args.network, end_step=0),
              "tfmot-f100": build_tfmot(args.network, frequency=100),
              "tf_keras": build_tfmot(args.network, prune=False)}
    steppers = {name: batch_stepper(model, x, y, args.batch)
                for name, (model, _) in models.items()}
    seconds = interleaved_step_seconds(steppers, args.rounds, args.steps)
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{n} {seconds[n][r] * 1e3:.1f} ms/step" for n in models))
    packnet = np.array(seconds["packnet"])
    result = {
        "workload": "%s, batch %d, task 2 of 5 (half the trunk frozen)" % (
            "split-cifar10-5 CNN" if args.network == "cnn"
            else "dense MLP 3072-2048-2048-1024", args.batch),
        "network": args.network,
        "seconds_per_step": {n: summary(v) for n, v in seconds.items()},
        "ratio_vs_keras": summary(packnet / np.array(seconds["keras"])),
        "ratio_vs_tfmot": summary(packnet / np.array(seconds["tfmot"])),
        "ratio_vs_tfmot_f100": summary(
            packnet / np.array(seconds["tfmot-f100"])),
        # What tfmot's masking adds to its own framework.
        "tfmot_vs_tf_keras": summary(np.array(seconds["tfmot"])
                                     / np.array(seconds["tf_keras"])),
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "machine": machine(),
        "command": command(),
    }
    path = write_json("train_overhead.json" if args.network == "cnn"
                      else f"train_overhead_{args.network}.json", result)
    print(f"\n{'':<12}{'ms/step median':>16}{'min':>8}{'max':>8}")
    for n, s in result["seconds_per_step"].items():
        print(f"{n:<12}{s['median'] * 1e3:>16.1f}{s['min'] * 1e3:>8.1f}"
              f"{s['max'] * 1e3:>8.1f}")
    labels = {"ratio_vs_keras": "PackNet / Keras",
              "ratio_vs_tfmot": "PackNet / tfmot",
              "ratio_vs_tfmot_f100": "PackNet / tfmot-f100",
              "tfmot_vs_tf_keras": "tfmot / tf_keras"}
    for key, label in labels.items():
        s = result[key]
        print(f"{label}: median {s['median']:.2f}x "
              f"(min {s['min']:.2f}, max {s['max']:.2f}) over {args.rounds} "
              "rounds")
    print(f"machine: {result['machine']}\nwrote {path}")


if __name__ == "__main__":
    main()
