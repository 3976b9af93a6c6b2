"""PackNet on the paper's ground, beside the paper's baselines, seed by seed.

Workloads (../shared/data/README.md defines the first two exactly):

- `five-datasets-32`: CIFAR-10, MNIST, Fashion-MNIST, notMNIST, GTSRB in
  one CNN with per-task batch norm (examples/five_datasets.yaml);
- `pretrained-3`: an ImageNet MobileNet (its weights a headless base task,
  pruned to its largest half and frozen) learns Flowers-102, GTSRB and
  CIFAR-10 (examples/pretrained_3.yaml);
- `split-cifar10-5`: the reference workload with the library's defaults
  (examples/split_cifar10.yaml).

Everything a method reads comes from the workload's run config in
`examples/`: the tasks' data specs (the library's `.npz` and image-folder
sources, read in place, with `train_examples` subsets and `color_mode`),
the network, the schedule. Methods:

- `packnet`: the config itself, run by the library's own runner (what
  `packnet-tf train examples/<config>` does) with the seed set, one task
  more per stage: after each stage the run resumes from its model file, and
  every earlier task's logits on its test split are asserted bit-identical
  to those it gave when it finished.
- `individual`: a fresh network per task, trained `epochs +
  finetune_epochs` at `learning_rate` (from pretrained weights, when the
  workload has them: the paper's upper bound);
- `finetune`: one network trained on the tasks in turn, a head per task,
  nothing protected;
- `classifier_only`: a frozen trunk and a new head per task; the trunk is
  the pretrained network, or (without one) the network trained on task 1
  as PackNet trains it, less the pruning;
- `lwf`: Learning without Forgetting (`packnet_tf.evaluation.baselines.LwFModel`,
  temperature 2, weight 1);
- `joint`: one multi-head network trained on every task's data at once
  (`packnet_tf.evaluation.baselines.joint_model`), the same epochs over all of it.

Each (method, seed) is written as it finishes, to
`results/<workload>/<method>_seed<S>.json`, and skipped by a later run
(resumable; `--force` reruns). `--aggregate` combines what is written into
`results/<workload>.json` (mean ± sd over seeds, per-task final accuracy,
the accuracy matrix, BWT, FWT against the same seed's individual networks,
forgetting, paired differences PackNet - individual and PackNet - LwF,
train seconds, the machines) and draws the two figures of the paper:
final accuracy per method (`<workload>_final.png`, its Fig. 3) and each
task's accuracy as later tasks arrive, PackNet beside LwF
(`<workload>_across_tasks.png`, its Fig. 4).

    PYTHONPATH=. python benchmarks/continual.py five-datasets-32 \\
        --methods packnet,individual --seeds 0,1,2
    PYTHONPATH=. python benchmarks/continual.py five-datasets-32 --aggregate
    PYTHONPATH=. python benchmarks/continual.py pretrained-3 --quick

`--cli-check SEED` runs `packnet-tf train examples/<config>` itself, in a
fresh process with the seed set (one uninterrupted run, no stages), and
writes `results/<workload>/cli_check_seed<S>.json`: its final accuracies
beside the PackNet row of the same seed (they should agree within 0.2
points: the stages resume the same seeded phases).

`--variant NAME --set defaults.prune_fraction=equal` (repeatable) runs
PackNet with those config values changed, for measured investigations,
into `results/<workload>_<NAME>/`; the baselines are the workload's own
(aggregate with `--aggregate --variant NAME`: the variant's PackNet files
beside the workload's baseline files). `--order gtsrb,cifar10,...` (with
`--variant`) trains the tasks in another order, the base task still first;
its aggregate lists the tasks in that order and keeps only the baselines
that do not depend on it (individual, joint), their tasks reordered by name.

`--quick` trains on 5 batches per task and epoch and writes under
`results/<workload>_quick/` (ignored by git): every code path, no result.
Not a test.
"""

import argparse
import json
import pathlib
import shutil
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import RESULTS, command, machine, parse_seeds, write_json  # noqa

EXAMPLES = ROOT / "examples"
WORKLOADS = {
    "five-datasets-32": "five_datasets.yaml",
    "pretrained-3": "pretrained_3.yaml",
    "split-cifar10-5": "split_cifar10.yaml",
}
METHOD_NAMES = ("packnet", "individual", "finetune", "classifier_only",
                "lwf", "joint")
