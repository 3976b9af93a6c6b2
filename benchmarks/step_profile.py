"""Where the masked training step's time goes: an ablation, side by side.

PackNet's training step adds work to plain Keras: the gradients are masked to
the weights the task owns, and after the optimizer step every frozen entry is
written back from a copy taken just before (`packnet_tf.core.masked_training`).
As shipped, mask, copy, optimizer step and write-back run as one XLA
function (`PackNetModel(fused_update=True)`), the forward and backward
passes uncompiled. The forward pass uses the raw kernels (free weights hold
0, so masking them would change nothing); earlier versions masked every
kernel in the forward pass too. This script times, in one process and step
by step in turn (`common.interleaved_step_seconds`), on real CIFAR-10
images:

- `keras`: the plain Keras 3 model;
- `packnet`: a `PackNetModel` training task 2 (task 1 pruned to half and
  frozen), as shipped (the fused update);
- `uncompiled`: the same update uncompiled (`fused_update=False`, as
  shipped before issue 14's change); the variants below all start from it:
- `snapshot`: a candidate design (issue 14): the values written back come
  from one persistent snapshot per trained variable (its entries outside
  the task's mask, 0 inside), taken once before training, instead of a
  copy of every trained variable in every step;
- `xla-restore`: a candidate: only the write-back compiled by XLA, one
  cluster of select-and-store for every kernel;
- `forward-masks`: masking every kernel in the forward pass
  (`ownership.visible_mask` on the uint8 owners, as before this profile's
  second change);
- `int32-masks`: the same with the owners cast to int32 before masking (as
  before its first change);
- `no-restore`: without the write-back (UNSAFE: an optimizer may then move
  frozen weights; for measurement only);
- `keras-xla`, `packnet-xla`: plain Keras and PackNet with the whole step
  compiled, `jit_compile=True` (what Keras' default "auto" picks wherever
  a GPU is present; on a CPU-only machine it picks no XLA); their ratio is
  taken against `keras-xla`;

for two networks: the split-cifar10-5 CNN (conv compute dominates) and a
dense-heavy MLP on the flattened images (3072-2048-2048-1024, where
elementwise work on the kernels weighs most). The variants replace methods
on their own instances only. Not a test: run it by hand.

    PYTHONPATH=. python benchmarks/step_profile.py [--rounds 8] [--steps 20] [--networks mlp]
"""

import argparse
import time
import types

import keras
import numpy as np
import tensorflow as tf
from common import (CIFAR10_ZIP, SPLIT_CIFAR10_5, STEP_NETWORKS, as_arrays,
                    batch_stepper, bench_layers, command, decoded_split,
                    interleaved_step_seconds, machine, summary, write_json)
from keras import ops

import packnet_tf as pn
from packnet_tf.core.trunk import packed_layers
from packnet_tf.layers import ownership

VARIANTS = ("keras", "packnet", "uncompiled", "snapshot", "xla-restore",
            "forward-masks", "int32-masks", "no-restore", "keras-xla",
            "packnet-xla")
#: The variants built on the uncompiled update (`fused_update=False`).
UNCOMPILED = ("uncompiled", "snapshot", "xla-restore", "forward-masks",
              "int32-masks", "no-restore")


def _compile(model, jit_compile):
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_compile)
    return model


def _masked_visible(self, name):
    """`PackedLayer.visible` masking in every pass, training included."""
    kernel = getattr(self, name)
    mask = ownership.visible_mask(getattr(self, f"{name}_owner"),
                                  self.active_task)
    return ops.where(mask, kernel, ops.zeros_like(kernel))


def _int32_visible(self, name):
    """The same with the owners cast to int32 every step, as it once was."""
    kernel = getattr(self, name)
    owner = tf.cast(getattr(self, f"{name}_owner"), "int32")
    task = tf.cast(self.active_task, "int32")
    mask = tf.logical_and(owner > 0, owner <= task)
    return ops.where(mask, kernel, ops.zeros_like(kernel))


def _snapshot(model):
    """Snapshot variables of the active task's masked variables, and a
    `_frozen_values` that returns them (traced once, read every step)."""
    snapshots = []
    for variable, mask in model._train_masks(model.active_task.task_id):
        snapshots.append(None if mask is None else tf.Variable(
            tf.where(mask, tf.zeros_like(variable.value), variable.value),
            trainable=False))
    return lambda pairs: snapshots


