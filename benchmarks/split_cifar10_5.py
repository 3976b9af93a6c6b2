"""split-cifar10-5: PackNet beside the paper's baselines, over seeds.

The reference workload of ../shared/data/README.md, side by side in one run:
five 2-way tasks of CIFAR-10 (real JPEGs from ../shared/data/cifar10_jpg.zip,
read through packnet_tf.data's image-folder source and decoded once), the
same CNN for every method (benchmarks/cl_methods.py):

- packnet: one `PackNetModel`; per task `train_task`: 4 epochs Adam 1e-3,
  prune 50% of the task's weights per layer (every task, the last one too,
  as the workload says), fine-tune 2 epochs Adam 1e-4; batch 64;
  everything else the library's defaults (a new task's free weights start
  from the previous task's values, `free_init="previous"`; the fused masked
  update). `--free-init zero` runs the schedule of the first published
  table (packnet_variants.py's `reference` row).
- individual: a fresh network per task, 6 epochs Adam 1e-3 (the upper bound).
- finetune: one trunk trained on the tasks in sequence, a head per task,
  6 epochs Adam 1e-3 each, nothing protected (shows forgetting).
- classifier_only: task 1 trained as PackNet trains it (no pruning), the
  trunk then frozen; each later task trains only its head (6 epochs).
- lwf: Learning without Forgetting: a shared trunk, a head per task, a
  distillation loss (temperature 2, weight 1) into the old heads, 6 epochs.
- joint: one multi-head network trained on every task's data at once,
  6 epochs over all of it (needs all data up front: the reference point).

Per method and seed: the accuracy matrix R[i][j] (task j after task i), the
metrics of packnet_tf.evaluation.metrics (average accuracy, BWT, FWT against the
same seed's individual networks, forgetting mean and max), train wall
time, seconds per epoch and inference images/s (batch 256, methods
alternated). PackNet's earlier tasks' logits are asserted bit-identical
after every later task. A seed sets the initial weights and the batch
order of every method alike (seed 0 is the workload's).

    PYTHONPATH=. python benchmarks/split_cifar10_5.py --seeds 0,1,2
    PYTHONPATH=. python benchmarks/split_cifar10_5.py --quick   # smoke run

Each finished seed is written at once (results/split_cifar10_5_seed<S>.json),
so a long run that stops keeps its finished seeds. A run of some methods
(`--methods packnet`) replaces those methods in a seed file that exists and
keeps the others; every method records the command, machine and date that
produced it (`run`), and the paired metrics (FWT against individual) are
recomputed over the merged file; `--aggregate 0,1,2`
combines per-seed files already written (runs in separate sittings) into
results/split_cifar10_5.json and the plot, without training. Not a test.

The options below `--quick` change the PackNet schedule for measured
investigations; a run with any of them writes files whose names and
`workload` say so.
"""

import argparse
import json
import pathlib
import time

import numpy as np
from cl_methods import (BASELINE_EPOCHS, BATCH, INFERENCE_BATCH, METHODS,
                        PRUNE_FRACTION, predict)
from common import (CIFAR10_ZIP, RESULTS, SPLIT_CIFAR10_5, as_arrays, command,
                    decoded_split, machine, parse_seeds, write_json)

from packnet_tf.evaluation.metrics import (continual_metrics,
                                           plot_accuracy_across_tasks)

#: The library's default start of a new task's free weights.
DEFAULT_FREE_INIT = "previous"

#: Quick runs: tasks, training images (5 steps of 64) and test images per task.
QUICK_TASKS, QUICK_TRAIN, QUICK_TEST = 2, 5 * BATCH, 2 * INFERENCE_BATCH
#: Timed passes over every task's test images, per method.
INFERENCE_ROUNDS = 5


def load_tasks(args):
    """Decodes each task's train and test images once."""
    tasks = []
    for classes in SPLIT_CIFAR10_5[:QUICK_TASKS if args.quick else None]:
        start = time.perf_counter()
        accurate = getattr(args, "accurate_jpeg", False)
        train, count = decoded_split(
            args.data, classes, "train", QUICK_TRAIN if args.quick else None,
            accurate_jpeg=accurate)
        test, _ = decoded_split(
            args.data, classes, "test", QUICK_TEST if args.quick else None,
            accurate_jpeg=accurate)
        x_test, y_test = as_arrays(test)
        tasks.append({"name": "_".join(classes), "train": train,
                      "count": count, "x_test": x_test, "y_test": y_test})
        print(f"decoded {tasks[-1]['name']}: {count} train, {len(y_test)} "
              f"test images in {time.perf_counter() - start:.1f} s",
              flush=True)
    return tasks


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