INFERENCE_BATCH = 256
#: Quick runs: training batches per epoch, test examples per task.
QUICK_STEPS, QUICK_TEST = 5, 256


def stem(workload, quick=False):
    return workload.replace("-", "_") + ("_quick" if quick else "")


# -- the workload, from its run config -----------------------------------


def reordered(tasks, order):
    """The config's task entries in `order` (names), a base task first.

    Raises:
        SystemExit: when `order` is not a permutation of the tasks with data.
    """
    base = [t for t in tasks if "data" not in t]
    trained = {t["name"]: t for t in tasks if "data" in t}
    if sorted(order) != sorted(trained):
        raise SystemExit(
            f"--order: expected each of {', '.join(trained)} once. "
            f"Received: {','.join(order)}")
    return base + [trained[n] for n in order]


#: Baselines whose results do not depend on the task order.
ORDER_FREE = ("individual", "joint")


def in_order(run, names):
    """An order-free baseline's per-seed file with its tasks in `names`."""
    index = [run["tasks"].index(n) for n in names]
    result = dict(run["result"])
    for key in ("final_acc", "acc_after_learning"):
        if result.get(key) is not None:
            result[key] = [result[key][i] for i in index]
    if result.get("accuracy_matrix") is not None:
        # A network per task: task j is as it was learned, from step j on.
        after = result["acc_after_learning"]
        result["accuracy_matrix"] = [
            [after[j] if j <= i else None for j in range(len(names))]
            for i in range(len(names))]
    return dict(run, tasks=list(names), result=result)


class Workload:
    """A workload's run config, parsed by the library, and its tasks' data.

    Attributes:
        name: the workload's name.
        config: the parsed `RunConfig` (every task's merged options).
        raw: the config file's mapping (to run stages of it).
        tasks: the tasks with data: dicts of `name`, `source`, `options`,
            `num_classes`, `x_test`, `y_test`.
        base: whether the first task is a headless pretrained base task.
    """

    def __init__(self, name, quick=False, changes=(), order=None):
        import yaml

        from packnet_tf.cli.config import parse_config
        from packnet_tf.cli.prepare import network_record
        from packnet_tf.data import from_spec

        self.name, self.quick = name, quick
        self.run_name = stem(name, quick)
        self.path = EXAMPLES / WORKLOADS[name]
        self.raw = yaml.safe_load(self.path.read_text())
        for key, value in changes:
            # `defaults.prune_fraction`, `network.free_init`, `seed`, ...
            target = self.raw
            *parents, last = key.split(".")
            for part in parents:
                target = target.setdefault(part, {})
            target[last] = value
        self.changes = [list(c) for c in changes]
        if order is not None:
            self.raw["tasks"] = reordered(self.raw["tasks"], order)
            self.changes.append(["order", list(order)])
        self.config = parse_config(self.raw, self.path, EXAMPLES,
                                   model="unused.keras")
        # Paths (`weights`) resolved from the config's folder.
        self.network = network_record(self.config)
        self.shape = tuple(self.network["input_shape"])
        self.base = self.config.tasks[0].data is None
        self.tasks = []
        for task in self.config.tasks[1 if self.base else 0:]:
            start = time.perf_counter()
            source = from_spec(task.data, base_dir=EXAMPLES)
            entry = {"name": task.name, "source": source,
                     "options": task.options,
                     "num_classes": source.num_classes}
            x, y = self._test_arrays(entry)
            entry.update(x_test=x, y_test=y)
            self.tasks.append(entry)
            print(f"{task.name}: {source.num_examples(source.train_split)} "
                  f"train, {len(y)} test examples, {source.num_classes} "
                  f"classes ({time.perf_counter() - start:.1f} s)",
                  flush=True)

    def batches(self, task, split, seed=0, shuffle=None, batch_size=None):
        from packnet_tf.data import batches

        options = task["options"]
        data = batches(task["source"], split, self.shape,
                       batch_size=batch_size or options["batch_size"],
                       shuffle=shuffle, seed=seed,
                       preprocess=options["preprocess"],
                       resize=options["resize"])
        return data.take(QUICK_STEPS) if self.quick and shuffle else data

    def train_data(self, task, seed):
        """Shuffled training batches (seeded; a new order every epoch)."""
        return self.batches(task, task["source"].train_split, seed,
                            shuffle=True)

    def _test_arrays(self, task):
        data = self.batches(task, task["source"].test_split, shuffle=False,
                            batch_size=INFERENCE_BATCH)
        if self.quick:
            data = data.take(QUICK_TEST // INFERENCE_BATCH)
        xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in data])
        return np.concatenate(xs), np.concatenate(ys)

    @property
    def epochs(self):
        """The baselines' epochs per task: PackNet's train + fine-tune."""
        options = self.tasks[0]["options"]
        return options["epochs"] + options["finetune_epochs"]

    @property
    def learning_rate(self):
        return self.tasks[0]["options"]["learning_rate"]

    def plain_trunk(self):
        """The network without a head, in plain Keras (pretrained weights
        loaded afresh, when the workload has them)."""
        import keras

        spec = self.network
        if spec["type"] == "application":
            from packnet_tf.cli.networks import _application

            return _application({k: v for k, v in spec.items()
                                 if k != "first_task"})
        if spec["type"] != "cnn":
            raise ValueError(f"No plain twin for network type "
                             f"{spec['type']!r}.")
        stack = [keras.Input(self.shape)]
        for item in spec.get("conv", []):
            if item == "pool":
                stack.append(keras.layers.MaxPooling2D())
                continue
            stack.append(keras.layers.Conv2D(
                item, spec.get("kernel_size", 3), padding="same"))
            if spec.get("batch_norm"):
                stack.append(keras.layers.BatchNormalization(
                    momentum=spec.get("batch_norm_momentum", 0.99)))
            stack.append(keras.layers.ReLU())
        stack.append(keras.layers.GlobalAveragePooling2D()
                     if spec.get("global_pool") else keras.layers.Flatten())
        for width in spec.get("dense", []):
            stack.append(keras.layers.Dense(width, activation="relu"))
        return keras.Sequential(stack)


