"""PackNet's accuracy levers on split-cifar10-5, each over seeds, paired.

Every variant changes one thing in the reference recipe of
../shared/data/README.md (4 epochs Adam 1e-3, prune 50% per layer, every
task the last one too, fine-tune 2 epochs Adam 1e-4, batch 64, free weights
starting at 0) and runs PackNet alone on the five tasks, seed by seed, with
the seed's initial weights and batch order shared by every variant. The
reference runs in the same command, so every difference is paired on one
machine:

- reference: the recipe above, as the library ran it until
  `free_init="previous"` became its default;
- free_previous: `PackNetModel(free_init="previous")`, a new task's free
  weights start at their values when pruned (Avalanche's choice): the
  recipe with the library's defaults today, the "defaults" row every
  `previous_*` variant is also paired against;
- free_initializer: `free_init="initializer"`, fresh Glorot-uniform draws;
- adam_eps_1e-8: Adam's epsilon at PyTorch's 1e-8 (Keras: 1e-7);
- last_unpruned: the last task keeps all its weights and trains for the
  baselines' 6 epochs (the paper's choice);
- gradual: pruned along a tfmot PolynomialDecay during fine-tuning (0 to
  50% over the first fine-tuning epoch, every 16 steps), not in one shot;
- equal: `prune_fraction="equal"` (every task ends with a fifth of each
  layer; the last task is not pruned or fine-tuned);
- augment: random horizontal flips and shifts of up to 10% on training
  batches (`packnet_tf.data.augmentation`);
- jpeg_accurate: the JPEGs decoded with the accurate integer DCT, as PIL
  (Avalanche's torchvision pipeline) decodes them, not TensorFlow's default
  fast one (benchmarks/jpeg_decoders.py: they differ in 64% of values);
- first_task_biases: every task computes with task 1's biases, frozen
  (Avalanche's PackNet), not its own (`cl_methods.FirstTaskBiases`);
- previous_last_unpruned: free_previous and last_unpruned together;
- previous_gradual, previous_equal, previous_augment: free_previous and
  gradual, equal or augment together;
- previous_auto: free_previous and `prune_fraction="auto"` (tolerance 0.5
  points of validation accuracy, the library's default candidates 0.9 to
  0.1 with one recovery epoch each); every 10th training example is held
  out as the validation data the search needs and is not trained on.

Each finished (variant, seed) is written at once to
results/variants/<variant>_seed<S>.json, and results/packnet_variants.json
is rebuilt after each: per variant the mean ± sd of the mean final
accuracy and of each task's, the paired difference against the reference
(mean ± sd over the seeds both have), and forgetting (always 0: the run
asserts earlier tasks' logits bit-identical). A run that stops keeps what
it finished; a rerun skips (variant, seed) pairs already written.

    PYTHONPATH=. python benchmarks/packnet_variants.py --seeds 0,1,2
    PYTHONPATH=. python benchmarks/packnet_variants.py --variants reference,free_previous --seeds 0

Not a test; takes about 5 min per (variant, seed) on 2 cores.
"""

import argparse
import json
import time

import numpy as np
from cl_methods import PRUNE_FRACTION, run_packnet
from common import (CIFAR10_ZIP, RESULTS, command, machine, parse_seeds,
                    write_json)

#: The reference recipe's settings (`cl_methods.run_packnet`).
REFERENCE = {"prune_fraction": PRUNE_FRACTION, "no_prune_last": False,
             "free_init": "zero", "adam_epsilon": 1e-7, "gradual": None,
             "augment": None, "jpeg": "default",
             "first_task_biases": False, "auto_holdout": None,
             "auto_tolerance": None}
PREVIOUS = {"free_init": "previous"}
#: Variants: what each changes in the reference.
VARIANTS = {
    "reference": {},
    "free_previous": {"free_init": "previous"},
    "free_initializer": {"free_init": "initializer"},
    "adam_eps_1e-8": {"adam_epsilon": 1e-8},
    "last_unpruned": {"no_prune_last": True},
    "gradual": {"gradual": {"end_step": 157, "frequency": 16}},
    "equal": {"prune_fraction": "equal"},
    "augment": {"augment": {"flip": "horizontal", "translate": 0.1}},
    "jpeg_accurate": {"jpeg": "accurate"},
    "first_task_biases": {"first_task_biases": True},
    "previous_last_unpruned": {**PREVIOUS, "no_prune_last": True},
    "previous_gradual": {**PREVIOUS,
                         "gradual": {"end_step": 157, "frequency": 16}},
    "previous_equal": {**PREVIOUS, "prune_fraction": "equal"},
    "previous_augment": {**PREVIOUS, "augment": {"flip": "horizontal",
                                                 "translate": 0.1}},
    "previous_auto": {**PREVIOUS, "prune_fraction": "auto",
                      "auto_holdout": 10, "auto_tolerance": 0.005},
}
#: The row of the library's defaults, the second pairing.
DEFAULTS = "free_previous"
FOLDER = "variants"