def add_metrics(results, names):
    """Adds each method's continual-learning metrics (FWT vs individual)."""
    reference = (results["individual"]["acc_after_learning"]
                 if "individual" in results else None)
    for m in results.values():
        if m["accuracy_matrix"] is None:
            m["metrics"] = None
            continue
        m["metrics"] = continual_metrics(m["accuracy_matrix"], names,
                                         reference=reference).as_dict()


def print_table(methods, names):
    header = (f"{'method':<16}{'':<7}"
              + "".join(f"{n[:13]:>14}" for n in names) + f"{'mean':>8}")
    print("\n" + header)
    for method, m in methods.items():
        rows = (("after", m["acc_after_learning"]), ("final", m["final_acc"]))
        for label, values in rows:
            if values is None:
                continue
            print(f"{method if label == 'after' or not rows[0][1] else '':<16}"
                  f"{label:<7}" + "".join(f"{a:>14.4f}" for a in values)
                  + f"{np.mean(values):>8.4f}")
    print(f"\n{'method':<16}{'mean final':>11}{'BWT':>9}{'FWT':>9}"
          f"{'forget':>8}{'max':>8}{'train s':>9}{'s/epoch':>9}"
          f"{'images/s':>10}")
    for method, m in methods.items():
        k = m.get("metrics") or {}
        cell = lambda v, f: f"{v:{f}}" if v is not None else "-"  # noqa
        print(f"{method:<16}{m['mean_final_acc']:>11.4f}"
              f"{cell(k.get('bwt'), '+.4f'):>9}"
              f"{cell(k.get('fwt'), '+.4f'):>9}"
              f"{cell(k.get('mean_forgetting'), '.4f'):>8}"
              f"{cell(k.get('max_forgetting'), '.4f'):>8}"
              f"{m['train_seconds']:>9.0f}{m['seconds_per_epoch']:>9.2f}"
              f"{cell(m['images_per_s'], '.0f'):>10}")


def variant(args):
    """The PackNet schedule changes of this run, as text ('' if none)."""
    changes = []
    if args.prune_fraction != PRUNE_FRACTION:
        changes.append(f"prune fraction {args.prune_fraction}")
    if args.no_prune_last:
        changes.append(f"last task unpruned, {BASELINE_EPOCHS} epochs")
    if args.free_init != DEFAULT_FREE_INIT:
        changes.append(f"free weights start: {args.free_init}")
    return ", ".join(changes)


def variant_tags(args):
    """Short file-name tags for the changes `variant` describes."""
    return ([f"prune{args.prune_fraction:g}"]
            * (args.prune_fraction != PRUNE_FRACTION)
            + ["lastunpruned"] * args.no_prune_last
            + [f"free{args.free_init}"]
            * (args.free_init != DEFAULT_FREE_INIT))


def merge_methods(path, results, names, workload):
    """`results` over the methods of an earlier seed file not rerun now.

    Args:
        path: the seed file (it may not exist).
        results: `{method: result}` of this run.
        names: the task names of this run.
        workload: this run's workload text.

    Returns:
        The methods of the file (in their order, each keeping the `run` that
        produced it) with this run's replacing or joining them.

    Raises:
        SystemExit: if the file holds another workload or other tasks
            (its methods would not be comparable).
    """
    if not path.exists():
        return results
    earlier = json.loads(path.read_text())
    if earlier["tasks"] != names or earlier["workload"] != workload:
        raise SystemExit(
            f"{path} holds {earlier['workload']!r} over tasks "
            f"{earlier['tasks']}; this run is {workload!r} over {names}. "
            "Write this run elsewhere (--out) or move the file away.")
    merged = {}
    for method, result in earlier["methods"].items():
        result.setdefault("run", {"command": earlier.get("command"),
                                  "machine": earlier.get("machine")})
        merged[method] = results.get(method, result)
    merged.update({m: r for m, r in results.items() if m not in merged})
    return merged


