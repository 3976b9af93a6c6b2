"""How PackNet's costs grow with the network: step time, pruning, memory.

For the split-cifar10-5 network at width x1, x2, x4 and for MobileNetV2
(96x96x3, alpha 1.0, `weights=None`, converted with `packnet_tf.convert.converter`),
side by side in one process:

- seconds per training step (batch 64) of a `PackNetModel` training its
  second task (task 1 pruned to half and frozen) against the same
  architecture in plain Keras, the two taking turns step by step
  (`common.interleaved_step_seconds`); the median and spread of the
  per-round ratios;
- seconds per `model.prune(0.5)` (median of three real prunes: tasks 1, 2
  and 3 of the model);
- the owner masks' bytes against the kernels' bytes, and the per-task
  slots (biases, batch norm) that grow with `max_tasks`;
- the training state's bytes, PackNet against plain Keras, counted from
  the variables that exist once both have stepped: weights (PackNet's
  include owners, every task's slots and heads, and free_init's released
  copy) and optimizer slots; plus what PackNet's step holds on top,
  counted from its design (`packnet_tf.core.masked_training`), not measured:
  one bool mask and one copy per masked variable. The peak is the state
  plus the step's temporaries.

Inputs are real CIFAR-10 training images from ../shared/data (resized
bilinearly to 96x96 for MobileNetV2). Not a test: run it by hand.

    PYTHONPATH=. python benchmarks/scaling.py [--rounds 8] [--steps 8]
"""

import argparse
import gc
import time

import keras
import numpy as np
import tensorflow as tf
from common import (CIFAR10_ZIP, SPLIT_CIFAR10_5, as_arrays, batch_stepper,
                    cifar_cnn_layers, command, decoded_split,
                    interleaved_step_seconds, machine, summary, write_json)

import packnet_tf as pn
from packnet_tf.convert.converter import convert

MAX_TASKS = 5
PRUNE_FRACTION = 0.5
MOBILENET_SHAPE = (96, 96, 3)
NETWORKS = ("cnn-x1", "cnn-x2", "cnn-x4", "mobilenetv2-96")


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def build(network):
    """`(plain keras model, PackNet trunk, input shape)` of one network."""
    if network.startswith("cnn-x"):
        width = int(network[len("cnn-x"):])
        shape = (32, 32, 3)
        plain = keras.Sequential(
            [keras.Input(shape)] + cifar_cnn_layers(keras.layers, width)
            + [keras.layers.Dense(2)])
        trunk = keras.Sequential(
            [keras.Input(shape)]
            + cifar_cnn_layers(keras.layers, width, packed=True))
        return plain, pn.PackNetModel(trunk, max_tasks=MAX_TASKS), shape
    # `classifier_activation=None`: logits, like the PackNet head.
    plain = keras.applications.MobileNetV2(
        input_shape=MOBILENET_SHAPE, weights=None, classes=2,
        classifier_activation=None)
    # The classifier is cut off; the trunk ends in the pooled features.
    return plain, convert(plain, max_tasks=MAX_TASKS), MOBILENET_SHAPE


def timed_prune(model):
    start = time.perf_counter()
    model.prune(PRUNE_FRACTION)
    return time.perf_counter() - start


def nbytes(variable):
    return int(np.prod(variable.shape)) * tf.as_dtype(variable.dtype).size


def memory(model):
    """Bytes of packed kernels, their owners, and per-task slots."""
    kernels = owners = slots = 0
    for layer in model.trunk.layers:
        for _, kernel, owner in getattr(layer, "packed_kernels", list)():
            kernels += nbytes(kernel)
            owners += nbytes(owner)
        for variable in getattr(layer, "per_task_variables", list)():
            slots += nbytes(variable)
    return {"kernel_bytes": kernels, "owner_bytes": owners,
            "per_task_slot_bytes": slots}


def training_state(plain, packnet):
    """Bytes each model holds while training, and PackNet's step temporaries.

    Args:
        plain: the plain Keras model, after stepping.
        packnet: the PackNetModel, after stepping on its task.

    Returns:
        A dict of byte counts (see the module docstring).
    """
    def total(variables):
        return sum(nbytes(v) for v in variables)

    pairs = packnet._train_masks(packnet.active_task.task_id)
    masked = [v for v, m in pairs if m is not None]
    masks = sum(int(np.prod(v.shape)) for v in masked)  # bool: 1 byte
    copies = total(masked)
    state = total(packnet.weights) + total(packnet.optimizer.variables)
    plain_state = total(plain.weights) + total(plain.optimizer.variables)
    return {
        "plain_state_bytes": plain_state,
        "packnet_state_bytes": state,
        "step_mask_bytes": masks,
        "step_copy_bytes": copies,
        "packnet_peak_bytes": state + masks + copies,
    }


