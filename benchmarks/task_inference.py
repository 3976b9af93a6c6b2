"""Task inference without a task id (issue 26), on the trained PackNet models.

    PYTHONPATH=. python benchmarks/task_inference.py --seeds 0,1,2
    PYTHONPATH=. python benchmarks/task_inference.py --aggregate
    PYTHONPATH=. python benchmarks/task_inference.py --quick --seeds 0

For each workload (five-datasets-32 and split-cifar10-5, through
`continual.Workload`: their run configs in `examples/`) and seed, the
PackNet model its run config trains with that seed (what `packnet-tf train`
writes; trained here first when `runs/task_inference/<workload>_seed<S>.keras`
is missing). Every finished task's whole test split goes once through
`infer_task` (all tasks in one traced function), which gives every task's
class probabilities and (`score="statistics"`) every task's density score
for every example; then, for each
scoring rule (normalized entropy, confidence, statistics):

- task-inference accuracy per example and per batch of 4, 16 and 64
  same-task examples (each task's test examples in a seeded random order,
  cut into consecutive groups; `choose_tasks`, which is what
  `infer_task(per="batch")` does: the run asserts so on a group of each
  task), per task and the mean over tasks;
- end-to-end accuracy (task and class right) against the oracle (the true
  task given);
- calibrated inference (`infer_task(calibrated=True)`): each task's
  score as its percentile among its own scores on 2,048 of its training
  examples (`task_inference.calibrate`, redone here in memory), so a head
  confident on everything cannot outbid the others;
- rejection of a data set no task learned (Flowers-102's test split,
  resized to the trunk's input): AUROC of the chosen task's score, and the
  share of Flowers images flagged where the threshold answers 99%, 95% and
  90% of the tasks' own test examples (a curve over the test scores: no
  threshold is chosen from them);
- time per example, interleaved rounds on one block of mixed test
  examples at batch 256: `infer_task` (every task), one task's `predict`,
  and T `predict`s, one per task; and in the multi-task SavedModel a
  server loads, `any_task` against one task's signature.

One file per (workload, seed) in `results/task_inference/`, written when
it finishes (a rerun skips it; `--force` redoes it); `--aggregate` writes
`results/task_inference.json` (mean +- sd over seeds) and prints the
README table.
"""

import argparse
import io
import pathlib
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common  # noqa: E402
import continual  # noqa: E402

WORKLOADS = ("five-datasets-32", "split-cifar10-5")
RULES = ("entropy", "confidence", "statistics")
GROUPS = (1, 4, 16, 64)
ANSWERED = (0.99, 0.95, 0.90)
HELD_OUT = {"folder": "../../shared/data/flowers102_jpg.zip",
            "train_split": "test", "test_split": None}
TIMING_EXAMPLES = 2048
TIMING_ROUNDS = 7
MODELS = continual.ROOT / "runs" / "task_inference"
FOLDER = "task_inference"


def model_path(workload, seed):
    return MODELS / f"{workload.run_name}_seed{seed}.keras"


def trained_model(workload, seed):
    """The workload's PackNet model for `seed`, trained first if missing."""
    from packnet_tf.cli.config import parse_config
    from packnet_tf.cli.runner import train
    from packnet_tf.io import checkpoint

    path = model_path(workload, seed)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = dict(workload.raw, seed=seed)
        if workload.quick:
            raw["defaults"] = dict(raw.get("defaults") or {}, epochs=1,
                                   finetune_epochs=1)
            raw["tasks"] = [
                dict(t, data=dict(t["data"], train_examples=64 *
                                  continual.QUICK_STEPS))
                for t in raw["tasks"]]
        config = parse_config(raw, workload.path, continual.EXAMPLES,
                              model=str(path))
        log = io.StringIO()
        start = time.perf_counter()
        train(config, stream=log, verbose=0)
        print(log.getvalue().rstrip())
        print(f"trained {path} in {time.perf_counter() - start:.0f} s",
              flush=True)
    return checkpoint.load_model(path)


def held_out_images(workload, limit=None):
    """Flowers-102's test images, prepared as the first task's inputs."""
    from packnet_tf.data import batches, from_spec

    source = from_spec(HELD_OUT, base_dir=continual.EXAMPLES)
    options = workload.tasks[0]["options"]
    data = batches(source, "test", workload.shape, batch_size=256,
                   shuffle=False, preprocess=options["preprocess"],
                   resize=options["resize"])
    x = np.concatenate([x.numpy() for x, _ in data])
    return x[:limit] if limit else x


def auroc(inside, outside):
    """P(an in-distribution score > a held-out one), ties counted half."""
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.ones(len(inside)), np.zeros(len(outside))]
    return float(roc_auc_score(labels, np.r_[inside, outside]))


