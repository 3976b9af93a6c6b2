"""The results tables, as Markdown, from `benchmarks/results/*.json`.

Pure functions of the JSON files: `docs/gen_pages.py` puts each table into
the results pages at build time (a page names it with a line
`<!-- table: NAME -->`), and `tests/test_docs.py` checks that the
README's headline table is `headline()`. So no number in a table is typed
by hand, and none can drift from the data.

Units follow each benchmark's own tables: accuracies of the paper's
workloads in %, split-cifar10-5's as fractions, paired differences in
points, "mean ± sd" over seeds (sample sd), a value without "±" where one
seed ran.
"""

import json
import pathlib
import statistics

RESULTS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "results"


def load(name):
    """The JSON file `benchmarks/results/<name>`."""
    return json.loads((RESULTS / name).read_text())


# Formatting ---------------------------------------------------------------


def num(value, digits, signed=False):
    """`value` with `digits` decimals; no "-0.00"; "+" if `signed`."""
    text = f"{value:.{digits}f}"
    if float(text) == 0:
        text = text.lstrip("-")
        return text
    if signed and value > 0:
        text = "+" + text
    return text


def frac3(value):
    """A fraction with 3 decimals and no leading zero: `.962`."""
    text = num(value, 3)
    return text[1:] if text.startswith("0.") else text


def stat(entry, scale=1.0, digits=2, signed=False):
    """`{"mean", "sd", "n"}` as "mean ± sd" (just the mean if n is 1)."""
    mean = num(entry["mean"] * scale, digits, signed)
    if entry.get("n", 2) == 1:
        return mean
    return f"{mean} ± {num(entry['sd'] * scale, digits)}"


def summary(values, scale=1.0, digits=2, signed=True, per_seed=True):
    """Per-seed values as "mean ± sd (v1, v2, ...)"."""
    values = [v * scale for v in values]
    text = (f"{num(statistics.mean(values), digits, signed)} ± "
            f"{num(statistics.stdev(values), digits)}")
    if per_seed:
        text += " (" + ", ".join(num(v, digits, signed) for v in values) + ")"
    return text


def table(header, rows):
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def ratio(entry, digits=2):
    """`{"median", "min", "max"}` as "1.01x (0.98-1.03)"."""
    return (f"{entry['median']:.{digits}f}x "
            f"({entry['min']:.{digits}f}-{entry['max']:.{digits}f})")


def seconds_ms(entry):
    """Seconds `{"median", "min", "max"}` as milliseconds "51.1 (47.7-53.5)"."""
    return (f"{entry['median'] * 1000:.1f} "
            f"({entry['min'] * 1000:.1f}-{entry['max'] * 1000:.1f})")


def megabytes(n_bytes, digits=2):
    return f"{n_bytes / 1e6:.{digits}f}"


# The paper's ground: five-datasets-32 and pretrained-3 ---------------------

CONTINUAL_LABELS = {
    "five_datasets_32": {
        "packnet": "PackNet (one network)",
        "equal": "PackNet, `prune_fraction: equal`",
        "equal_ft3": ("PackNet, `prune_fraction: equal`, "
                      "`finetune_learning_rate: 0.001` (the recipe below)"),
        "lastfree": ("PackNet, the last task not pruned "
                     "(`prune_fraction: [0.5, 0.5, 0.5, 0.5, 0]`)"),
        "gtsrbfirst": ("PackNet, GTSRB trained first (then the workload's "
                       "order; the library's defaults)"),
        "individual": "individual (a network per task)",
        "finetune": "fine-tune (no protection)",
        "classifier_only": "classifier only (frozen trunk)",
        "lwf": "LwF (distillation)",
        "joint": "joint (all data at once)",
    },
    "pretrained_3": {
        "packnet": ("PackNet (one network, the defaults: depthwise kernels "
                    "kept whole)"),
        "prune_all": ("PackNet, every kernel pruned (`prune_keep: []`, the "
                      "workload's letter)"),
        "individual": "individual (the pretrained network fine-tuned per task)",
        "finetune": "fine-tune (no protection)",
        "classifier_only": "classifier only (frozen ImageNet trunk)",
        "lwf": "LwF (distillation)",
        "joint": "joint (all data at once)",
    },
}