# -- figures of one method ------------------------------------------------


class EpochTimer:
    """Wall time of every epoch (a Keras callback, built lazily)."""

    def __new__(cls):
        import keras

        class Timer(keras.callbacks.Callback):
            seconds = None

            def on_train_begin(self, logs=None):
                self.seconds = self.seconds or []

            def on_epoch_begin(self, epoch, logs=None):
                self._start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds.append(time.perf_counter() - self._start)

        return Timer()


def predict(model, task):
    return model.predict(task["x_test"], batch_size=INFERENCE_BATCH,
                         verbose=0)


def accuracy(logits, task):
    return float(np.mean(np.argmax(logits, -1) == task["y_test"]))


def figures(matrix, train_seconds, epoch_seconds=()):
    """A method's result: the matrix R[i][j] (joint: one final row)."""
    final = matrix[-1]
    full = len(matrix) == len(final)
    after = [matrix[i][i] for i in range(len(matrix))] if full else None
    return {
        "accuracy_matrix": matrix if full else None,
        "acc_after_learning": after,
        "final_acc": final,
        "mean_final_acc": float(np.mean(final)),
        "mean_forgetting": (float(np.mean(np.subtract(after, final)))
                            if full else None),
        "train_seconds": train_seconds,
        "seconds_per_epoch": (float(np.median(epoch_seconds))
                              if len(epoch_seconds) else None),
    }


def _loss():
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _compile(model, rate):
    import keras

    model.compile(keras.optimizers.Adam(rate), _loss(),
                  metrics=["accuracy"])


# -- the methods ----------------------------------------------------------