def calibration(model, workload, seed):
    """Per rule, each task's own score quantiles, as the library records
    them when a task ends (`task_inference.calibrate`, on the first 2,048
    of its training examples in a seeded order; never the test split).
    The models here may predate the recording: it is redone in memory."""
    from packnet_tf.inference.task_inference import calibrate

    for task in workload.tasks:
        calibrate(model, task["name"], workload.batches(
            task, task["source"].train_split, seed=seed, shuffle=True,
            batch_size=256))
    return {rule: [t.score_reference[rule] for t in model.tasks
                   if not t.headless] for rule in RULES}


def inference_table(model, workload, seed, reference=None):
    """Task-inference and end-to-end accuracy per rule and group size.

    Returns:
        `(table, scores, true)`: the metrics by `"<rule>/<group size>"`,
        every example's `[N, T]` scores by rule, and its true task.
    """
    import packnet_tf as pn
    from packnet_tf.evaluation.metrics import task_inference_metrics
    from packnet_tf.inference.task_inference import (calibrated_scores,
                                                     choose_tasks, task_scores)

    names = [t["name"] for t in workload.tasks]
    rng = np.random.default_rng(seed)
    inputs, answers, labels, truth, statistics = [], [], [], [], []
    for task in workload.tasks:
        order = rng.permutation(len(task["y_test"]))
        x = task["x_test"][order]
        # One pass gives every task's probabilities (the head rules'
        # scores) and its statistics score.
        result = pn.infer_task(model, x, score="statistics",
                               batch_size=continual.INFERENCE_BATCH)
        assert result.tasks == tuple(names), result.tasks
        statistics.append(result.task_scores)
        # The class infer_task ranks first is predict's, exactly.
        model.use_task(task["name"])
        logits = model.predict(x[:256], verbose=0)
        assert np.array_equal(
            np.argmax(logits, axis=1),
            np.argmax(result.probabilities[task["name"]][:256], axis=1))
        inputs.append(x[:max(GROUPS)])
        answers.append([result.probabilities[n] for n in names])
        labels.append(task["y_test"][order])
        truth.append(np.full(len(order), task["name"], dtype=object))
    y, true = np.concatenate(labels), np.concatenate(truth)
    probabilities = [np.concatenate([a[t] for a in answers])
                     for t in range(len(names))]
    oracle = np.concatenate([np.argmax(a[i], axis=1)
                             for i, a in enumerate(answers)])
    table, scores_by_rule = {}, {}

    def measure(key, rule, scores, calibrated):
        """Choices on `scores` for each group size, checked against
        infer_task on each task's first group, into `table`."""
        for size in GROUPS:
            chosen = np.concatenate([
                choose_tasks(scores[true == name], per="batch",
                             group_size=size)[0] for name in names])
            for i, name in enumerate(names):
                first = int(np.argmax(true == name))
                direct = pn.infer_task(model, inputs[i][:size], per="batch",
                                       score=rule, calibrated=calibrated)
                rows = scores[first:first + size]
                np.testing.assert_allclose(direct.task_scores, rows,
                                           atol=1e-3 if calibrated else 1e-4)
                low, high = np.sort(rows.sum(axis=0))[-2:]
                assert (direct.task[0] == names[chosen[first]]
                        or high - low < 1e-2), (name, size, key)
            predicted = np.array([np.argmax(probabilities[c][i])
                                  for i, c in enumerate(chosen)])
            table[f"{key}/{size}"] = task_inference_metrics(
                true, np.array(names, dtype=object)[chosen], y, predicted,
                oracle, tasks=names).as_dict()

    for rule in RULES:
        scores = (np.concatenate(statistics) if rule == "statistics"
                  else np.stack([task_scores(p, rule).numpy()
                                 for p in probabilities], axis=1))
        scores_by_rule[rule] = scores
        measure(rule, rule, scores, False)
        if reference is not None:
            measure(f"{rule}, calibrated", rule,
                    calibrated_scores(scores, reference[rule]), True)
    return table, scores_by_rule, true