#: The other PackNet rows of each workload: (aggregate file, row key).
CONTINUAL_VARIANTS = {
    "five_datasets_32": (("five_datasets_32_equal.json", "equal"),
                         ("five_datasets_32_equal_ft3.json", "equal_ft3"),
                         ("five_datasets_32_lastfree.json", "lastfree"),
                         ("five_datasets_32_gtsrbfirst.json", "gtsrbfirst")),
    "pretrained_3": (("pretrained_3_prune_all.json", "prune_all"),),
}

#: A mark after a row's training seconds, explained below the table.
CONTINUAL_MARKS = {("pretrained_3", "packnet"): " *"}

METHOD_ORDER = ("individual", "finetune", "classifier_only", "lwf", "joint")


def _continual_row(workload, key, method, tasks=None, columns=None):
    """A method's row; `tasks` (its training order) is put in the order of
    the table's `columns` when they differ."""
    one_seed = len(method["seeds"]) == 1
    cells = [CONTINUAL_LABELS[workload][key],
             f"**{len(method['seeds'])}**" if one_seed
             else str(len(method["seeds"]))]
    final = method["final_acc"]
    if tasks is not None and columns is not None:
        final = [final[tasks.index(name)] for name in columns]
    cells += [stat(task, 100, 1) for task in final]
    cells.append(f"**{stat(method['mean_final_acc'], 100, 2)}**")
    for metric in ("bwt", "mean_forgetting"):
        cells.append(stat(method[metric], 100, 2) if metric in method
                     else "-")
    cells.append(f"{method['train_seconds']['mean']:.0f}"
                 + CONTINUAL_MARKS.get((workload, key), ""))
    return cells


def continual_methods(workload):
    """The method table of `five_datasets_32` or `pretrained_3`."""
    data = load(f"{workload}.json")
    methods = data["methods"]
    rows = [_continual_row(workload, "packnet", methods["packnet"])]
    for name, key in CONTINUAL_VARIANTS[workload]:
        variant = load(name)
        rows.append(_continual_row(workload, key,
                                   variant["methods"]["packnet"],
                                   variant["tasks"], data["tasks"]))
    rows += [_continual_row(workload, m, methods[m]) for m in METHOD_ORDER]
    header = (["method", "seeds"] + data["tasks"]
              + ["mean final", "BWT", "forgetting", "train s"])
    return table(header, rows)


def _packnet_per_seed(folder):
    return [load(f"{folder}/packnet_seed{seed}.json")["result"]["mean_final_acc"]
            for seed in (0, 1, 2)]


def continual_paired(workload):
    """Paired differences (same seed) of the two PackNet rows, in points."""
    data = load(f"{workload}.json")
    labels = CONTINUAL_LABELS[workload]
    rows = []
    for source, key in ((data, "packnet"), *(
            (load(name), key) for name, key in CONTINUAL_VARIANTS[workload])):
        for other, name in (("individual", "individual"), ("lwf", "LwF")):
            if f"packnet_minus_{other}" not in source["paired"]:
                continue  # LwF in another task order was not run
            paired = source["paired"][f"packnet_minus_{other}"]
            rows.append([f"{labels[key]} - {name}",
                         ", ".join(map(str, paired["seeds"])),
                         summary(paired["per_seed"], 100)])
    if workload == "pretrained_3":
        kept = _packnet_per_seed("pretrained_3")
        pruned = _packnet_per_seed("pretrained_3_prune_all")
        rows.append(["depthwise kernels kept whole - every kernel pruned",
                     "0, 1, 2",
                     summary([a - b for a, b in zip(kept, pruned)], 100)])
    return table(["difference in mean final accuracy", "seeds",
                  "points, mean ± sd (per seed)"], rows)


# split-cifar10-5 ------------------------------------------------------------

SPLIT_LABELS = {
    "packnet": "PackNet (one network, the library's defaults)",
    "individual": "individual (5 networks)",
    "finetune": "finetune (no protection)",
    "classifier_only": "classifier only (frozen trunk)",
    "lwf": "LwF (distillation)",
    "joint": "joint (all data at once)",
}


def _forgetting(method):
    mean, top = method["mean_forgetting"], method["max_forgetting"]
    if mean["mean"] == 0 and mean["sd"] == 0:
        return f"{num(0, 3)} / {num(top['mean'], 3)}"
    return f"{stat(mean, 1, 3)} / {num(top['mean'], 3)}"


