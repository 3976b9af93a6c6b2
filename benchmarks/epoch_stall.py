"""What tf.data autotuning costs at each epoch boundary of Keras' `fit`.

Keras 3 makes a new iterator per epoch for a dataset of known cardinality
and drops the old one. On this machine that stalls the next step by seconds
when tf.data autotuning is on. This measures it on plain Keras 3 (the
split-cifar10-5 CNN, batch 64, one task's 10,000 real CIFAR-10 images), four
pipelines taking turns for `--rounds` rounds:

- `autotune`: `common.training_batches(..., autotune=True)`: decoded
  images cached in memory, shuffle, batch, map with 2 calls,
  prefetch(AUTOTUNE), autotuning on (the benchmarks' pipeline before);
- `fixed`: `common.training_batches(...)` as the benchmarks use it now:
  the same with prefetch(2) and `autotune.enabled = False`;
- `library`: `packnet_tf.data.batches(...)` as the library and
  `packnet-tf train` build it by default (JPEGs read from the zip and
  decoded every epoch; autotuning off, prefetch(2));
- `library_autotune`: the same with `autotune=True`.

Per pipeline: the first step of every epoch after the first (the new
iterator's), the rest of each epoch, and the time from the last epoch's end
to `fit` returning (the last iterator dropped). Medians and spreads.

    PYTHONPATH=. python benchmarks/epoch_stall.py --rounds 2
"""

import argparse
import time

import keras

import packnet_tf as pn
from common import (CIFAR10_ZIP, SPLIT_CIFAR10_5, cifar_cnn_layers, command,
                    decoded_split, machine, summary, to_unit,
                    training_batches, write_json)

BATCH = 64


class _Timeline(keras.callbacks.Callback):
    """Records epoch starts, first steps, epoch ends and the end of fit."""

    def __init__(self):
        super().__init__()
        self.first_step, self.rest, self.train_end = [], [], None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._begin = epoch, time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            self._first = time.perf_counter()
            if self._epoch > 0:  # epoch 0's first step traces
                self.first_step.append(self._first - self._begin)

    def on_epoch_end(self, epoch, logs=None):
        self.rest.append(time.perf_counter() - self._first)

    def on_train_end(self, logs=None):
        self.train_end = time.perf_counter()


def pipelines(cached, count):
    """`{name: dataset}` of the pipelines compared."""
    source = pn.data.from_spec({"folder": str(CIFAR10_ZIP),
                                "classes": list(SPLIT_CIFAR10_5[0])})

    def library(autotune):
        return pn.data.batches(source, "train", (32, 32, 3), BATCH, seed=0,
                               preprocess="unit", autotune=autotune)

    return {"autotune": training_batches(cached, count, BATCH, autotune=True),
            "fixed": training_batches(cached, count, BATCH),
            "library": library(False), "library_autotune": library(True)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.epochs < 2:
        parser.error("expected --rounds >= 1 and --epochs >= 2. Received: "
                     f"--rounds {args.rounds} --epochs {args.epochs}")
    cached, count = decoded_split(CIFAR10_ZIP, SPLIT_CIFAR10_5[0], "train")
    datasets = pipelines(cached, count)
    models = {}
    for name in datasets:
        keras.utils.set_random_seed(0)
        models[name] = keras.Sequential(
            [keras.Input((32, 32, 3))] + cifar_cnn_layers(keras.layers)
            + [keras.layers.Dense(2)])
        models[name].compile("adam", keras.losses.SparseCategoricalCrossentropy(
            from_logits=True))
    figures = {name: {"first_step_s": [], "rest_of_epoch_s": [],
                      "fit_end_s": []} for name in datasets}
    names = list(datasets)
    for round_ in range(args.rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            timeline = _Timeline()
            models[name].fit(datasets[name], epochs=args.epochs, verbose=0,
                             callbacks=[timeline])
            returned = time.perf_counter()
            figures[name]["first_step_s"] += timeline.first_step
            figures[name]["rest_of_epoch_s"] += timeline.rest[1:]
            figures[name]["fit_end_s"].append(returned - timeline.train_end)
            print(f"round {round_} {name}: first steps "
                  f"{[round(s, 2) for s in timeline.first_step]}, fit end "
                  f"{returned - timeline.train_end:.2f} s", flush=True)
    result = {
        "workload": "plain Keras 3 fit, split-cifar10-5 CNN, batch 64, "
                    f"{count} images, {args.epochs} epochs per fit",
        "pipelines": {name: {key: {**summary(values), "all": values}
                             for key, values in f.items()}
                      for name, f in figures.items()},
        "machine": machine(), "command": command(),
    }
    path = write_json("epoch_stall.json", result)
    for name, f in result["pipelines"].items():
        print(f"{name}: first step of an epoch "
              f"{f['first_step_s']['median']:.2f} s "
              f"({f['first_step_s']['min']:.2f}-{f['first_step_s']['max']:.2f})"
              f", rest of an epoch {f['rest_of_epoch_s']['median']:.2f} s, "
              f"fit end {f['fit_end_s']['median']:.2f} s")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