def time_inference(model, workload):
    """Seconds per example: infer_task, one task's predict, T predicts.

    Interleaved rounds on one block of mixed test examples (the same
    block for all three), after a warm-up call of each; ratios per round.
    """
    import tensorflow as tf

    import packnet_tf as pn
    from packnet_tf import export

    names = [t["name"] for t in workload.tasks]
    per_task = TIMING_EXAMPLES // len(names)
    block = np.concatenate([t["x_test"][:per_task] for t in workload.tasks])
    batch = continual.INFERENCE_BATCH

    def one():
        model.use_task(names[0])
        model.predict(block, batch_size=batch, verbose=0)

    def separate():
        for name in names:
            model.use_task(name)
            model.predict(block, batch_size=batch, verbose=0)

    def inferred():
        pn.infer_task(model, block, batch_size=batch)

    def inferred_statistics():
        pn.infer_task(model, block, batch_size=batch, score="statistics")

    with tempfile.TemporaryDirectory() as folder:
        # The multi-task SavedModel a server loads: any_task against one
        # task's signature, in the same rounds.
        served = tf.saved_model.load(export.saved_model(model, folder,
                                                        layout="multi"))
        signatures = {"any_task": served.signatures["any_task"],
                      "task": served.signatures[f"task_{names[0]}"]}

        def signature(key):
            def run():
                for start in range(0, len(block), batch):
                    signatures[key](inputs=tf.constant(
                        block[start:start + batch]))
            return run

        runs = {"infer_task": inferred,
                "infer_task_statistics": inferred_statistics,
                "one_predict": one,
                "t_predicts": separate,
                "saved_model_any_task": signature("any_task"),
                "saved_model_one_task": signature("task")}
        for run in runs.values():
            run()
        seconds = {name: [] for name in runs}
        for _ in range(TIMING_ROUNDS):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)
    per_example = {name: common.summary(np.array(s) / len(block) * 1e6)
                   for name, s in seconds.items()}
    ratio = lambda a, b: common.summary(
        np.array(seconds[a]) / np.array(seconds[b]))
    return {"examples": len(block), "batch_size": batch,
            "rounds": TIMING_ROUNDS, "microseconds_per_example": per_example,
            "infer_task_over_one_predict": ratio("infer_task",
                                                 "one_predict"),
            "infer_task_over_t_predicts": ratio("infer_task", "t_predicts"),
            "infer_task_statistics_over_one_predict": ratio(
                "infer_task_statistics", "one_predict"),
            "any_task_over_one_task_signature": ratio(
                "saved_model_any_task", "saved_model_one_task"),
            "tasks": len(names)}


def main_seed(workload, seed):
    """Everything measured for one (workload, seed)."""
    import packnet_tf as pn

    model = trained_model(workload, seed)
    start = time.perf_counter()
    table, scores, true = inference_table(
        model, workload, seed, calibration(model, workload, seed))
    names = [t["name"] for t in workload.tasks]
    flowers = held_out_images(workload, 512 if workload.quick else None)
    outside = pn.infer_task(model, flowers, batch_size=256,
                            score="statistics")
    outside_statistics = outside.task_scores
    rejection = {}
    for rule in RULES:
        from packnet_tf.inference.task_inference import task_scores

        inside_best = scores[rule].max(axis=1)
        outside_best = (outside_statistics if rule == "statistics"
                        else np.stack([
                            task_scores(outside.probabilities[n],
                                        rule).numpy()
                            for n in names], axis=1)).max(axis=1)
        curve = []
        for share in ANSWERED:
            threshold = float(np.quantile(inside_best, 1 - share))
            curve.append({"answered": share, "threshold": threshold,
                          "held_out_flagged": float(
                              np.mean(outside_best < threshold))})
        rejection[rule] = {"auroc": auroc(inside_best, outside_best),
                           "curve": curve,
                           "held_out_examples": len(outside_best)}
    timing = time_inference(model, workload)
    return {
        "workload": workload.name, "seed": seed, "tasks": names,
        "test_examples": {n: int(np.sum(true == n)) for n in names},
        "model": str(model_path(workload, seed).relative_to(continual.ROOT)),
        "inference": table, "rejection": rejection, "timing": timing,
        "seconds": time.perf_counter() - start,
        "machine": common.machine(), "command": common.command(),
        "date": time.strftime("%Y-%m-%d")}


# -- the runs and the table ------------------------------------------------


def seed_file(workload, seed):
    return f"{FOLDER}/{workload.run_name}_seed{seed}.json"