def _mean_sd(values):
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()),
            "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "n": int(len(values))}


def aggregate(per_seed):
    """Mean and sd over seeds, per method and task, and paired differences.

    Args:
        per_seed: `{seed: {"methods": {method: result}, ...}}`.

    Returns:
        The aggregate dict written to the results file.
    """
    seeds = sorted(per_seed)
    methods = list(per_seed[seeds[0]]["methods"])
    names = per_seed[seeds[0]]["tasks"]
    out = {}
    for method in methods:
        runs = [per_seed[s]["methods"][method] for s in seeds]
        entry = {
            "mean_final_acc": _mean_sd([r["mean_final_acc"] for r in runs]),
            "final_acc": [_mean_sd([r["final_acc"][j] for r in runs])
                          for j in range(len(names))],
            "train_seconds": _mean_sd([r["train_seconds"] for r in runs]),
        }
        if runs[0]["metrics"] is not None:
            for key in ("average_accuracy", "bwt", "fwt", "mean_forgetting",
                        "max_forgetting"):
                values = [r["metrics"][key] for r in runs]
                entry[key] = (None if None in values else _mean_sd(values))
            # Cells not yet measured (task j after an earlier task i) are
            # null, as in the per-seed files: strict JSON has no NaN.
            mean = np.mean(
                [[[np.nan if v is None else v for v in row]
                  for row in r["accuracy_matrix"]] for r in runs], axis=0)
            entry["accuracy_matrix"] = [
                [None if np.isnan(v) else float(v) for v in row]
                for row in mean]
        out[method] = entry
    paired = {}
    if "packnet" in methods and "individual" in methods:
        differences = [per_seed[s]["methods"]["packnet"]["mean_final_acc"]
                       - per_seed[s]["methods"]["individual"]
                       ["mean_final_acc"] for s in seeds]
        paired["packnet_minus_individual"] = {
            **_mean_sd(differences), "per_seed": differences}
    return {"seeds": seeds, "tasks": names, "methods": out,
            "paired": paired}


def write_plot(summary, path):
    """The accuracy-across-tasks figure, seed-mean matrices per method."""
    matrices = {}
    for method, entry in summary["methods"].items():
        if "accuracy_matrix" in entry:
            matrices[method] = entry["accuracy_matrix"]
        else:
            matrices[method] = [a["mean"] for a in entry["final_acc"]]
    seeds = summary["seeds"]
    which = (f"seed {seeds[0]}" if len(seeds) == 1 else "mean over seeds "
             + ", ".join(str(s) for s in seeds))
    return plot_accuracy_across_tasks(
        matrices, path, summary["tasks"],
        title=f"split-cifar10-5: each task's accuracy as later tasks are "
        f"learned ({which}; joint dashed)")


def print_aggregate(summary):
    print(f"\nOver seeds {summary['seeds']} (mean ± sd):")
    print(f"{'method':<16}{'mean final':>17}{'BWT':>18}{'forgetting':>18}")
    for method, e in summary["methods"].items():
        fmt = lambda v: ("-" if v is None else  # noqa: E731
                         f"{v['mean']:.4f} ± {v['sd']:.4f}")
        print(f"{method:<16}{fmt(e['mean_final_acc']):>17}"
              f"{fmt(e.get('bwt')):>18}{fmt(e.get('mean_forgetting')):>18}")
    pair = summary["paired"].get("packnet_minus_individual")
    if pair:
        print(f"\nPackNet - individual (paired by seed): "
              f"{pair['mean'] * 100:+.2f} ± {pair['sd'] * 100:.2f} points "
              f"({', '.join(f'{d * 100:+.2f}' for d in pair['per_seed'])})")