@tf.function(jit_compile=True)
def _xla_write_back(variables, masks, backups):
    for variable, mask, backup in zip(variables, masks, backups):
        variable.assign(tf.where(mask, variable, backup))


def _xla_restore(pairs, backups):
    """`_restore` as one XLA-compiled function over every masked kernel."""
    kept = [(v.value, m, b) for (v, m), b in zip(pairs, backups)
            if m is not None]  # the tf.Variables behind the Keras ones
    _xla_write_back(*[list(column) for column in zip(*kept)])


def build(network, variant):
    """One model of `variant`, ready to train (task 2 for PackNet)."""
    keras.utils.set_random_seed(0)
    inputs = [keras.Input((32, 32, 3))]
    xla = variant.endswith("-xla")
    if variant.startswith("keras"):
        return _compile(keras.Sequential(
            inputs + bench_layers(network, keras.layers)
            + [keras.layers.Dense(2)]), xla)
    model = pn.PackNetModel(
        keras.Sequential(inputs + bench_layers(network, keras.layers, packed=True)),
        max_tasks=5, fused_update=variant not in UNCOMPILED)
    model.add_task("t1", num_classes=2)
    model.prune(0.5)
    model.end_task(recalibrate=False)  # timing only: no data
    model.add_task("t2", num_classes=2)
    if variant == "no-restore":
        model._restore = lambda pairs, backups: None
    if variant == "xla-restore":
        model._restore = _xla_restore
    if variant == "snapshot":
        for layer in packed_layers(model.trunk):
            layer.zero_free()  # as `fit` does before training
        model._frozen_values = _snapshot(model)
    patch = {"forward-masks": _masked_visible,
             "int32-masks": _int32_visible}.get(variant)
    for layer in packed_layers(model.trunk):
        if patch is not None:
            layer.visible = types.MethodType(patch, layer)
    return _compile(model, xla)


def measure(network, x, y, args):
    steppers = {v: batch_stepper(build(network, v), x, y, args.batch)
                for v in VARIANTS}
    seconds = interleaved_step_seconds(steppers, args.rounds, args.steps)
    def base(v):
        return np.array(seconds["keras-xla" if v.endswith("-xla")
                                else "keras"])

    return {v: {"seconds_per_step": summary(seconds[v]),
                "ratio_vs_keras": summary(np.array(seconds[v]) / base(v))}
            for v in VARIANTS}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20,
                        help="steps of each variant per round")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--data", default=str(CIFAR10_ZIP))
    parser.add_argument("--networks", default=",".join(STEP_NETWORKS),
                        help="comma-separated, of: " + ", ".join(STEP_NETWORKS))
    args = parser.parse_args(argv)
    networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    if not networks or set(networks) - set(STEP_NETWORKS):
        parser.error(f"--networks: expected some of {', '.join(STEP_NETWORKS)}."
                     f" Received: {args.networks!r}")

    started = time.perf_counter()
    cached, _ = decoded_split(args.data, SPLIT_CIFAR10_5[0], "train",
                              limit=args.steps * args.batch)
    x, y = as_arrays(cached)
    rows = {n: measure(n, x, y, args) for n in networks}
    print(f"\n{'network':<8}{'variant':<18}{'ms/step':>9}"
          f"{'ratio vs keras':>16}{'(min-max)':>12}")
    print("(the -xla variants against keras-xla)")
    for network, row in rows.items():
        for variant, r in row.items():
            q = r["ratio_vs_keras"]
            print(f"{network:<8}{variant:<18}"
                  f"{r['seconds_per_step']['median'] * 1e3:>9.1f}"
                  f"{q['median']:>15.2f}x{q['min']:>6.2f}-{q['max']:<5.2f}")
    name = ("step_profile.json" if networks == list(STEP_NETWORKS)
            else f"step_profile_{'_'.join(networks)}.json")
    path = write_json(name, {
        "workload": f"training step at batch {args.batch}, task 2 of 5 "
                    "(task 1 pruned 50%, frozen), real CIFAR-10 images",
        "networks": rows, "rounds": args.rounds,
        "steps_per_round": args.steps, "machine": machine(),
        "command": command()})
    print(f"machine: {machine()}\ntotal {time.perf_counter() - started:.0f} s;"
          f" wrote {path}")


if __name__ == "__main__":
    main()