def aggregate(quick=False):
    """`results/task_inference.json`: mean +- sd over each workload's seeds."""
    import json

    suffix = "_quick" if quick else ""
    out = {"workloads": {}, "command": common.command()}
    for name in WORKLOADS:
        stem = continual.stem(name, quick)
        runs = [json.loads(p.read_text()) for p in sorted(
            (common.RESULTS / FOLDER).glob(f"{stem}_seed*.json"))]
        if not runs:
            continue
        mean_sd = lambda values: {
            "mean": float(np.mean(values)),
            "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "n": len(values)}
        entry = {"seeds": [r["seed"] for r in runs],
                 "machines": sorted({r["machine"] for r in runs}),
                 "tasks": runs[0]["tasks"], "inference": {},
                 "rejection": {}, "timing": {}}
        for key in runs[0]["inference"]:
            entry["inference"][key] = {
                field: mean_sd([r["inference"][key][f"mean_{field}"]
                                for r in runs])
                for field in ("task_accuracy", "end_to_end", "oracle")}
            entry["inference"][key]["per_task_accuracy"] = {
                t: mean_sd([r["inference"][key]["task_accuracy"][t]
                            for r in runs]) for t in entry["tasks"]}
        for rule in RULES:
            entry["rejection"][rule] = {
                "auroc": mean_sd([r["rejection"][rule]["auroc"]
                                  for r in runs]),
                "held_out_flagged": {
                    str(point["answered"]): mean_sd([
                        r["rejection"][rule]["curve"][i]["held_out_flagged"]
                        for r in runs])
                    for i, point in enumerate(
                        runs[0]["rejection"][rule]["curve"])}}
        for key in ("infer_task_over_one_predict",
                    "infer_task_over_t_predicts",
                    "infer_task_statistics_over_one_predict",
                    "any_task_over_one_task_signature"):
            entry["timing"][key] = mean_sd([r["timing"][key]["median"]
                                            for r in runs])
        entry["timing"]["microseconds_per_example"] = {
            k: mean_sd([r["timing"]["microseconds_per_example"][k]["median"]
                        for r in runs])
            for k in runs[0]["timing"]["microseconds_per_example"]}
        out["workloads"][name] = entry
    path = common.write_json(f"task_inference{suffix}.json", out)
    print_table(out)
    print(f"wrote {path}")
    return out


def print_table(out):
    pct = lambda s: f"{100 * s['mean']:.2f} ± {100 * s['sd']:.2f}"
    for name, entry in out["workloads"].items():
        print(f"\n{name} ({len(entry['seeds'])} seeds, "
              f"{len(entry['tasks'])} tasks), % mean ± sd over seeds:\n")
        print("| rule | per | task inference | end-to-end | "
              "task given (oracle) |")
        print("|---|---|---|---|---|")
        for key, value in entry["inference"].items():
            rule, size = key.rsplit("/", 1)
            per = "example" if size == "1" else f"batch of {size}"
            print(f"| {rule} | {per} | {pct(value['task_accuracy'])} | "
                  f"{pct(value['end_to_end'])} | {pct(value['oracle'])} |")
        for rule, value in entry["rejection"].items():
            flagged = ", ".join(
                f"{pct(v)}% at {float(k):.0%} answered"
                for k, v in value["held_out_flagged"].items())
            print(f"\nheld-out Flowers-102, {rule}: AUROC "
                  f"{value['auroc']['mean']:.3f} ± {value['auroc']['sd']:.3f}"
                  f"; flagged {flagged}")
        timing = entry["timing"]
        us = timing["microseconds_per_example"]
        print(f"\ntime per example: infer_task {us['infer_task']['mean']:.0f}"
              f" us, one predict {us['one_predict']['mean']:.0f} us, "
              f"{len(entry['tasks'])} predicts {us['t_predicts']['mean']:.0f}"
              f" us; infer_task / one predict "
              f"{timing['infer_task_over_one_predict']['mean']:.2f}x, / T "
              f"predicts {timing['infer_task_over_t_predicts']['mean']:.2f}x"
              f"; SavedModel any_task {us['saved_model_any_task']['mean']:.0f}"
              f" us, a task's signature "
              f"{us['saved_model_one_task']['mean']:.0f} us: "
              f"{timing['any_task_over_one_task_signature']['mean']:.2f}x")
        print(f"infer_task(score='statistics') "
              f"{us['infer_task_statistics']['mean']:.0f} us: "
              f"{timing['infer_task_statistics_over_one_predict']['mean']:.2f}"
              "x one predict")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--aggregate", action="store_true",
                        help="only combine the per-seed files")
    parser.add_argument("--force", action="store_true",
                        help="redo seeds already written")
    parser.add_argument("--quick", action="store_true",
                        help="continual.py's quick workloads: every code "
                        "path in minutes, not a result")
    args = parser.parse_args(argv)
    if args.aggregate:
        aggregate(args.quick)
        return 0
    seeds = common.parse_seeds(args.seeds, parser)
    names = [w for w in args.workloads.split(",") if w]
    unknown = sorted(set(names) - set(WORKLOADS))
    if unknown:
        parser.error(f"--workloads: {unknown} unknown; expected some of "
                     f"{list(WORKLOADS)}")
    for name in names:
        workload = None
        for seed in seeds:
            stem = continual.stem(name, args.quick)
            if (common.RESULTS / FOLDER / f"{stem}_seed{seed}.json").exists(
                    ) and not args.force:
                print(f"{name} seed {seed}: written already (--force redoes "
                      "it)")
                continue
            workload = workload or continual.Workload(name, quick=args.quick)
            result = main_seed(workload, seed)
            path = common.write_json(seed_file(workload, seed), result)
            print(f"{name} seed {seed}: {result['seconds']:.0f} s, wrote "
                  f"{path}", flush=True)
    aggregate(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