def split_cifar10_methods():
    """The six-method table of split-cifar10-5."""
    data = load("split_cifar10_5.json")
    rows = []
    for key, method in data["methods"].items():
        cells = [SPLIT_LABELS[key]]
        cells += [f"{frac3(t['mean'])} ± {frac3(t['sd'])}"
                  for t in method["final_acc"]]
        cells.append(f"**{stat(method['mean_final_acc'], 1, 3)}**")
        if "bwt" not in method:
            cells += ["-", "-", "-"]
        else:
            cells.append(stat(method["bwt"], 1, 3))
            cells.append("0 (the reference)" if key == "individual"
                         else stat(method["fwt"], 1, 3, signed=True))
            cells.append(_forgetting(method))
        rows.append(cells)
    header = (["method"] + [f"task {i + 1}" for i in range(len(data["tasks"]))]
              + ["mean final", "BWT", "FWT", "forgetting mean / max"])
    return table(header, rows)


def split_cifar10_paired():
    """Paired differences in mean final accuracy, points, per seed."""
    data = load("split_cifar10_5.json")
    seeds = [str(s) for s in data["seeds"]]

    def per_seed(method):
        return [data["per_seed"][s][method]["mean_final_acc"] for s in seeds]

    pairs = (("packnet", "individual"), ("packnet", "lwf"),
             ("joint", "packnet"), ("finetune", "packnet"),
             ("classifier_only", "packnet"))
    rows = []
    for a, b in pairs:
        diffs = [x - y for x, y in zip(per_seed(a), per_seed(b))]
        rows.append([f"{SPLIT_LABELS[a]} - {SPLIT_LABELS[b]}",
                     ", ".join(seeds), summary(diffs, 100)])
    return table(["difference in mean final accuracy", "seeds",
                  "points, mean ± sd (per seed)"], rows)


def split_cifar10_machines():
    """Which machine ran each (method, seed), and the command.

    Training seconds are left out: the machines differ, so they are not
    compared (they are in the JSON).
    """
    data = load("split_cifar10_5.json")
    rows = []
    for seed, methods in data["per_seed"].items():
        for key, run in methods.items():
            info = run.get("run", {})
            rows.append([SPLIT_LABELS[key], seed, info.get("machine", "-"),
                         info.get("date", "-"),
                         f"`{info['command']}`" if "command" in info else "-"])
    return table(["method", "seed", "machine", "date", "command"], rows)


# Accuracy levers (packnet_variants) -----------------------------------------

VARIANT_LABELS = {
    "reference": ('reference recipe, `free_init="zero"` (the default before; '
                  "the zero-start PackNet row of the six-method table)"),
    "free_previous": '**`free_init="previous"` (the new default)**',
    "previous_last_unpruned": ('`free_init="previous"` + last task unpruned, '
                               "6 epochs"),
    "previous_augment": ('`free_init="previous"` + augmentation (flip, '
                         "translate 0.1)"),
    "previous_gradual": ('`free_init="previous"` + gradual pruning while '
                         "fine-tuning (tfmot `PolynomialDecay` to 50% over "
                         "the first fine-tuning epoch, {end_step} steps, a "
                         "prune every {frequency})"),
    "previous_equal": ('`free_init="previous"` + `prune_fraction="equal"` '
                       "(each task ends with 1/5 of every layer; the last "
                       "prunes nothing)"),
    "free_initializer": ('`free_init="initializer"` (fresh Glorot draws for '
                         "the free weights)"),
    "jpeg_accurate": ("JPEGs decoded as PIL decodes them "
                      '(`dct_method="INTEGER_ACCURATE"`), zero start (an '
                      "Avalanche-gap candidate)"),
    "previous_auto": ('`free_init="previous"` + `prune_fraction="auto"` '
                      "(tolerance {auto_tolerance}; more epochs than the "
                      "budget)"),
    "adam_eps_1e-8": "Adam epsilon 1e-8 (PyTorch's; Keras 1e-7)",
    "last_unpruned": "last task unpruned, 6 epochs",
    "first_task_biases": ("task 1's biases for every task, frozen "
                          "(Avalanche's)"),
}


def _variant_label(key, variant):
    label = VARIANT_LABELS.get(key, key)
    options = dict(variant["changes"])
    options.update(options.get("gradual") or {})
    return label.format(**options)


