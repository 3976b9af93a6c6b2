"""What checking every image file before training costs, on CIFAR-10's JPEGs.

`packnet-tf train` decodes every image file of every task once before it
trains (`packnet_tf.data.check_source`), so that a bad file stops the run
at the start, not inside an epoch. This measures that check on
`../shared/data/cifar10_jpg.zip` (60,000 JPEGs, read in place):

- the whole archive, cold (nothing cached) and warm (a second run: every
  file's fingerprint is in the cache, nothing is decoded);
- one split-cifar10-5 task (airplane, automobile: 12,000 files), cold;
- beside it, one training epoch of that task as `packnet-tf train` runs it
  (the reference CNN, batch 64, JPEGs decoded in the pipeline), so the
  check's cost reads as a share of an epoch.

The three take turns for `--rounds` rounds (this machine's speed switches
between two modes, see ../shared/NOTES.md); medians and spreads are
reported, with the per-round ratio check / epoch.

    PYTHONPATH=. python benchmarks/data_check.py --rounds 3
"""

import argparse
import tempfile
import time

import keras

import packnet_tf as pn
from common import (CIFAR10_ZIP, SPLIT_CIFAR10_5, cifar_cnn_layers, command,
                    machine, summary, write_json)
from packnet_tf import data


def check_seconds(classes, cache=None):
    """Seconds to check every file of a fresh source; its file count."""
    source = data.ImageFolderSource(CIFAR10_ZIP, classes=classes)
    start = time.perf_counter()
    report = data.check_source(source, channels=3, cache=cache)
    seconds = time.perf_counter() - start
    assert report.num_bad == 0, report.summary()
    return seconds, sum(s.total for s in report.splits)


def make_epoch(classes):
    """A function that trains one epoch of one task; returns its seconds."""
    trunk = keras.Sequential([keras.Input((32, 32, 3))]
                             + cifar_cnn_layers(keras.layers, packed=True))
    model = pn.PackNetModel(trunk, max_tasks=5)
    model.add_task("task1", num_classes=2)
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    source = data.ImageFolderSource(CIFAR10_ZIP, classes=classes)

    def epoch(seed):
        batches = data.batches(source, "train", (32, 32, 3), batch_size=64,
                               seed=seed, preprocess="unit")
        start = time.perf_counter()
        model.fit(batches, epochs=1, verbose=0)
        return time.perf_counter() - start

    epoch(0)  # traces the train step
    return epoch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    task = list(SPLIT_CIFAR10_5[0])
    epoch = make_epoch(task)
    rows = {"all_cold": [], "all_warm": [], "task_cold": [], "epoch": []}
    files = {}
    for round_ in range(args.rounds):
        with tempfile.TemporaryDirectory() as folder:
            cache = f"{folder}/cache.json"
            seconds, files["all"] = check_seconds(None, cache)
            rows["all_cold"].append(seconds)
            rows["all_warm"].append(check_seconds(None, cache)[0])
        seconds, files["task"] = check_seconds(task)
        rows["task_cold"].append(seconds)
        rows["epoch"].append(epoch(round_ + 1))
        print(f"round {round_ + 1}: " + ", ".join(
            f"{k} {v[-1]:.2f} s" for k, v in rows.items()), flush=True)
    ratios = [c / e for c, e in zip(rows["task_cold"], rows["epoch"])]
    all_ratios = [c / e for c, e in zip(rows["all_cold"], rows["epoch"])]
    result = {
        "machine": machine(), "command": command(), "rounds": args.rounds,
        "files": files,
        "seconds": {k: summary(v) for k, v in rows.items()},
        "files_per_second_cold": files["all"] / summary(
            rows["all_cold"])["median"],
        "task_check_over_epoch": summary(ratios),
        "all_check_over_epoch": summary(all_ratios),
        "raw": rows,
    }
    path = write_json("data_check.json", result)
    med = {k: v["median"] for k, v in result["seconds"].items()}
    print(f"\n{machine()}\n"
          f"check, all {files['all']:,} files, cold: {med['all_cold']:.1f} s "
          f"({result['files_per_second_cold']:,.0f} files/s); warm cache: "
          f"{med['all_warm']:.2f} s\n"
          f"check, one task ({files['task']:,} files): "
          f"{med['task_cold']:.1f} s = "
          f"{result['task_check_over_epoch']['median']:.0%} of one epoch of "
          f"that task ({med['epoch']:.1f} s)\nwritten to {path}")


if __name__ == "__main__":
    main()