def run_packnet(workload, seed):
    """The run config, by the library's runner, one task more per stage."""
    import io

    from packnet_tf.cli.config import parse_config
    from packnet_tf.cli.runner import train

    folder = ROOT / "runs" / "bench" / workload.run_name
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / f"packnet_seed{seed}.keras"
    for leftover in folder.glob(f"packnet_seed{seed}.keras*"):
        leftover.unlink()  # a run killed earlier: start afresh
    raw = dict(workload.raw, seed=seed)
    if workload.quick:
        raw["defaults"] = dict(raw.get("defaults") or {}, epochs=1,
                               finetune_epochs=1)
        raw["tasks"] = [dict(t, data=dict(t["data"], train_examples=64 *
                                          QUICK_STEPS)) if t.get("data")
                        else t for t in raw["tasks"]]
    first = 1 if workload.base else 0
    tasks, logits_after, matrix, reported = workload.tasks, [], [], []
    train_seconds = 0.0
    for k in range(1, len(tasks) + 1):
        stage = dict(raw, tasks=raw["tasks"][:first + k])
        config = parse_config(stage, workload.path, EXAMPLES,
                              model=str(model_path))
        log = io.StringIO()
        start = time.perf_counter()
        model, now = train(config, stream=log, verbose=0)
        train_seconds += time.perf_counter() - start
        print(log.getvalue().rstrip(), flush=True)
        row = []
        for j, task in enumerate(tasks[:k]):
            model.use_task(task["name"])
            logits = predict(model, task)
            if j < len(logits_after) and not np.array_equal(
                    logits, logits_after[j]):
                # PackNet's promise, checked in the run itself.
                raise AssertionError(
                    f"PackNet changed task {task['name']!r}'s logits by up "
                    f"to {np.max(np.abs(logits - logits_after[j]))}.")
            if j == len(logits_after):
                logits_after.append(logits)
            row.append(accuracy(logits, task))
        matrix.append(row + [None] * (len(tasks) - k))
        reported.append({t["name"]: now[t["name"]] for t in tasks[:k]})
        print(f"packnet after {tasks[k - 1]['name']}: "
              f"{np.round(row, 4).tolist()}", flush=True)
    drift = model.verify()
    if any(drift.values()):
        raise AssertionError(f"PackNet fingerprints moved: {drift}")
    result = figures(matrix, train_seconds)
    # What `packnet-tf train` printed (its own evaluation of the test
    # splits after the last task): the runner's view of the final row.
    result["runner_final_acc"] = [reported[-1][t["name"]] for t in tasks]
    result["capacity"] = str(model.capacity())
    return result