def variants(seeds=3):
    """The variants with `seeds` seeds (3: the table; 1: the screens)."""
    data = load("packnet_variants.json")
    individual = load("split_cifar10_5.json")["per_seed"]
    rows = []
    for key, variant in data["variants"].items():
        if len(variant["seeds"]) != seeds:
            continue
        finals = " ".join(frac3(t["mean"]) for t in variant["final_acc"])
        per_seed = [load(f"variants/{key}_seed{s}.json")["result"]
                    ["mean_final_acc"] for s in variant["seeds"]]
        minus_individual = [
            acc - individual[str(s)]["individual"]["mean_final_acc"]
            for s, acc in zip(variant["seeds"], per_seed)]
        cells = [_variant_label(key, variant),
                 ",".join(map(str, variant["seeds"])), finals,
                 stat(variant["mean_final_acc"], 1, 3)]
        for paired in (variant["paired_minus_reference"],
                       variant["paired_minus_defaults"]):
            if key in ("reference", "free_previous") and paired["mean"] == 0 \
                    and paired["sd"] == 0:
                cells.append("-")
            elif seeds == 1:
                cells.append(num(paired["mean"] * 100, 2, signed=True))
            else:
                cells.append(summary(paired["per_seed"], 100))
        cells.append(summary(minus_individual, 100) if seeds > 1
                     else num(minus_individual[0] * 100, 2, signed=True))
        rows.append(cells)
    return table(["variant", "seeds", "final acc., tasks 1-5 (mean)",
                  "mean final", "paired - reference, points",
                  "paired - defaults, points",
                  "paired - individual, points"], rows)


# Batch norm after pruning -------------------------------------------------

BATCH_NORM_ROWS = (
    ("plain Keras fine-tuning (4 epochs, unpruned)", "keras", None),
    ("PackNet as before (statistics left by training)", "packnet_stale",
     "packnet_stale"),
    ("PackNet, recalibrated, every kernel pruned (`prune_keep: []`)",
     "packnet_recalibrated", "packnet - keras"),
    ("PackNet with batch statistics (the whole split as one batch)",
     "packnet_batch_statistics_whole_split", None),
    ("PackNet with batch statistics (test batches of 32, shuffled)",
     "packnet_batch_statistics_32", None),
    ("PackNet, same phases, nothing pruned", "packnet_none",
     "packnet unpruned - keras"),
    ("**PackNet, recalibrated, depthwise kernels kept whole (the defaults "
     "now)**", "packnet_keep_depthwise", "packnet keep depthwise - keras"),
    ("the same with batch statistics (the whole split as one batch)",
     "packnet_keep_depthwise_batch_statistics_whole_split", None),
)


def batch_norm():
    """Accuracy of each way to get batch-norm statistics, and vs Keras."""
    summary_ = load("pretrained_batch_norm.json")["summary"]
    paired = summary_["paired_points"]
    keras = summary_["keras"]["values"]
    rows = []
    for label, key, against in BATCH_NORM_ROWS:
        if against is None:
            vs = "-"
        elif against in paired:
            vs = summary(paired[against]["values"], 1, 1, per_seed=False)
        else:
            vs = summary([a - b for a, b in
                          zip(summary_[against]["values"], keras)],
                         100, 1, per_seed=False)
        rows.append([label, stat(summary_[key], 1, 3), vs])
    return table(["", "accuracy", "paired vs plain Keras (points)"], rows)


def batch_norm_paired():
    """Every paired difference the benchmark records, points, per seed."""
    paired = load("pretrained_batch_norm.json")["summary"]["paired_points"]
    rows = [[name, summary(entry["values"], 1, 1)]
            for name, entry in paired.items()]
    return table(["difference", "points, mean ± sd (seeds 0, 1, 2)"], rows)


def batch_norm_steps():
    """Accuracy after recalibrating from 1, 5, 20, 50 batches or all."""
    summary_ = load("pretrained_batch_norm.json")["summary"]
    rows = [[steps, stat(summary_[f"recalibrated_{steps}_batches"], 1, 3)]
            for steps in ("1", "5", "20", "50", "all")]
    rows.append(["after training, before pruning: statistics left by "
                 "training", stat(summary_["after_training_stale"], 1, 3)])
    rows.append(["after training, before pruning: recalibrated",
                 stat(summary_["after_training_recalibrated"], 1, 3)])
    return table(["batches of 32 read (every kernel pruned)", "accuracy"],
                 rows)


# Answers without a task id ----------------------------------------------

TASK_INFERENCE_RULES = (
    ("entropy", "entropy (default)"),
    ("confidence", "confidence"),
    ("entropy, calibrated", "entropy, `calibrated=True`"),
    ("confidence, calibrated", "confidence, `calibrated=True`"),
    ("statistics", "**statistics**"),
    ("statistics, calibrated", "statistics, `calibrated=True`"),
)


