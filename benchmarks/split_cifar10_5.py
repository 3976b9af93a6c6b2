"""split-cifar10-5 accuracy: PackNet vs individual networks and fine-tuning.

The reference workload of ../shared/data/README.md, side by side in one run:
five 2-way tasks of CIFAR-10 (real JPEGs from ../shared/data/cifar10_jpg.zip,
read through packnet_tf.data's image-folder source and decoded once), the
same CNN for every method:

- packnet: one `PackNetModel`; per task `train_task`: 4 epochs Adam 1e-3,
  prune 50% of the task's weights per layer (every task, the last one too,
  as the workload says), fine-tune 2 epochs Adam 1e-4; batch 64.
- individual: a fresh network per task, 6 epochs Adam 1e-3 (the upper bound).
- finetune: one trunk trained on the tasks in sequence, a head per task,
  6 epochs Adam 1e-3 each, nothing protected (shows forgetting).

Prints per task the test accuracy right after learning the task and after
all five, the mean final accuracy, mean forgetting (asserted exactly 0 for
PackNet, whose earlier tasks' logits are also asserted bit-identical),
train wall time, seconds per epoch (median epoch) and inference images/s
(batch 256, methods alternated), and writes results/split_cifar10_5.json. Not a test.

    PYTHONPATH=. python benchmarks/split_cifar10_5.py           # full run
    PYTHONPATH=. python benchmarks/split_cifar10_5.py --quick   # smoke run

The options below `--quick` change the PackNet schedule for measured
investigations; a run with any of them writes a separate JSON file (see
`--out`) whose workload names the change.
"""

import argparse
import os
import time

import keras
import numpy as np

import packnet_tf as pn
from common import (CIFAR10_ZIP, SPLIT_CIFAR10_5, as_arrays, cifar_cnn_layers,
                    command, decoded_split, machine, training_batches,
                    write_json)
from packnet_tf import ownership

EPOCHS, FINETUNE_EPOCHS, BASELINE_EPOCHS = 4, 2, 6
LEARNING_RATE, FINETUNE_LEARNING_RATE = 1e-3, 1e-4
BATCH, INFERENCE_BATCH, PRUNE_FRACTION = 64, 256, 0.5
#: Quick runs: tasks, training images (5 steps of 64) and test images per task.
QUICK_TASKS, QUICK_TRAIN, QUICK_TEST = 2, 5 * BATCH, 2 * INFERENCE_BATCH
#: Timed passes over every task's test images, per method.
INFERENCE_ROUNDS = 5


