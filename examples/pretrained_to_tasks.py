"""Bring an existing keras.applications network into PackNet, then add tasks.

The flow of the PackNet paper (an ImageNet VGG-16 pruned by half, new tasks
packed into the freed half), on a small scale that runs on a laptop CPU:

1. "Your pretrained network": a keras.applications MobileNet (alpha 0.5,
   32x32 inputs, `weights=None`: nothing is downloaded here) trained as
   plain Keras on digits 0-4 (scikit-learn's 8x8 digits, upscaled). Its
   classifier is a 1x1 convolution, a reshape and a softmax.
2. `packnet_tf.convert.converter(..., first_task=...)`: the same network as task 1,
   with identical outputs; task 1 owns every weight.
3. Prune task 1 by half, evaluate (the cost of pruning without data), re-
   train it briefly on its own data (`--retrain-epochs 0` skips that), and
   freeze it.
4. Two new tasks in the freed weights: digits 5-9 (pruned gradually on a
   tfmot PolynomialDecay schedule while fine-tuning) and odd-vs-even (the
   last task, not pruned). `capacity()` is printed after every task, and
   task 1's outputs are checked to be bit-identical at the end.

Measured: 88 s wall (79 s CPU) on 2 idle AMD EPYC cores, imports included,
most of it tracing the five training functions; `--retrain-epochs 0` saves
one.

Run: python examples/pretrained_to_tasks.py [--epochs N] [--retrain-epochs N]
     [--out DIR]
"""

import argparse
import pathlib
import sys
import time

import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import packnet_tf as pn

IMAGE_SIZE = 32
NUM_TASKS = 3
#: Batch size of the new tasks (task 1 trains with 32: more, smaller steps).
BATCH_SIZE = 64


def digits(keep, relabel, limit=None, seed=0):
    """`(train, test)` splits of the digits in `keep`, labels `relabel(y)`.

    The 8x8 images are upscaled to 32x32 RGB, MobileNet's smallest input;
    `limit` caps the training examples (to keep the run short).
    """
    data = load_digits()
    mask = np.isin(data.target, keep)
    scale = IMAGE_SIZE // 8
    images = np.kron(data.images[mask] / 16.0, np.ones((scale, scale)))
    images = np.repeat(images[..., None], 3, axis=-1).astype("float32")
    labels = relabel(data.target[mask]).astype("int32")
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=0.25, random_state=seed, stratify=labels)
    return (x_tr[:limit], y_tr[:limit]), (x_te, y_te)


def pretrained_network(train, epochs):
    """A keras.applications MobileNet trained as plain Keras."""
    model = keras.applications.MobileNet(
        input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), alpha=0.5, weights=None,
        classes=5)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            # Short training: statistics must move faster than 0.999.
            layer.momentum = 0.9
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(),
                  metrics=["accuracy"])
    model.fit(*train, epochs=epochs, batch_size=32, verbose=0)
    return model


def outputs(model, x):
    # A direct call: tracing a predict function per task costs more here
    # than running these few hundred images eagerly.
    return keras.ops.convert_to_numpy(model(x, training=False))


def accuracy(model, data, task=None):
    if task is not None:
        model.use_task(task)
    x, y = data
    return float(np.mean(np.argmax(outputs(model, x), -1) == y))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=4,
                        help="training epochs per task (default: %(default)s)")
    parser.add_argument("--retrain-epochs", type=int, default=1,
                        help="epochs re-training task 1 after pruning it; 0 "
                             "prunes without data (default: %(default)s)")
    parser.add_argument("--out", default=None,
                        help="folder to save the packed model in (optional)")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    start = time.perf_counter()

    low = digits([0, 1, 2, 3, 4], lambda y: y)
    high = digits([5, 6, 7, 8, 9], lambda y: y - 5)
    parity = digits(list(range(10)), lambda y: y % 2, limit=700)

    original = pretrained_network(low[0], args.epochs)
    print(f"pretrained MobileNet on digits 0-4: test accuracy "
          f"{accuracy(original, low[1]):.3f}")

    model = pn.convert(original, max_tasks=NUM_TASKS, first_task="digits_0_4")
    x_test = low[1][0]
    difference = np.abs(outputs(model, x_test) - outputs(original, x_test))
    print(f"converted: {len(model.trunk.layers)} trunk layers, max |output "
          f"difference| {np.max(difference):.1e}")

    model.prune(0.5)
    print(f"task 1 pruned by half, before re-training: accuracy "
          f"{accuracy(model, low[1]):.3f}")
    if args.retrain_epochs:
        # The head kept the original softmax: the loss reads probabilities.
        model.compile(keras.optimizers.Adam(1e-3),
                      keras.losses.SparseCategoricalCrossentropy(),
                      metrics=["accuracy"])
        model.fit(*low[0], epochs=args.retrain_epochs, batch_size=32,
                  verbose=0)
        # Batch norm: statistics of the pruned, re-trained network.
        model.recalibrate_batch_norm(low[0][0])
        model.end_task()
    else:
        # Pruned without data: the statistics it was converted with.
        model.end_task(recalibrate=False)
    print(f"task 1 re-trained {args.retrain_epochs} epoch(s) and frozen: "
          f"accuracy {accuracy(model, low[1]):.3f}")
    task_one = outputs(model, x_test)
    print(model.capacity(), "\n")

    steps = int(np.ceil(len(high[0][0]) / BATCH_SIZE))
    pn.train_task(model, "digits_5_9", high[0], num_classes=5,
                  epochs=args.epochs, prune_fraction="equal",
                  finetune_epochs=1, batch_size=BATCH_SIZE, verbose=0,
                  # From 0 to the planned 50% over the first half of the
                  # fine-tuning epoch, pruning every 2 steps.
                  gradual={"end_step": steps // 2, "frequency": 2})
    print(f"task 2 digits_5_9 (pruned gradually by "
          f"{pn.prune_fraction_for('equal', 1, NUM_TASKS):.0%}): accuracy "
          f"{accuracy(model, high[1], 'digits_5_9'):.3f}")
    print(model.capacity(), "\n")

    pn.train_task(model, "odd_even", parity[0], num_classes=2,
                  epochs=args.epochs, prune_fraction="equal", batch_size=BATCH_SIZE,
                  verbose=0)
    print(f"task 3 odd_even (last task, not pruned): accuracy "
          f"{accuracy(model, parity[1], 'odd_even'):.3f}")
    print(model.capacity(), "\n")

    model.use_task("digits_0_4")
    unchanged = np.array_equal(outputs(model, x_test), task_one)
    print(f"task 1 outputs bit-identical after two more tasks: {unchanged}")
    print(f"final accuracies: digits_0_4 {accuracy(model, low[1]):.3f}, "
          f"digits_5_9 {accuracy(model, high[1], 'digits_5_9'):.3f}, "
          f"odd_even {accuracy(model, parity[1], 'odd_even'):.3f}")
    if args.out:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        model.save(out / "pretrained_to_tasks.keras")
        print(f"saved to {out / 'pretrained_to_tasks.keras'}")
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0 if unchanged else 1


if __name__ == "__main__":
    sys.exit(main())