def measure(network, images, labels, args):
    """Step times, prune times and memory of one network."""
    keras.utils.set_random_seed(0)
    plain, packnet, shape = build(network)
    x = images if shape == images.shape[1:] else tf.image.resize(
        images, shape[:2]).numpy()
    plain.compile(keras.optimizers.Adam(1e-3), _loss())
    prunes = []
    packnet.add_task("t1", num_classes=2)
    prunes.append(timed_prune(packnet))
    packnet.end_task(recalibrate=False)  # timing only: no statistics
    packnet.add_task("t2", num_classes=2)
    packnet.compile(keras.optimizers.Adam(1e-3), _loss())
    seconds = interleaved_step_seconds(
        {"keras": batch_stepper(plain, x, labels, args.batch),
         "packnet": batch_stepper(packnet, x, labels, args.batch)},
        args.rounds, args.steps)
    state = training_state(plain, packnet)
    prunes.append(timed_prune(packnet))
    packnet.end_task(recalibrate=False)  # timing only: no statistics
    packnet.add_task("t3", num_classes=2)
    prunes.append(timed_prune(packnet))
    row = {
        "params": int(plain.count_params()),
        "packed_weights": int(packnet.capacity().total.sum()),
        "seconds_per_step": {n: summary(v) for n, v in seconds.items()},
        "ratio_vs_keras": summary(np.divide(seconds["packnet"],
                                            seconds["keras"])),
        "prune_seconds": summary(prunes),
        **memory(packnet),
        "plain_weight_bytes": sum(nbytes(v) for v in plain.weights),
        **state,
    }
    del plain, packnet
    keras.backend.clear_session()
    gc.collect()
    return row


def print_table(rows):
    print(f"\n{'network':<16}{'params':>10}{'keras ms':>10}{'packnet ms':>11}"
          f"{'ratio':>7}{'(min-max)':>12}{'prune s':>9}")
    for name, r in rows.items():
        s, q = r["seconds_per_step"], r["ratio_vs_keras"]
        print(f"{name:<16}{r['params']:>10,}"
              f"{s['keras']['median'] * 1e3:>10.1f}"
              f"{s['packnet']['median'] * 1e3:>11.1f}{q['median']:>6.2f}x"
              f"{q['min']:>6.2f}-{q['max']:<5.2f}"
              f"{r['prune_seconds']['median']:>9.3f}")
    print(f"\n{'network':<16}{'kernels MB':>11}{'owners MB':>10}"
          f"{'owners/kernels':>15}{'task slots MB':>14}{'plain MB':>10}")
    for name, r in rows.items():
        print(f"{name:<16}{r['kernel_bytes'] / 1e6:>11.2f}"
              f"{r['owner_bytes'] / 1e6:>10.2f}"
              f"{r['owner_bytes'] / r['kernel_bytes']:>15.2f}"
              f"{r['per_task_slot_bytes'] / 1e6:>14.3f}"
              f"{r['plain_weight_bytes'] / 1e6:>10.2f}")
    print(f"\n{'network':<16}{'keras state MB':>15}{'packnet MB':>11}"
          f"{'step temps MB':>14}{'packnet peak MB':>16}")
    for name, r in rows.items():
        temps = r["step_mask_bytes"] + r["step_copy_bytes"]
        print(f"{name:<16}{r['plain_state_bytes'] / 1e6:>15.2f}"
              f"{r['packnet_state_bytes'] / 1e6:>11.2f}"
              f"{temps / 1e6:>14.2f}"
              f"{r['packnet_peak_bytes'] / 1e6:>16.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8,
                        help="steps of each model per round")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--networks", default=",".join(NETWORKS))
    parser.add_argument("--data", default=str(CIFAR10_ZIP))
    args = parser.parse_args(argv)
    networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    unknown = sorted(set(networks) - set(NETWORKS))
    if unknown or not networks:
        parser.error(f"--networks: expected some of {', '.join(NETWORKS)}. "
                     f"Received: {args.networks!r}")

    started = time.perf_counter()
    cached, _ = decoded_split(args.data, SPLIT_CIFAR10_5[0], "train",
                              limit=args.steps * args.batch)
    images, labels = as_arrays(cached)
    rows = {}
    for network in networks:
        start = time.perf_counter()
        rows[network] = measure(network, images, labels, args)
        step = {n: s["median"] * 1e3 for n, s in
                rows[network]["seconds_per_step"].items()}
        print(f"{network}: {step['packnet']:.1f} ms/step PackNet, "
              f"{step['keras']:.1f} ms/step Keras "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    print_table(rows)
    path = write_json("scaling.json", {
        "workload": f"training step at batch {args.batch} on task 2 of "
                    f"{MAX_TASKS} (task 1 pruned {PRUNE_FRACTION:.0%}, "
                    "frozen); prune(0.5) of tasks 1-3",
        "networks": rows, "rounds": args.rounds,
        "steps_per_round": args.steps, "max_tasks": MAX_TASKS,
        "machine": machine(), "command": command()})
    print(f"machine: {machine()}\ntotal {time.perf_counter() - started:.0f} s;"
          f" wrote {path}")


if __name__ == "__main__":
    main()