class EpochTimer(keras.callbacks.Callback):
    """Records every epoch's wall time."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


class FreshFreeWeights(keras.callbacks.Callback):
    """Re-draws a new task's weights from the free pool (a variant).

    The library starts a task's free weights at zero (pruning zeroes what
    it frees). This variant draws them again from Glorot-uniform (the
    layers' default initializer), once, when the task's first `fit` begins.
    """

    def __init__(self, seed):
        super().__init__()
        self.seed, self.done = seed, False

    def on_train_begin(self, logs=None):
        task_id = self.model.active_task.task_id
        if self.done or task_id == 1:
            return
        self.done = True
        init = keras.initializers.GlorotUniform(seed=self.seed + task_id)
        for layer in self.model.trunk.layers:
            for _, kernel, owner in getattr(layer, "packed_kernels",
                                            list)():
                mine = ownership.trainable_mask(owner, task_id)
                kernel.assign(
                    keras.ops.where(mine, init(kernel.shape), kernel))


def load_tasks(args):
    """Decodes each task's train and test images once."""
    tasks = []
    for classes in SPLIT_CIFAR10_5[:QUICK_TASKS if args.quick else None]:
        start = time.perf_counter()
        train, count = decoded_split(
            args.data, classes, "train", QUICK_TRAIN if args.quick else None)
        test, _ = decoded_split(
            args.data, classes, "test", QUICK_TEST if args.quick else None)
        x_test, y_test = as_arrays(test)
        tasks.append({"name": "_".join(classes), "train": train,
                      "count": count, "x_test": x_test, "y_test": y_test})
        print(f"decoded {tasks[-1]['name']}: {count} train, {len(y_test)} "
              f"test images in {time.perf_counter() - start:.1f} s",
              flush=True)
    return tasks


def predict(model, task):
    return model.predict(task["x_test"], batch_size=INFERENCE_BATCH,
                         verbose=0)


def accuracy(logits, task):
    return float(np.mean(np.argmax(logits, -1) == task["y_test"]))


def images_per_s(readies, tasks):
    """Inference images/s per method, the methods alternated in each round.

    A round times, for every method in turn (the order rotates), one
    `predict` at batch 256 over every task's test images; each method's
    figure is the median over rounds, so a slow spell of a shared machine
    hits every method alike.

    Args:
        readies: `{method: [function per task]}`; a function readies its
            task's model (PackNet switches its active task) and returns it.
        tasks: the tasks.

    Returns:
        `{method: images per second}`.
    """
    images = sum(len(t["y_test"]) for t in tasks)
    rates = {method: [] for method in readies}
    names = list(readies)
    for r in range(INFERENCE_ROUNDS):
        for method in names[r % len(names):] + names[:r % len(names)]:
            seconds = 0.0
            for ready, task in zip(readies[method], tasks):
                model = ready()
                start = time.perf_counter()
                predict(model, task)
                seconds += time.perf_counter() - start
            rates[method].append(images / seconds)
    return {method: float(np.median(r)) for method, r in rates.items()}


def result(after, final, train_seconds, timer):
    """A method's figures; `images_per_s` is filled in by `main`."""
    return {
        "acc_after_learning": after,
        "final_acc": final,
        "mean_final_acc": float(np.mean(final)),
        "mean_forgetting": float(np.mean(np.subtract(after, final))),
        "train_seconds": train_seconds,
        "seconds_per_epoch": float(np.median(timer.seconds)),
        "images_per_s": None,
    }


def run_packnet(tasks, args):
    keras.utils.set_random_seed(args.seed)
    trunk = keras.Sequential([keras.Input((32, 32, 3))]
                             + cifar_cnn_layers(keras.layers, packed=True))
    model = pn.PackNetModel(trunk, max_tasks=len(tasks))
    timer, after, logits_after, train_seconds = EpochTimer(), [], [], 0.0
    for i, task in enumerate(tasks):
        last = i == len(tasks) - 1
        callbacks = [timer]
        if args.free_init == "glorot":
            callbacks.append(FreshFreeWeights(args.seed))
        unpruned_last = last and args.no_prune_last
        start = time.perf_counter()
        pn.train_task(
            model, task["name"],
            training_batches(task["train"], task["count"], BATCH),
            num_classes=2,
            # An unpruned task is not fine-tuned: it trains as long as the
            # baselines instead.
            epochs=BASELINE_EPOCHS if unpruned_last else EPOCHS,
            prune_fraction=None if unpruned_last else args.prune_fraction,
            finetune_epochs=FINETUNE_EPOCHS, optimizer="adam",
            learning_rate=LEARNING_RATE,
            finetune_learning_rate=FINETUNE_LEARNING_RATE,
            callbacks=callbacks, verbose=0)
        train_seconds += time.perf_counter() - start
        logits_after.append(predict(model, task))
        after.append(accuracy(logits_after[-1], task))
        print(f"packnet {task['name']}: {after[-1]:.4f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    final = []
    for task, logits in zip(tasks, logits_after):
        model.use_task(task["name"])
        now = predict(model, task)
        final.append(accuracy(now, task))
        # PackNet's promise, checked on real data: earlier tasks' outputs
        # are bit-identical after every later task.
        if not np.array_equal(now, logits):
            raise AssertionError(
                f"PackNet changed task {task['name']!r}'s logits by up to "
                f"{np.max(np.abs(now - logits))} after later tasks.")
    if final != after:
        raise AssertionError(f"PackNet forgot: {after} -> {final}")
    drift = model.verify()
    if any(drift.values()):
        raise AssertionError(f"PackNet fingerprints moved: {drift}")

    def ready(name):
        model.use_task(name)
        return model

    print(model.capacity())
    readies = [lambda n=t["name"]: ready(n) for t in tasks]
    return result(after, final, train_seconds, timer), readies


def plain_network(trunk_only=False):
    layers = [keras.Input((32, 32, 3))] + cifar_cnn_layers(keras.layers)
    return keras.Sequential(layers + ([] if trunk_only
                                      else [keras.layers.Dense(2)]))


def compile_plain(model):
    model.compile(keras.optimizers.Adam(LEARNING_RATE),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])


def run_baseline(tasks, args, shared):
    """`shared=False`: individual networks; True: fine-tuning one trunk."""
    keras.utils.set_random_seed(args.seed)
    trunk = plain_network(trunk_only=True) if shared else None
    timer, models, after, train_seconds = EpochTimer(), [], [], 0.0
    for task in tasks:
        start = time.perf_counter()
        if shared:
            model = keras.Sequential([trunk, keras.layers.Dense(2)])
        else:
            model = plain_network()
        compile_plain(model)  # a fresh optimizer per task
        model.fit(training_batches(task["train"], task["count"], BATCH),
                  epochs=BASELINE_EPOCHS, callbacks=[timer], shuffle=False,
                  verbose=0)  # the dataset shuffles itself
        train_seconds += time.perf_counter() - start
        models.append(model)
        after.append(accuracy(predict(model, task), task))
        print(f"{'finetune' if shared else 'individual'} {task['name']}: "
              f"{after[-1]:.4f} ({time.perf_counter() - start:.0f} s)",
              flush=True)
    final = [accuracy(predict(m, t), t) for m, t in zip(models, tasks)]
    readies = [lambda m=m: m for m in models]
    return result(after, final, train_seconds, timer), readies


def print_table(methods, names):
    header = (f"{'method':<11}{'':<7}"
              + "".join(f"{n[:13]:>14}" for n in names) + f"{'mean':>8}")
    print("\n" + header)
    for method, m in methods.items():
        for label, key in (("after", "acc_after_learning"),
                           ("final", "final_acc")):
            print(f"{method if label == 'after' else '':<11}{label:<7}"
                  + "".join(f"{a:>14.4f}" for a in m[key])
                  + f"{np.mean(m[key]):>8.4f}")
    print(f"\n{'method':<11}{'mean final':>11}{'forgetting':>11}"
          f"{'train s':>9}{'s/epoch':>9}{'images/s':>10}")
    for method, m in methods.items():
        print(f"{method:<11}{m['mean_final_acc']:>11.4f}"
              f"{m['mean_forgetting']:>11.4f}{m['train_seconds']:>9.0f}"
              f"{m['seconds_per_epoch']:>9.2f}{m['images_per_s']:>10.0f}")


def variant(args):
    """The PackNet schedule changes of this run, as text ('' if none)."""
    changes = []
    if args.prune_fraction != PRUNE_FRACTION:
        changes.append(f"prune fraction {args.prune_fraction}")
    if args.no_prune_last:
        changes.append(f"last task unpruned, {BASELINE_EPOCHS} epochs")
    if args.free_init != "zero":
        changes.append(f"freed weights re-drawn ({args.free_init})")
    if args.seed != 0:
        changes.append(f"init seed {args.seed}")
    return ", ".join(changes)


def variant_tags(args):
    """Short file-name tags for the changes `variant` describes."""
    return ([f"prune{args.prune_fraction:g}"]
            * (args.prune_fraction != PRUNE_FRACTION)
            + ["lastunpruned"] * args.no_prune_last
            + [f"free{args.free_init}"] * (args.free_init != "zero")
            + [f"seed{args.seed}"] * (args.seed != 0))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_TASKS} tasks, {QUICK_TRAIN // BATCH} "
                        "steps per epoch: every code path in a minute or two")
    parser.add_argument("--data", default=str(CIFAR10_ZIP))
    parser.add_argument("--methods", default="packnet,individual,finetune")
    parser.add_argument("--prune-fraction", type=float,
                        default=PRUNE_FRACTION)
    parser.add_argument("--no-prune-last", action="store_true",
                        help="leave the last task unpruned (the paper's "
                        "choice), trained for the baselines' epochs")
    parser.add_argument("--free-init", choices=("zero", "glorot"),
                        default="zero", help="start of a new task's free "
                        "weights: as pruning left them (zero) or re-drawn")
    parser.add_argument("--seed", type=int, default=0,
                        help="weight initialisation seed (the shuffle seed "
                        "is 0, as the workload says)")
    parser.add_argument("--out", help="results file name (default: "
                        "split_cifar10_5.json; with --quick or a variant, "
                        "a name that says so)")
    args = parser.parse_args(argv)
    if args.out is not None and (os.path.basename(args.out) != args.out
                                 or not args.out.endswith(".json")):
        parser.error("--out: expected a file name ending in .json, written "
                     f"in benchmarks/results/. Received: {args.out!r}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - {"packnet", "individual", "finetune"})
    if unknown or not methods:
        parser.error(f"--methods: expected some of packnet, individual, "
                     f"finetune. Received: {args.methods!r}")

    changes = variant(args)
    workload = "split-cifar10-5" + (f" ({changes})" if changes else "") + (
        " QUICK SMOKE RUN, not the workload" if args.quick else "")
    started = time.perf_counter()
    tasks = load_tasks(args)
    runs = {
        "packnet": lambda: run_packnet(tasks, args),
        "individual": lambda: run_baseline(tasks, args, shared=False),
        "finetune": lambda: run_baseline(tasks, args, shared=True),
    }
    results, readies = {}, {}
    for method in methods:
        results[method], readies[method] = runs[method]()
    for method, rate in images_per_s(readies, tasks).items():
        results[method]["images_per_s"] = rate
    print_table(results, [t["name"] for t in tasks])
    if "packnet" in results and "individual" in results:
        gap = (results["individual"]["mean_final_acc"]
               - results["packnet"]["mean_final_acc"])
        print(f"\nPackNet's mean final accuracy is {abs(gap) * 100:.2f} "
              f"points {'below' if gap > 0 else 'above'} individual "
              f"networks, with one network instead of {len(tasks)}.")
    name = args.out or "split_cifar10_5{}{}.json".format(
        "".join(f"_{tag}" for tag in variant_tags(args)),
        "_quick" if args.quick else "")
    path = write_json(name, {"workload": workload, "methods": results,
                             "machine": machine(), "command": command()})
    print(f"workload: {workload}\nmachine: {machine()}\n"
          f"total {time.perf_counter() - started:.0f} s; wrote {path}")


if __name__ == "__main__":
    main()