def _mean_sd(values):
    values = [float(v) for v in values]
    return {"mean": float(np.mean(values)),
            "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            "n": len(values)}


def _path(variant, seed, folder=FOLDER):
    return RESULTS / folder / f"{variant}_seed{seed}.json"


def summarize(folder=FOLDER):
    """Every variant's mean ± sd and its paired differences to the
    reference and to the library's defaults (`DEFAULTS`)."""
    runs = {}
    for path in sorted((RESULTS / folder).glob("*_seed*.json")):
        record = json.loads(path.read_text())
        runs.setdefault(record["variant"], {})[record["seed"]] = record
    table = {}

    def paired(seeds, base):
        base = runs.get(base, {})
        diffs = [seeds[s]["result"]["mean_final_acc"]
                 - base[s]["result"]["mean_final_acc"]
                 for s in sorted(seeds) if s in base]
        return {**_mean_sd(diffs), "per_seed": diffs} if diffs else None

    for variant in VARIANTS:
        seeds = runs.get(variant, {})
        if not seeds:
            continue
        finals = [r["result"]["mean_final_acc"] for r in seeds.values()]
        table[variant] = {
            "changes": VARIANTS[variant],
            "seeds": sorted(seeds),
            "mean_final_acc": _mean_sd(finals),
            "final_acc": [_mean_sd(col) for col in zip(
                *[r["result"]["final_acc"] for r in seeds.values()])],
            "mean_forgetting": _mean_sd(
                [r["result"]["mean_forgetting"] for r in seeds.values()]),
            "paired_minus_reference": paired(seeds, "reference"),
            "paired_minus_defaults": paired(seeds, DEFAULTS),
            "train_seconds": _mean_sd(
                [r["result"]["train_seconds"] for r in seeds.values()]),
        }
    return table


def print_summary(table):
    def points(paired):
        return "-" if paired is None else (
            f"{100 * paired['mean']:+.2f}" + (
                "" if paired["sd"] is None
                else f" ± {100 * paired['sd']:.2f}"))

    print(f"\n{'variant':<24}{'seeds':>6}{'mean final':>18}"
          f"{'vs reference, points':>24}{'vs defaults':>16}")
    for variant, row in table.items():
        acc = row["mean_final_acc"]
        sd = "" if acc["sd"] is None else f" ± {acc['sd']:.3f}"
        print(f"{variant:<24}{len(row['seeds']):>6}"
              f"{acc['mean']:>11.4f}{sd:<7}"
              f"{points(row['paired_minus_reference']):>24}"
              f"{points(row['paired_minus_defaults']):>16}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(CIFAR10_ZIP))
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated, of: " + ", ".join(VARIANTS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 tasks, 5 steps per epoch, into "
                        "results/variants_quick/ (not a measurement)")
    parser.add_argument("--summary", action="store_true",
                        help="rebuild packnet_variants.json; train nothing")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        parser.error(f"--variants: expected some of {', '.join(VARIANTS)}."
                     f" Received: {args.variants!r}")
    seeds = parse_seeds(args.seeds, parser)
    folder = FOLDER + "_quick" * args.quick
    name = "packnet_variants" + "_quick" * args.quick + ".json"
    if not args.summary:
        from split_cifar10_5 import load_tasks

        loaded = {}

        def tasks_for(jpeg):
            if jpeg not in loaded:
                loaded[jpeg] = load_tasks(argparse.Namespace(
                    data=args.data, quick=args.quick,
                    accurate_jpeg=jpeg == "accurate"))
            return loaded[jpeg]

        started = time.perf_counter()
        for variant in variants:  # variant by variant: whole rows first
            for seed in seeds:
                if _path(variant, seed, folder).exists():
                    print(f"{variant} seed {seed}: already written")
                    continue
                print(f"\n== {variant}, seed {seed}", flush=True)
                settings = {**REFERENCE, **VARIANTS[variant]}
                if args.quick and settings["gradual"]:
                    settings["gradual"] = {"end_step": 5, "frequency": 1}
                result, _ = run_packnet(tasks_for(settings["jpeg"]),
                                        settings, seed)
                write_json(f"{folder}/{variant}_seed{seed}.json", {
                    "workload": "split-cifar10-5", "variant": variant,
                    "changes": VARIANTS[variant], "settings": settings,
                    "seed": seed, "result": result, "machine": machine(),
                    "command": command()})
                table = summarize(folder)
                write_json(name, {
                    "workload": "split-cifar10-5", "variants": table,
                    "machine": machine(), "command": command()})
                print_summary(table)
        print(f"total {time.perf_counter() - started:.0f} s")
    table = summarize(folder)
    write_json(name, {
        "workload": "split-cifar10-5", "variants": table,
        "machine": machine(), "command": command()})
    print_summary(table)


if __name__ == "__main__":
    main()