def run_sequence(workload, seed, method):
    """individual, finetune or classifier_only."""
    import keras

    from packnet_tf.evaluation import baselines

    keras.utils.set_random_seed(seed)
    tasks, timer = workload.tasks, EpochTimer()
    trunk = None if method == "individual" else workload.plain_trunk()
    pretrained = workload.base
    models, matrix, train_seconds, frozen = [], [], 0.0, None
    for i, task in enumerate(tasks):
        start = time.perf_counter()
        data = workload.train_data(task, seed * 100 + i)
        head_only = method == "classifier_only" and (pretrained or i > 0)
        if method == "individual":
            model = keras.Sequential([workload.plain_trunk(),
                                      keras.layers.Dense(task["num_classes"])])
        elif head_only:
            model = baselines.head_only_model(trunk, task["num_classes"])
            if frozen is None:
                frozen = [w.copy() for w in trunk.get_weights()]
        else:
            model = keras.Sequential([trunk,
                                      keras.layers.Dense(task["num_classes"])])
        if method == "classifier_only" and not head_only:
            # Task 1 trained as PackNet trains it, less the pruning.
            options = task["options"]
            _compile(model, options["learning_rate"])
            model.fit(data, epochs=options["epochs"], callbacks=[timer],
                      verbose=0)
            _compile(model, options["finetune_learning_rate"]
                     or options["learning_rate"] / 10)
            model.fit(data, epochs=options["finetune_epochs"],
                      callbacks=[timer], verbose=0)
        else:
            _compile(model, workload.learning_rate)
            model.fit(data, epochs=workload.epochs, callbacks=[timer],
                      verbose=0)
        train_seconds += time.perf_counter() - start
        models.append(model)
        matrix.append([accuracy(predict(models[j], tasks[j]), tasks[j])
                       if j <= i else None for j in range(len(tasks))])
        if frozen is not None and not all(
                np.array_equal(a, b)
                for a, b in zip(frozen, trunk.get_weights())):
            raise AssertionError("classifier_only moved the frozen trunk.")
        print(f"{method} {task['name']}: {matrix[-1][i]:.4f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    return figures(matrix, train_seconds, timer.seconds or ())


def run_lwf(workload, seed):
    import keras

    from packnet_tf.evaluation import baselines

    keras.utils.set_random_seed(seed)
    tasks, timer = workload.tasks, EpochTimer()
    model = baselines.LwFModel(workload.plain_trunk(),
                               head_sizes=[t["num_classes"] for t in tasks])
    matrix, train_seconds = [], 0.0

    def evaluate(j):
        model.use_task(j)
        return accuracy(predict(model, tasks[j]), tasks[j])

    for i, task in enumerate(tasks):
        start = time.perf_counter()
        model.start_task(i)
        _compile(model, workload.learning_rate)
        model.fit(workload.train_data(task, seed * 100 + i),
                  epochs=workload.epochs, callbacks=[timer], verbose=0)
        train_seconds += time.perf_counter() - start
        matrix.append([evaluate(j) if j <= i else None
                       for j in range(len(tasks))])
        print(f"lwf {task['name']}: {np.round(matrix[-1][:i + 1], 4)} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    return figures(matrix, train_seconds, timer.seconds or ())


def run_joint(workload, seed):
    import keras
    import tensorflow as tf

    from packnet_tf.evaluation import baselines

    keras.utils.set_random_seed(seed)
    tasks, timer = workload.tasks, EpochTimer()
    model = baselines.joint_model(workload.plain_trunk(),
                                  [t["num_classes"] for t in tasks])
    _compile(model, workload.learning_rate)
    batch = tasks[0]["options"]["batch_size"]
    parts, counts = [], []
    for t, task in enumerate(tasks):
        part = workload.train_data(task, seed * 100 + t).unbatch()
        parts.append(part.map(lambda x, y, t=t: ((x, t), y)))
        source = task["source"]
        counts.append(QUICK_STEPS * task["options"]["batch_size"]
                      if workload.quick
                      else source.num_examples(source.train_split))
    # Every task's examples once per epoch, interleaved at random in
    # proportion to their counts.
    mixed = tf.data.Dataset.sample_from_datasets(
        parts, weights=[c / sum(counts) for c in counts], seed=seed,
        stop_on_empty_dataset=False)
    mixed = mixed.batch(batch).prefetch(2).apply(
        tf.data.experimental.assert_cardinality(-(-sum(counts) // batch)))
    start = time.perf_counter()
    model.fit(mixed, epochs=workload.epochs, callbacks=[timer], verbose=0)
    train_seconds = time.perf_counter() - start
    final = []
    for t, task in enumerate(tasks):
        ids = np.full(len(task["y_test"]), t, "int32")
        logits = model.predict([task["x_test"], ids],
                               batch_size=INFERENCE_BATCH, verbose=0)
        final.append(accuracy(logits, task))
    print(f"joint: {np.round(final, 4).tolist()} ({train_seconds:.0f} s)",
          flush=True)
    return figures([final], train_seconds, timer.seconds or ())


METHODS = {
    "packnet": run_packnet,
    "individual": lambda w, s: run_sequence(w, s, "individual"),
    "finetune": lambda w, s: run_sequence(w, s, "finetune"),
    "classifier_only": lambda w, s: run_sequence(w, s, "classifier_only"),
    "lwf": run_lwf,
    "joint": run_joint,
}


# -- aggregate --------------------------------------------------------------


def _mean_sd(values):
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()),
            "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "n": int(len(values))}


def load_runs(folder):
    """`{method: {seed: result}}` of the per-(method, seed) files."""
    runs = {}
    for path in sorted(folder.glob("*_seed*.json")):
        method, _, seed = path.stem.rpartition("_seed")
        if method in METHOD_NAMES:
            runs.setdefault(method, {})[int(seed)] = json.loads(
                path.read_text())
    return runs


def aggregate(runs, names):
    """Mean ± sd over seeds per method, metrics and paired differences."""
    from packnet_tf.evaluation.metrics import continual_metrics

    methods = {}
    for method in METHOD_NAMES:
        if method not in runs:
            continue
        seeds = sorted(runs[method])
        results = [runs[method][s]["result"] for s in seeds]
        entry = {
            "seeds": seeds,
            "mean_final_acc": _mean_sd([r["mean_final_acc"]
                                        for r in results]),
            "final_acc": [_mean_sd([r["final_acc"][j] for r in results])
                          for j in range(len(names))],
            "train_seconds": _mean_sd([r["train_seconds"] for r in results]),
            "machines": sorted({runs[method][s]["machine"] for s in seeds}),
        }
        if results[0]["accuracy_matrix"] is not None:
            metrics = []
            for s, r in zip(seeds, results):
                reference = runs.get("individual", {}).get(s)
                metrics.append(continual_metrics(
                    r["accuracy_matrix"], names,
                    reference=(reference["result"]["acc_after_learning"]
                               if reference else None)).as_dict())
            for key in ("bwt", "fwt", "mean_forgetting", "max_forgetting"):
                values = [m[key] for m in metrics]
                entry[key] = (None if None in values else _mean_sd(values))
            entry["bwt_per_seed"] = [m["bwt"] for m in metrics]
            mean = np.mean([[[np.nan if v is None else v for v in row]
                             for row in r["accuracy_matrix"]]
                            for r in results], axis=0)
            entry["accuracy_matrix"] = [
                [None if np.isnan(v) else float(v) for v in row]
                for row in mean]
        methods[method] = entry
    paired = {}
    for other in ("individual", "lwf"):
        if "packnet" not in runs or other not in runs:
            continue
        seeds = sorted(set(runs["packnet"]) & set(runs[other]))
        if not seeds:
            continue
        differences = [runs["packnet"][s]["result"]["mean_final_acc"]
                       - runs[other][s]["result"]["mean_final_acc"]
                       for s in seeds]
        paired[f"packnet_minus_{other}"] = {
            **_mean_sd(differences), "seeds": seeds,
            "per_seed": differences}
    return {"methods": methods, "paired": paired}


def plot_final(summary, names, path, title):
    """The paper's Fig. 3: final accuracy per task and method."""
    from matplotlib.figure import Figure

    methods = list(summary["methods"])
    figure = Figure(figsize=(9.0, 3.8), dpi=80)
    axis = figure.subplots()
    width = 0.8 / max(len(methods), 1)
    positions = np.arange(len(names) + 1)
    for k, method in enumerate(methods):
        entry = summary["methods"][method]
        means = [a["mean"] for a in entry["final_acc"]] + [
            entry["mean_final_acc"]["mean"]]
        sds = [a["sd"] for a in entry["final_acc"]] + [
            entry["mean_final_acc"]["sd"]]
        n = entry["mean_final_acc"]["n"]
        axis.bar(positions + (k - (len(methods) - 1) / 2) * width,
                 np.multiply(means, 100), width, yerr=np.multiply(sds, 100),
                 label=f"{method} (n={n})", capsize=2)
    axis.set_xticks(positions, list(names) + ["mean"], fontsize=8)
    axis.set_ylabel("final test accuracy (%)")
    axis.set_ylim(0, 100)
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7, ncol=len(methods), loc="upper center",
                bbox_to_anchor=(0.5, -0.12), frameon=False)
    figure.tight_layout()
    figure.savefig(path)
    return path


def write_aggregate(workload, folder, quick, variant=None):
    from packnet_tf.evaluation.metrics import plot_accuracy_across_tasks

    runs = load_runs(folder)
    name = stem(workload, quick)
    if variant is not None:
        # The variant's PackNet beside the workload's own baselines.
        runs.pop("packnet", None)
        runs.update(load_runs(RESULTS / f"{name}_{variant}"))
        name = f"{name}_{variant}"
        workload = f"{workload} ({variant})"
    if not runs:
        raise SystemExit(f"No results in {folder}: run some methods first.")
    any_run = next(iter(next(iter(runs.values())).values()))
    names = any_run["tasks"]
    if "packnet" in runs:
        names = next(iter(runs["packnet"].values()))["tasks"]
        for method in list(runs):
            if next(iter(runs[method].values()))["tasks"] == names:
                continue
            if method not in ORDER_FREE:
                print(f"{method}: trained in another task order; left out.")
                del runs[method]
                continue
            runs[method] = {s: in_order(r, names)
                            for s, r in runs[method].items()}
    summary = aggregate(runs, names)
    final_png = plot_final(summary, names, RESULTS / f"{name}_final.png",
                           f"{workload}: final accuracy per task "
                           "(mean ± sd over seeds)")
    matrices = {m: summary["methods"][m]["accuracy_matrix"]
                for m in ("packnet", "lwf", "finetune")
                if m in summary["methods"]}
    across = None
    if matrices:
        across = plot_accuracy_across_tasks(
            matrices, RESULTS / f"{name}_across_tasks.png", names,
            title=f"{workload}: each task's accuracy as later tasks "
            "arrive (mean over seeds)")
    checks = {int(p.stem.rpartition("_seed")[2]): json.loads(p.read_text())
              ["max_abs_difference_points"]
              for p in folder.glob("cli_check_seed*.json")}
    path = write_json(f"{name}.json", {
        "workload": workload, "tasks": names, **summary,
        "cli_check_max_abs_difference_points": checks,
        "files": sorted(str(p.relative_to(RESULTS))
                        for p in folder.glob("*.json")),
        "machine": machine(), "command": command()})
    print_summary(workload, summary)
    print("\n" + markdown(summary, names) + "\n")
    print(f"wrote {path}, {final_png}" + (f", {across}" if across else ""))
    return summary


LABELS = {"packnet": "PackNet (one network)",
          "individual": "individual (a network per task)",
          "finetune": "fine-tune (no protection)",
          "classifier_only": "classifier only (frozen trunk)",
          "lwf": "LwF (distillation)", "joint": "joint (all data at once)"}


def markdown(summary, names):
    """The aggregate as a Markdown table (the README's), points."""
    def cell(value, digits=1):
        if value is None:
            return "-"
        return f"{value['mean'] * 100:.{digits}f} ± {value['sd'] * 100:.{digits}f}"

    lines = ["| method | seeds | " + " | ".join(names)
             + " | mean final | BWT | forgetting | train s |",
             "|---" * (len(names) + 6) + "|"]
    for method, e in summary["methods"].items():
        lines.append(
            f"| {LABELS.get(method, method)} | {e['mean_final_acc']['n']} | "
            + " | ".join(cell(a) for a in e["final_acc"])
            + f" | **{cell(e['mean_final_acc'], 2)}** | "
            f"{cell(e.get('bwt'), 2)} | {cell(e.get('mean_forgetting'), 2)} "
            f"| {e['train_seconds']['mean']:.0f} |")
    for key, pair in summary["paired"].items():
        lines.append("")
        lines.append(
            f"{key.replace('_', ' ').replace('minus', '-')} (paired by "
            f"seed, seeds {pair['seeds']}): {pair['mean'] * 100:+.2f} ± "
            f"{pair['sd'] * 100:.2f} points ("
            + ", ".join(f"{d * 100:+.2f}" for d in pair["per_seed"]) + ")")
    return "\n".join(lines)


def print_summary(workload, summary):
    print(f"\n{workload} (mean ± sd over seeds, points):")
    print(f"{'method':<16}{'n':>3}{'mean final':>16}{'BWT':>16}"
          f"{'forgetting':>16}{'train s':>10}")
    for method, e in summary["methods"].items():
        cell = lambda v: ("-" if v is None else  # noqa: E731
                          f"{v['mean'] * 100:.2f} ± {v['sd'] * 100:.2f}")
        print(f"{method:<16}{e['mean_final_acc']['n']:>3}"
              f"{cell(e['mean_final_acc']):>16}{cell(e.get('bwt')):>16}"
              f"{cell(e.get('mean_forgetting')):>16}"
              f"{e['train_seconds']['mean']:>10.0f}")
    for key, pair in summary["paired"].items():
        print(f"{key.replace('_', ' ')} (paired, seeds {pair['seeds']}): "
              f"{pair['mean'] * 100:+.2f} ± {pair['sd'] * 100:.2f} points")


def cli_check(workload_name, seed, folder):
    """`packnet-tf train` on the workload's config, compared with the
    PackNet row of the same seed."""
    import subprocess
    import tempfile

    import yaml

    packnet = folder / f"packnet_seed{seed}.json"
    if not packnet.exists():
        raise SystemExit(f"No PackNet result for seed {seed} ({packnet}): "
                         f"run --methods packnet --seeds {seed} first.")
    row = json.loads(packnet.read_text())
    path = EXAMPLES / WORKLOADS[workload_name]
    raw = dict(yaml.safe_load(path.read_text()), seed=seed)
    work = ROOT / "runs" / "bench" / "cli_check"
    work.mkdir(parents=True, exist_ok=True)
    model = work / f"{stem(workload_name)}_seed{seed}.keras"
    for leftover in work.glob(f"{model.name}*"):
        leftover.unlink()
    raw["model"] = str(model)
    # Relative paths of the config stay relative to examples/.
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=EXAMPLES,
                                     delete=False) as f:
        yaml.safe_dump(raw, f, sort_keys=False)
    start = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-m", "packnet_tf_cli", "train",
                        f.name, "--quiet"], check=True, cwd=ROOT)
    finally:
        pathlib.Path(f.name).unlink()
    seconds = time.perf_counter() - start
    record = json.loads(model.with_name(model.stem + ".run.json")
                        .read_text())
    names = row["tasks"]
    cli = [record["accuracy"][name] for name in names]
    bench = row["result"]["final_acc"]
    difference = [100 * (a - b) for a, b in zip(cli, bench)]
    out = write_json(f"{folder.name}/cli_check_seed{seed}.json", {
        "workload": workload_name, "seed": seed, "tasks": names,
        "cli_final_acc": cli, "benchmark_final_acc": bench,
        "difference_points": difference,
        "max_abs_difference_points": max(abs(d) for d in difference),
        "cli_seconds": seconds, "machine": machine(),
        "command": command()})
    print(f"packnet-tf train vs the PackNet row, seed {seed}: largest "
          f"difference {max(abs(d) for d in difference):.2f} points "
          f"({out})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--methods", default=",".join(METHOD_NAMES),
                        help="comma-separated, of: "
                        + ", ".join(METHOD_NAMES))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--aggregate", action="store_true",
                        help="combine the files written so far; trains "
                        "nothing")
    parser.add_argument("--force", action="store_true",
                        help="rerun (method, seed) pairs already written")
    parser.add_argument("--cli-check", type=int, metavar="SEED",
                        help="run packnet-tf train on the config with this "
                        "seed and compare with the PackNet row")
    parser.add_argument("--variant", metavar="NAME",
                        help="a PackNet variant (with --set), written to "
                        "results/<workload>_<NAME>/")
    parser.add_argument("--set", action="append", default=[],
                        metavar="KEY=VALUE", help="a config value of the "
                        "variant, e.g. defaults.prune_fraction=equal")
    parser.add_argument("--order", metavar="NAMES",
                        help="a PackNet variant (with --variant) training "
                        "the tasks in this order: comma-separated names")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_STEPS} batches per epoch: a smoke run")
    args = parser.parse_args(argv)
    base = RESULTS / stem(args.workload, args.quick)
    folder = base
    changes = []
    if args.variant is not None:
        import yaml

        if not args.variant.replace("_", "").isalnum():
            parser.error(f"--variant: letters, digits and _ only. "
                         f"Received: {args.variant!r}")
        folder = RESULTS / f"{base.name}_{args.variant}"
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep or not key:
                parser.error(f"--set: expected KEY=VALUE. Received: {item!r}")
            changes.append((key, yaml.safe_load(value)))
    elif args.set or args.order:
        parser.error("--set and --order change a --variant: name it.")
    order = None if args.order is None else [
        n.strip() for n in args.order.split(",") if n.strip()]
    if args.aggregate:
        write_aggregate(args.workload, base, args.quick, args.variant)
        return
    if args.cli_check is not None:
        cli_check(args.workload, args.cli_check, folder)
        return
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHOD_NAMES))
    if unknown or not methods:
        parser.error(f"--methods: expected some of {', '.join(METHOD_NAMES)}"
                     f". Received: {args.methods!r}")
    if args.variant is not None and methods != ["packnet"]:
        parser.error("--variant changes PackNet's config: use --methods "
                     "packnet (the baselines are the workload's own).")
    seeds = parse_seeds(args.seeds, parser)
    todo = [(s, m) for s in seeds for m in methods
            if args.force or not (folder / f"{m}_seed{s}.json").exists()]
    if not todo:
        print("Every (method, seed) asked for is written; --force reruns.")
        return
    workload = Workload(args.workload, quick=args.quick, changes=changes,
                        order=order)
    workload.run_name = folder.name
    names = [t["name"] for t in workload.tasks]
    for seed, method in todo:
        print(f"\n== {args.workload} seed {seed}: {method}", flush=True)
        start = time.perf_counter()
        result = METHODS[method](workload, seed)
        path = write_json(
            f"{folder.name}/{method}_seed{seed}.json",
            {"workload": args.workload, "method": method, "seed": seed,
             "tasks": names, "result": result, "changes": workload.changes,
             "machine": machine(),
             "wall_seconds": time.perf_counter() - start,
             "command": command()})
        print(f"written to {path}", flush=True)
    if args.quick:
        shutil.rmtree(ROOT / "runs" / "bench" / workload.run_name,
                      ignore_errors=True)
    write_aggregate(args.workload, base, args.quick, args.variant)


if __name__ == "__main__":
    main()