def task_inference():
    """Task accuracy per example and per batch, each rule, both workloads."""
    data = load("task_inference.json")["workloads"]
    rows = []
    for workload, entry in data.items():
        block = []
        for key, label in TASK_INFERENCE_RULES:
            runs = entry["inference"]
            cells = [stat(runs[f"{key}/{b}"]["task_accuracy"], 100, 1)
                     for b in (1, 4, 16, 64)]
            cells.append(
                f"{num(runs[f'{key}/1']['end_to_end']['mean'] * 100, 1)} / "
                f"{num(runs[f'{key}/16']['end_to_end']['mean'] * 100, 1)}")
            cells.append(stat(runs[f"{key}/1"]["oracle"], 100, 1))
            block.append([workload, label] + cells)
        # Rules whose every number agrees are one row ("either").
        merged = []
        for row in block:
            twin = next((m for m in merged if m[2:] == row[2:]), None)
            if twin is None:
                merged.append(row)
            elif "calibrated" in row[1]:
                twin[1] = "either, `calibrated=True`"
            else:
                twin[1] = "either"
        rows += merged
    return table(["workload", "rule", "per example", "batch of 4",
                  "batch of 16", "batch of 64",
                  "end-to-end (example / batch of 16)", "task given"], rows)


def task_inference_rejection():
    """Flowers-102 photos against the tasks' own test examples."""
    data = load("task_inference.json")["workloads"]
    rows = []
    for workload, entry in data.items():
        for rule, found in entry["rejection"].items():
            flagged = found["held_out_flagged"]
            rows.append([workload, rule, stat(found["auroc"], 1, 2)]
                        + [stat(flagged[q], 100, 1)
                           for q in ("0.99", "0.95", "0.9")])
    return table(["workload", "score", "AUROC",
                  "flowers flagged (%) at a threshold answering 99% of "
                  "the tasks' own", "95%", "90%"], rows)


def task_inference_cost():
    """Time per example at batch 256 (median of rounds, mean over seeds)."""
    data = load("task_inference.json")["workloads"]
    rows = []
    for workload, entry in data.items():
        timing = entry["timing"]
        us = timing["microseconds_per_example"]
        rows.append([
            workload,
            stat(timing["infer_task_over_t_predicts"], 1, 2) + "x",
            stat(timing["infer_task_over_one_predict"], 1, 1) + "x",
            stat(timing["infer_task_statistics_over_one_predict"], 1, 1)
            + "x",
            stat(timing["any_task_over_one_task_signature"], 1, 1) + "x",
            " / ".join(f"{us[k]['mean']:.0f}" for k in (
                "infer_task", "infer_task_statistics", "one_predict",
                "t_predicts", "saved_model_any_task",
                "saved_model_one_task")),
        ])
    return table(["workload", "`infer_task` / T `predict`s",
                  "`infer_task` / one `predict`",
                  "with `score=\"statistics\"` / one `predict`",
                  "`any_task` / one task's signature",
                  "µs per example: infer_task / with statistics / one "
                  "predict / T predicts / SavedModel any_task / one task"],
                 rows)


# Training speed -------------------------------------------------------------

OVERHEAD_ROWS = (
    ("PackNetModel", "packnet"),
    ("plain Keras 3", "keras"),
    ("tfmot, fixed masks (tf_keras)", "tfmot"),
    ("tfmot, masks every 100 steps", "tfmot-f100"),
    ("plain tf_keras", "tf_keras"),
)

OVERHEAD_RATIOS = (
    ("**PackNet / Keras 3**", "ratio_vs_keras"),
    ("PackNet / tfmot, fixed masks", "ratio_vs_tfmot"),
    ("PackNet / tfmot, every 100 steps", "ratio_vs_tfmot_f100"),
    ("tfmot / tf_keras (tfmot's own masking cost)", "tfmot_vs_tf_keras"),
)


def train_overhead():
    """ms per training step and ratios, the CNN and the MLP."""
    cnn, mlp = load("train_overhead.json"), load("train_overhead_mlp.json")
    rows = [[label, seconds_ms(cnn["seconds_per_step"][k]),
             seconds_ms(mlp["seconds_per_step"][k])]
            for label, k in OVERHEAD_ROWS]
    for label, k in OVERHEAD_RATIOS:
        a, b = ratio(cnn[k]), ratio(mlp[k])
        if label.startswith("**"):
            a, b = f"**{a}**", f"**{b}**"
        rows.append([label, a, b])
    return table(["ms/step, median (min-max)", "split-cifar10-5 CNN",
                  "dense MLP 3072-2048-2048-1024"], rows)


