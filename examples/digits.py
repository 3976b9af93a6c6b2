"""Pack five digit tasks into one small CNN, forgetting nothing.

scikit-learn's 8x8 digits (1,797 real images, shipped with the package) are
split into five 2-way tasks: 0 vs 1, 2 vs 3, ..., 8 vs 9. Each task trains,
is pruned to an equal share of the network, fine-tunes, and is frozen. The
script prints every task's test accuracy right after it was learned and
after all five, then who owns the network.

Run: python examples/digits.py [--out DIR]
"""

import argparse
import pathlib
import sys
import time

import keras
import numpy as np

import packnet_tf as pn
from packnet_tf import layers
from packnet_tf.data import digit_tasks

NUM_TASKS = 5


def build_trunk():
    """A small CNN whose weights the five tasks share."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.PackedConv2D(32, 3, padding="same", name="conv1"),
            layers.TaskBatchNormalization(momentum=0.9, name="bn1"),
            keras.layers.ReLU(),
            layers.PackedConv2D(32, 3, padding="same", name="conv2"),
            layers.TaskBatchNormalization(momentum=0.9, name="bn2"),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            layers.PackedDense(64, activation="relu", name="fc"),
        ],
        name="digits_trunk",
    )


def logits(model, task, x):
    model.use_task(task)
    return keras.ops.convert_to_numpy(model(x, training=False))


def accuracy(model, task, data):
    x, y = data
    return float(np.mean(np.argmax(logits(model, task, x), axis=-1) == y))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/digits",
                        help="folder for the trained model (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    tasks = digit_tasks()
    model = pn.PackNetModel(build_trunk(), max_tasks=NUM_TASKS)
    right_after, outputs_when_done = {}, {}
    start = time.perf_counter()
    for index, (name, train, test) in enumerate(tasks):
        tasks_left = NUM_TASKS - index - 1
        # An equal share for every planned task; the last one is not pruned.
        fraction = tasks_left / (tasks_left + 1)
        pn.train_task(
            model, name, train, num_classes=2, epochs=args.epochs,
            prune_fraction=fraction, finetune_epochs=args.finetune_epochs,
            learning_rate=1e-3, batch_size=32, verbose=0,
        )
        right_after[name] = accuracy(model, name, test)
        outputs_when_done[name] = logits(model, name, test[0])
        print(f"task {index + 1}/{NUM_TASKS} {name}: pruned {fraction:.0%}, "
              f"test accuracy {right_after[name]:.3f}")
    seconds = time.perf_counter() - start

    print(f"\n{'task':<14}{'after learning':>16}{'after all tasks':>17}"
          f"{'outputs changed':>17}")
    changed_any = False
    for name, _, test in tasks:
        final = accuracy(model, name, test)
        changed = not np.array_equal(logits(model, name, test[0]),
                                     outputs_when_done[name])
        changed_any |= changed
        print(f"{name:<14}{right_after[name]:>16.3f}{final:>17.3f}"
              f"{str(changed):>17}")
    print(f"\nWho owns the network:\n{model.capacity()}")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "digits.keras")
    print(f"\nTrained {NUM_TASKS} tasks in {seconds:.1f} s; model saved to "
          f"{out / 'digits.keras'}")
    return 1 if changed_any else 0


if __name__ == "__main__":
    sys.exit(main())