def _results_name(name):
    """Whether `name` is `x.json` or `folder/x.json` (no "..", relative)."""
    parts = pathlib.PurePosixPath(name).parts
    return (name.endswith(".json") and 1 <= len(parts) <= 2
            and not name.startswith("/") and "\\" not in name
            and all(p not in ("", ".", "..") for p in parts))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_TASKS} tasks, {QUICK_TRAIN // BATCH} "
                        "steps per epoch: every code path in a few minutes")
    parser.add_argument("--data", default=str(CIFAR10_ZIP))
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated, of: " + ", ".join(METHODS))
    parser.add_argument("--seeds", default="0", help="comma-separated "
                        "seeds (initial weights and batch order of every "
                        "method); at least 3 for a published table")
    parser.add_argument("--aggregate", metavar="SEEDS", help="combine the "
                        "per-seed files of these seeds; trains nothing")
    parser.add_argument("--prune-fraction", type=float,
                        default=PRUNE_FRACTION)
    parser.add_argument("--no-prune-last", action="store_true",
                        help="leave the last task unpruned (the paper's "
                        "choice), trained for the baselines' epochs")
    parser.add_argument("--free-init",
                        choices=("zero", "previous", "initializer"),
                        default=DEFAULT_FREE_INIT, help="start of a new "
                        "task's free weights (PackNetModel(free_init=...); "
                        "default: the library's)")
    parser.add_argument("--out", help="results file name, in "
                        "benchmarks/results/ or one folder below it "
                        "(default: split_cifar10_5.json; with --quick or a "
                        "variant, a name that says so)")
    args = parser.parse_args(argv)
    if args.out is not None and not _results_name(args.out):
        parser.error("--out: expected a file name ending in .json, or "
                     "folder/name.json, written in benchmarks/results/. "
                     f"Received: {args.out!r}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        parser.error(f"--methods: expected some of {', '.join(METHODS)}. "
                     f"Received: {args.methods!r}")
    changes = variant(args)
    workload = "split-cifar10-5" + (f" ({changes})" if changes else "") + (
        " QUICK SMOKE RUN, not the workload" if args.quick else "")
    stem = args.out[:-len(".json")] if args.out else (
        "split_cifar10_5" + "".join(f"_{t}" for t in variant_tags(args))
        + ("_quick" if args.quick else ""))
    settings = {"prune_fraction": args.prune_fraction,
                "no_prune_last": args.no_prune_last,
                "free_init": args.free_init}
    started = time.perf_counter()
    per_seed = {}
    if args.aggregate:
        for seed in parse_seeds(args.aggregate, parser):
            path = RESULTS / f"{stem}_seed{seed}.json"
            if not path.exists():
                parser.error(f"--aggregate: no results for seed {seed} "
                             f"({path}). Run --seeds {seed} first.")
            per_seed[seed] = json.loads(path.read_text())
    else:
        tasks = load_tasks(args)
        names = [t["name"] for t in tasks]
        for seed in parse_seeds(args.seeds, parser):
            results, readies = {}, {}
            for method in methods:
                print(f"\n== seed {seed}: {method}", flush=True)
                results[method], ready = METHODS[method](tasks, settings,
                                                         seed)
                if ready is not None:
                    readies[method] = ready
            for method, rate in images_per_s(readies, tasks).items():
                results[method]["images_per_s"] = rate
            run = {"command": command(), "machine": machine(),
                   "date": time.strftime("%Y-%m-%d")}
            for result in results.values():
                result["run"] = run
            results = merge_methods(RESULTS / f"{stem}_seed{seed}.json",
                                    results, names, workload)
            add_metrics(results, names)
            print_table(results, names)
            per_seed[seed] = {"workload": workload, "seed": seed,
                              "tasks": names, "methods": results,
                              "machine": machine(), "command": command()}
            path = write_json(f"{stem}_seed{seed}.json", per_seed[seed])
            print(f"seed {seed} written to {path}", flush=True)
    summary = aggregate(per_seed)
    print_aggregate(summary)
    plot = write_plot(summary, RESULTS / f"{stem}_accuracy.png")
    # Seeds run in separate sittings may come from different machines.
    machines = {str(s): r.get("machine") for s, r in per_seed.items()}
    path = write_json(f"{stem}.json", {
        "workload": workload, **summary,
        "per_seed": {str(s): r["methods"] for s, r in per_seed.items()},
        "machine": machine(), "seed_machines": machines,
        "command": command()})
    print(f"workload: {workload}\nmachine: {machine()}\ntotal "
          f"{time.perf_counter() - started:.0f} s; wrote {path} and {plot}")


if __name__ == "__main__":
    main()