PROFILE_ROWS = (
    ("**PackNet as shipped: mask, optimizer step and write-back as one XLA "
     "function**", "packnet"),
    ("the same update uncompiled (`fused_update=False`, shipped before)",
     "uncompiled"),
    ("uncompiled, frozen values from a snapshot kept once per fit instead of "
     "copied every step", "snapshot"),
    ("uncompiled, only the write-back compiled by XLA", "xla-restore"),
    ("uncompiled, forward pass masking every kernel (before the profile's "
     "second change)", "forward-masks"),
    ("uncompiled, masks on int32 casts of the owners (before its first "
     "change)", "int32-masks"),
    ("uncompiled, without the write-back (unsafe; measurement only)",
     "no-restore"),
    ("PackNet, `jit_compile=True` (Keras' default where a GPU is present), "
     "against Keras compiled so", "packnet-xla"),
)


def step_profile():
    """The masked step's variants, as ratios to plain Keras."""
    nets = load("step_profile.json")["networks"]
    rows = []
    for label, key in PROFILE_ROWS:
        a = ratio(nets["cnn"][key]["ratio_vs_keras"])
        b = ratio(nets["mlp"][key]["ratio_vs_keras"])
        if label.startswith("**"):
            a, b = f"**{a}**", f"**{b}**"
        rows.append([label, a, b])
    return table(["variant", "CNN", "MLP"], rows)


def step_profile_keras():
    """Plain Keras' own step time, uncompiled and compiled (XLA)."""
    nets = load("step_profile.json")["networks"]
    rows = [[label, seconds_ms(nets["cnn"][key]["seconds_per_step"]),
             seconds_ms(nets["mlp"][key]["seconds_per_step"])]
            for label, key in (("plain Keras 3", "keras"),
                               ("plain Keras 3, `jit_compile=True`",
                                "keras-xla"))]
    return table(["ms/step, median (min-max)", "CNN", "MLP"], rows)


def peer_side_by_side():
    """Ours beside Avalanche's PackNet, run A-B-B-A."""
    comparison = load("peer_side_by_side.json")["comparison"]
    rows = []
    for label, key, digits in (
            ("seconds per epoch, median", "seconds_per_epoch", 2),
            ("whole training, s", "train_seconds", 0),
            ("inference, images/s at batch 256", "images_per_s", 0)):
        c = comparison[key]
        ours = (f"{c['ours_median']:.{digits}f} ("
                + ", ".join(f"{v:.{digits}f}" for v in c["ours"]) + ")")
        peer = (f"{c['peer_median']:.{digits}f} ("
                + ", ".join(f"{v:.{digits}f}" for v in c["peer"]) + ")")
        faster = " faster" if key == "images_per_s" else ""
        ratios = (f"**{c['ratio_of_medians']:.2f}x{faster}** ("
                  + ", ".join(f"{v:.2f}x" for v in c["pair_ratios"]) + ")")
        rows.append([label, ours, peer, ratios])
    return table(["", "ours (run 1, run 2)", "Avalanche (run 1, run 2)",
                  "ours / Avalanche, median (per pair)"], rows)


# Scaling ------------------------------------------------------------------

SCALING_NAMES = {"mobilenetv2-96": "MobileNetV2-96"}


def _scaling():
    nets = load("scaling.json")["networks"]
    return [(SCALING_NAMES.get(k, k), v) for k, v in nets.items()]


def scaling_time():
    rows = [[name, f"{n['params']:,}",
             f"{n['seconds_per_step']['keras']['median'] * 1000:.1f}",
             f"{n['seconds_per_step']['packnet']['median'] * 1000:.1f}",
             ratio(n["ratio_vs_keras"]),
             f"{n['prune_seconds']['median']:.3f}"]
            for name, n in _scaling()]
    return table(["network", "params", "Keras ms/step", "PackNet ms/step",
                  "ratio, median (min-max)", "prune s"], rows)


