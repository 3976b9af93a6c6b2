"""An ImageNet MobileNet (batch norm everywhere) learns Flowers-102: PackNet
against plain Keras fine-tuning, in inference mode (issue 29).

The flow a new user tries first: `keras.applications.MobileNet(alpha=0.25,
include_top=False, pooling="avg")` with the real ImageNet weights
(../shared/data/weights), converted without a task of its own, then one
task trained 3 epochs (Adam 1e-3), pruned by half, fine-tuned 1 epoch
(1e-4). Plain Keras trains the same network with the same epochs and
rates, unpruned. Images are read from ../shared/data/flowers102_jpg.zip by
the library's own zip source, resized to 96x96, MobileNet's [-1, 1]
preprocessing; tested on the `valid` split (818 images, 102 classes).

Per seed (the same seed for both methods: same head initialization and
batch order) it records PackNet's inference-mode accuracy:
- `stale`: with the moving statistics training left (no recalibration,
  what the library did before issue 29);
- `recalibrated`: after `recalibrate_batch_norm` over the training data
  (the library's default now), and with only the first k batches of it
  (how many batches are enough);
- `batch_statistics`: every batch norm normalizing with its test batch's
  own statistics (32 images, shuffled: the split is stored class by
  class), and over the whole split as one batch
  (`batch_statistics_whole_split`): the network's accuracy without stored
  statistics;
and, after the training phase (before pruning), the inference accuracy
with the moving statistics and after recalibration (whether recalibration
should also follow training).

Run: python benchmarks/pretrained_batch_norm.py [--seeds 0,1,2]
     [--limit N]  (writes results/pretrained_batch_norm.json after every
     seed, with mean ± sd and paired differences under "summary"; `--limit`
     trains on the first N training images, for a quick check only;
     `--summarize` recomputes the summary of a finished file)
"""

import argparse
import dataclasses
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (command, machine, parse_seeds,  # noqa: E402
                               write_json)

DATA = ROOT.parent / "shared" / "data"
FLOWERS = DATA / "flowers102_jpg.zip"
WEIGHTS = DATA / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
SHAPE = (96, 96, 3)
BATCH = 32
EPOCHS, FINETUNE_EPOCHS = 3, 1
RATE, FINETUNE_RATE = 1e-3, 1e-4
#: `prune(keep=...)` of the "keep_depthwise" variant.
DEPTHWISE = ["*/depthwise_kernel"]
#: Recalibration lengths measured (batches of 32; None: the whole split).
STEPS = (1, 5, 20, 50, None)


def _base():
    import keras

    return keras.applications.MobileNet(
        input_shape=SHAPE, alpha=0.25, include_top=False, pooling="avg",
        weights=str(WEIGHTS))