def scaling_sizes():
    rows = [[name, megabytes(n["kernel_bytes"]), megabytes(n["owner_bytes"]),
             f"{n['owner_bytes'] / n['kernel_bytes']:.2f}",
             megabytes(n["per_task_slot_bytes"], 3),
             megabytes(n["plain_weight_bytes"])]
            for name, n in _scaling()]
    max_tasks = load("scaling.json")["max_tasks"]
    return table(["network", "kernels MB", "owner masks MB",
                  "owners / kernels",
                  f"per-task slots MB (max_tasks={max_tasks})",
                  "plain model's weights MB"], rows)


def scaling_memory():
    rows = []
    for name, n in _scaling():
        temporaries = n["step_mask_bytes"] + n["step_copy_bytes"]
        rows.append([name, megabytes(n["plain_state_bytes"]),
                     megabytes(n["packnet_state_bytes"]),
                     megabytes(temporaries),
                     megabytes(n["packnet_peak_bytes"]),
                     f"{n['packnet_peak_bytes'] / n['plain_state_bytes']:.2f}x"])
    return table(["network", "plain Keras state MB", "PackNet state MB",
                  "PackNet step temporaries MB", "PackNet peak MB",
                  "peak / Keras"], rows)


# Export -------------------------------------------------------------------

EXPORT_ROWS = (
    ("SavedModel per task", ["SavedModel per-task (t5)"],
     "SavedModel (plain, keras export)"),
    ("SavedModel multi (5 tasks)", ["SavedModel multi (5 tasks)"],
     "SavedModel (plain, keras export)"),
    ("TFLite float, one task", ["TFLite float (t5)"],
     "TFLite float (plain, keras export)"),
    ("TFLite float16 / dynamic / int8",
     ["TFLite float16 (t5)", "TFLite dynamic (t5)", "TFLite int8 (t5)"],
     "TFLite float (plain, keras export)"),
    ("TFLite sparse, task 1", ["TFLite float sparse (t1)"],
     "TFLite float (plain, keras export)"),
    ('TFLite all 5 tasks, `layout="shared"` (float, default)',
     ["TFLite multi shared float (5 tasks)"],
     "TFLite float (plain, keras export)"),
    ('TFLite all 5 tasks, `layout="stacked"` (float)',
     ["TFLite multi stacked float (5 tasks)"],
     "TFLite float (plain, keras export)"),
)


def _mb(n_bytes):
    mb = n_bytes / 1e6
    return f"{mb:.2f}" if mb < 1 else f"{mb:.1f}"


def export(batch="64"):
    """Size and latency of each export form against the plain model."""
    data = load("export.json")
    sizes, latency = data["sizes_bytes"], data["latency"][batch]
    rows = []
    for label, keys, plain in EXPORT_ROWS:
        rows.append([
            label,
            " / ".join(_mb(sizes[k]) for k in keys) + " MB",
            " / ".join(f"{sizes[k] / sizes[plain]:.2f}" for k in keys),
            " / ".join(f"{latency[k]['ratio']['median']:.2f}" for k in keys),
        ])
    return table(["form", "size", "x plain, same format",
                  f"latency x plain, batch {batch} (median)"], rows)


# Input pipeline -------------------------------------------------------------


def data_check():
    """What checking every image file costs, against a training epoch."""
    data = load("data_check.json")
    s = data["seconds"]

    def sec(entry):
        return f"{entry['median']:.2f} ({entry['min']:.2f}-{entry['max']:.2f})"

    rows = [
        [f"all {data['files']['all']:,} files, first check", sec(s["all_cold"])],
        [f"all {data['files']['all']:,} files, cached", sec(s["all_warm"])],
        [f"one task's {data['files']['task']:,} files, first check",
         sec(s["task_cold"])],
        ["one training epoch of that task", sec(s["epoch"])],
        ["one task's check / its epoch",
         ratio(data["task_check_over_epoch"])],
        ["all files' check / one task's epoch",
         ratio(data["all_check_over_epoch"])],
    ]
    return table(["", "seconds, median (min-max)"], rows)


EPOCH_STALL_ROWS = (
    ("`training_batches(autotune=True)`: decoded images cached, "
     "prefetch(AUTOTUNE), autotuning on", "autotune"),
    ("`training_batches()`: the same, prefetch(2), autotuning off (what the "
     "benchmarks use)", "fixed"),
    ("`packnet_tf.data.batches(...)`: JPEGs from the zip decoded every "
     "epoch, autotuning off (the library's default)", "library"),
    ("the same, `autotune=True`", "library_autotune"),
)