def _data(source, split, seed, limit=None, shuffle=None):
    from packnet_tf.data import batches

    data = batches(source, split, SHAPE, batch_size=BATCH, seed=seed,
                   preprocess="mobilenet", shuffle=shuffle)
    if limit:
        data = data.take(-(-limit // BATCH))
    return data


def _accuracy(predict, data):
    import numpy as np

    correct = total = 0
    for x, y in data:
        predicted = np.argmax(np.asarray(predict(x)), axis=-1)
        correct += int(np.sum(predicted == np.asarray(y)))
        total += len(predicted)
    return correct / total


def run_keras(source, seed, limit):
    """Plain Keras fine-tuning: the same network, epochs and rates."""
    import keras

    keras.utils.set_random_seed(seed)
    base = _base()
    model = keras.Sequential([base, keras.layers.Dense(source.num_classes)])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    start = time.perf_counter()
    for epochs, rate, phase_seed in ((EPOCHS, RATE, 0),
                                     (FINETUNE_EPOCHS, FINETUNE_RATE, 1)):
        model.compile(keras.optimizers.Adam(rate), loss)
        model.fit(_data(source, "train", seed * 10 + phase_seed, limit),
                  epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    test = _data(source, "valid", 0)
    return {"accuracy": _accuracy(lambda x: model(x, training=False), test),
            "train_seconds": seconds}


def _prune(model, recipe, pruning):
    """Prunes as `pruning` says (see `run_packnet`)."""
    from packnet_tf.training import phases

    if pruning == "all":
        # Every kernel, depthwise ones too (the library's default before
        # it kept them: `prune_keep=[]`).
        return phases.prune(model, dataclasses.replace(recipe, prune_keep=()))
    if pruning == "keep_depthwise":
        return model.prune(recipe.prune_fraction, keep=DEPTHWISE)
    return model.prune_counts(dict.fromkeys(model.owned_counts(), 0))


def run_packnet(source, seed, limit, pruning="all"):
    """PackNet, phase by phase, measuring the statistics along the way.

    `pruning`: "all" (half of every kernel, depthwise ones too: the
    library's default when this benchmark was written, `prune_keep=[]`
    now), "none" (the same phases, nothing pruned: PackNet's machinery
    against plain Keras) or "keep_depthwise" (half of every kernel but the
    depthwise ones, where the pruning cost lies: the library's default
    now). The last two record the final accuracies only.
    """
    import keras
    import tensorflow as tf

    import packnet_tf as pn
    from packnet_tf.core.recalibration import (batch_norm_layers,
                                               batch_statistics)
    from packnet_tf.training import phases

    keras.utils.set_random_seed(seed)
    model = pn.convert(_base(), max_tasks=2)
    layers = batch_norm_layers(model)
    model.add_task("flowers", num_classes=source.num_classes)
    recipe = phases.Recipe(epochs=EPOCHS, prune_fraction=0.5,
                           finetune_epochs=FINETUNE_EPOCHS,
                           learning_rate=RATE, finetune_learning_rate=(
                               FINETUNE_RATE))
    test = _data(source, "valid", 0)
    statistics = _data(source, "train", 0, limit)  # shuffled once, seed 0

    def inference(x):
        return model(x, training=False)

    @tf.function(reduce_retracing=True)
    def with_batch_statistics(x):
        with batch_statistics(layers):
            return model(x, training=False)

    def fit_phase(phase_seed):
        def fit(epochs, callbacks):
            return model.fit(_data(source, "train", seed * 10 + phase_seed,
                                   limit),
                             epochs=epochs, verbose=0, callbacks=callbacks)
        return fit

    result = {}
    start = time.perf_counter()
    phases.train(model, recipe, fit_phase(0))
    if pruning == "all":
        result["after_training"] = {"stale": _accuracy(inference, test)}
        with model._undoable():  # leaves the statistics training left
            model.recalibrate_batch_norm(statistics)
            result["after_training"]["recalibrated"] = _accuracy(inference,
                                                                 test)
    result["freed"] = sum(_prune(model, recipe, pruning).values())
    phases.finetune(model, recipe, fit_phase(1))
    seconds = time.perf_counter() - start
    result["stale"] = _accuracy(inference, test)
    # The split is stored class by class: batches of it in that order hold
    # one or two classes, whose statistics are not the population's.
    result["batch_statistics"] = _accuracy(
        with_batch_statistics, _data(source, "valid", 0, shuffle=True))
    # The whole split as one batch: statistics of the test data itself.
    result["batch_statistics_whole_split"] = _accuracy(
        with_batch_statistics, test.unbatch().batch(10_000))
    result["recalibrated_steps"] = {}
    for steps in STEPS if pruning == "all" else (None,):
        begun = time.perf_counter()
        model.recalibrate_batch_norm(statistics, steps=steps)
        took = time.perf_counter() - begun
        result["recalibrated_steps"][str(steps or "all")] = {
            "accuracy": _accuracy(inference, test), "seconds": took}
    # The library's default: one pass over the training data (the last).
    result["recalibrated"] = result["recalibrated_steps"]["all"]["accuracy"]
    model.end_task()
    result["train_seconds"] = seconds
    return result


def _mean_sd(values):
    import numpy as np

    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()),
            "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "values": values.tolist()}


def summarize(runs):
    """Mean ± sd over the seeds of every accuracy, and the paired
    differences (points) that README quotes."""
    rows = {
        "keras": [r["keras"]["accuracy"] for r in runs],
        "packnet_recalibrated": [r["packnet"]["recalibrated"] for r in runs],
        "packnet_stale": [r["packnet"]["stale"] for r in runs],
        "packnet_batch_statistics_32": [r["packnet"]["batch_statistics"]
                                        for r in runs],
        "packnet_batch_statistics_whole_split": [
            r["packnet"]["batch_statistics_whole_split"] for r in runs],
        "after_training_stale": [r["packnet"]["after_training"]["stale"]
                                 for r in runs],
        "after_training_recalibrated": [
            r["packnet"]["after_training"]["recalibrated"] for r in runs],
    }
    for pruning in ("none", "keep_depthwise"):
        rows[f"packnet_{pruning}"] = [
            r["packnet_pruning"][pruning]["recalibrated"] for r in runs]
        rows[f"packnet_{pruning}_batch_statistics_whole_split"] = [
            r["packnet_pruning"][pruning]["batch_statistics_whole_split"]
            for r in runs]
    for steps in STEPS:
        key = str(steps or "all")
        rows[f"recalibrated_{key}_batches"] = [
            r["packnet"]["recalibrated_steps"][key]["accuracy"] for r in runs]
    summary = {name: _mean_sd(values) for name, values in rows.items()}
    paired = {
        "packnet - keras": ("packnet_recalibrated", "keras"),
        "packnet - packnet stale": ("packnet_recalibrated", "packnet_stale"),
        "packnet - batch statistics (whole split)": (
            "packnet_recalibrated", "packnet_batch_statistics_whole_split"),
        "packnet - batch statistics (32)": (
            "packnet_recalibrated", "packnet_batch_statistics_32"),
        "packnet unpruned - keras": ("packnet_none", "keras"),
        "packnet keep depthwise - keras": ("packnet_keep_depthwise", "keras"),
        "packnet keep depthwise - batch statistics (whole split)": (
            "packnet_keep_depthwise",
            "packnet_keep_depthwise_batch_statistics_whole_split"),
    }
    summary["paired_points"] = {
        name: _mean_sd([100 * (a - b) for a, b in zip(rows[x], rows[y])])
        for name, (x, y) in paired.items()}
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", default="pretrained_batch_norm.json")
    parser.add_argument("--summarize", action="store_true",
                        help="only recompute the summary of --out's runs")
    args = parser.parse_args()
    if args.summarize:
        import json

        from benchmarks.common import RESULTS

        payload = json.loads((RESULTS / args.out).read_text())
        payload["summary"] = summarize(payload["runs"])
        write_json(args.out, payload)
        return
    seeds = parse_seeds(args.seeds, parser)

    from packnet_tf.data import ImageFolderSource

    source = ImageFolderSource(FLOWERS, train_split="train",
                               test_split="valid")
    runs = []
    for seed in seeds:
        packnet = run_packnet(source, seed, args.limit)
        plain = run_keras(source, seed, args.limit)
        variants = {pruning: run_packnet(source, seed, args.limit, pruning)
                    for pruning in ("none", "keep_depthwise")}
        runs.append({"seed": seed, "packnet": packnet, "keras": plain,
                     "packnet_pruning": variants})
        print(f"seed {seed}: PackNet {packnet['recalibrated']:.4f} "
              f"(stale {packnet['stale']:.4f}, batch statistics "
              f"{packnet['batch_statistics']:.4f}), Keras "
              f"{plain['accuracy']:.4f}", flush=True)
        write_json(args.out, {
            "benchmark": "pretrained_batch_norm",
            "machine": machine(), "command": command(),
            "date": time.strftime("%Y-%m-%d"),
            "setup": {"network": "MobileNet alpha 0.25, ImageNet weights, "
                      "include_top=False, pooling=avg", "input": SHAPE,
                      "data": "flowers102_jpg.zip train -> valid",
                      "epochs": EPOCHS, "finetune_epochs": FINETUNE_EPOCHS,
                      "learning_rates": [RATE, FINETUNE_RATE],
                      "batch_size": BATCH, "prune_fraction": 0.5,
                      "limit": args.limit},
            "runs": runs, "summary": summarize(runs)})


if __name__ == "__main__":
    main()