def epoch_stall():
    """First step of an epoch, rest of it, and the end of `fit`."""
    pipelines = load("epoch_stall.json")["pipelines"]

    def sec(entry, digits):
        return (f"{entry['median']:.{digits}f} "
                f"({entry['min']:.{digits}f}-{entry['max']:.{digits}f})")

    rows = [[label, sec(pipelines[k]["first_step_s"], 2),
             sec(pipelines[k]["rest_of_epoch_s"], 2),
             sec(pipelines[k]["fit_end_s"], 2)]
            for label, k in EPOCH_STALL_ROWS]
    return table(["pipeline", "first step s", "rest of the epoch s",
                  "end of fit s"], rows)


# The README's headline ------------------------------------------------------


def headline(pages="docs/results/"):
    """Mean final accuracy (%) on three workloads: the README's table.

    Args:
        pages: where the results pages are, from the page the table is on
            (the README's default; "" on the results index).
    """
    split = load("split_cifar10_5.json")
    five = load("five_datasets_32.json")
    equal = load("five_datasets_32_equal.json")
    recipe = load("five_datasets_32_equal_ft3.json")
    order = load("five_datasets_32_gtsrbfirst.json")
    pre = load("pretrained_3.json")

    def row(label, data, packnet, paired):
        m = data["methods"]
        return [label, str(len(m["packnet"]["seeds"]) if "seeds" in m["packnet"]
                           else len(data["seeds"])),
                f"**{stat(packnet['mean_final_acc'], 100, 2)}**",
                stat(m["individual"]["mean_final_acc"], 100, 2),
                stat(m["lwf"]["mean_final_acc"], 100, 2) if "lwf" in m
                else "-",
                stat(paired, 100, 2, signed=True),
                stat(packnet["bwt"], 100, 2)]

    rows = [
        row(f"[split-cifar10-5]({pages}split-cifar10-5.md)", split,
            split["methods"]["packnet"],
            split["paired"]["packnet_minus_individual"]),
        row(f"[five-datasets-32]({pages}five-datasets-32.md)", five,
            five["methods"]["packnet"],
            five["paired"]["packnet_minus_individual"]),
        row(f"[five-datasets-32]({pages}five-datasets-32.md), "
            "`prune_fraction: equal`", equal, equal["methods"]["packnet"],
            equal["paired"]["packnet_minus_individual"]),
        row(f"[five-datasets-32]({pages}five-datasets-32.md), "
            "`prune_fraction: equal`, `finetune_learning_rate: 0.001`",
            recipe, recipe["methods"]["packnet"],
            recipe["paired"]["packnet_minus_individual"]),
        row(f"[five-datasets-32]({pages}five-datasets-32.md), GTSRB "
            "trained first", order, order["methods"]["packnet"],
            order["paired"]["packnet_minus_individual"]),
        row(f"[pretrained-3]({pages}pretrained-3.md)", pre,
            pre["methods"]["packnet"],
            pre["paired"]["packnet_minus_individual"]),
    ]
    return table(["workload", "seeds", "PackNet (one network)",
                  "individual networks", "LwF",
                  "PackNet - individual (paired, points)", "PackNet BWT"],
                 rows)


#: Every table a results page can name: `<!-- table: NAME -->`.
TABLES = {
    "five_datasets_32": lambda: continual_methods("five_datasets_32"),
    "five_datasets_32_paired": lambda: continual_paired("five_datasets_32"),
    "pretrained_3": lambda: continual_methods("pretrained_3"),
    "pretrained_3_paired": lambda: continual_paired("pretrained_3"),
    "split_cifar10_5": split_cifar10_methods,
    "split_cifar10_5_paired": split_cifar10_paired,
    "split_cifar10_5_machines": split_cifar10_machines,
    "variants": variants,
    "variants_one_seed": lambda: variants(seeds=1),
    "batch_norm": batch_norm,
    "batch_norm_paired": batch_norm_paired,
    "batch_norm_steps": batch_norm_steps,
    "task_inference": task_inference,
    "task_inference_rejection": task_inference_rejection,
    "task_inference_cost": task_inference_cost,
    "train_overhead": train_overhead,
    "step_profile": step_profile,
    "step_profile_keras": step_profile_keras,
    "peer_side_by_side": peer_side_by_side,
    "scaling_time": scaling_time,
    "scaling_sizes": scaling_sizes,
    "scaling_memory": scaling_memory,
    "export": export,
    "export_batch_1": lambda: export("1"),
    "data_check": data_check,
    "epoch_stall": epoch_stall,
    "headline": lambda: headline(pages=""),
}
