"""The six methods of split_cifar10_5.py, each on the same network and data.

Every `run_*` function takes the decoded tasks and the run's settings and
returns `(result, readies)`: `result` holds the accuracy matrix
`R[i][j]` (test accuracy on task j after training task i; joint training
has only a final row) and timings; `readies` gives, per task, a function
that readies the model for that task's inference (None where the model's
inputs differ, as joint's do). A seed sets the initial weights and the
batch order of every method alike.
"""

import time

import keras
import numpy as np
import tensorflow as tf
from common import cifar_cnn_layers, to_unit, training_batches, untuned

import packnet_tf as pn
from packnet_tf.data import augmentation
from packnet_tf.evaluation import baselines
from packnet_tf.layers import ownership

EPOCHS, FINETUNE_EPOCHS, BASELINE_EPOCHS = 4, 2, 6
LEARNING_RATE, FINETUNE_LEARNING_RATE = 1e-3, 1e-4
BATCH, INFERENCE_BATCH, PRUNE_FRACTION = 64, 256, 0.5


class EpochTimer(keras.callbacks.Callback):
    """Records every epoch's wall time."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


class PruneTies(keras.callbacks.Callback):
    """Counts magnitude ties at each task's pruning threshold.

    At the end of a task's first `fit` (its train phase, right before
    one-shot pruning) it records, over the kernels, how many of the task's
    weights are exactly 0 and how many share the magnitude of the last
    weight pruning would free (ties the library breaks by position).
    """

    def __init__(self, fraction):
        super().__init__()
        self.fraction, self.counts, self._seen = fraction, {}, set()

    def on_train_end(self, logs=None):
        task = self.model.active_task
        if task.name in self._seen or not isinstance(self.fraction, float):
            return
        self._seen.add(task.name)
        zeros = tied = owned_total = 0
        for layer in self.model.trunk.layers:
            for _, kernel, owner in getattr(layer, "packed_kernels",
                                            list)():
                mine = np.abs(kernel.numpy()[owner.numpy() == task.task_id])
                k = ownership.count_to_free(mine.size, self.fraction)
                owned_total += mine.size
                zeros += int(np.sum(mine == 0))
                if 0 < k < mine.size:
                    threshold = np.sort(mine)[k - 1]
                    # Weights at the threshold beyond the one that must go.
                    tied += int(np.sum(mine == threshold)) - 1
        self.counts[task.name] = {"owned": owned_total, "zeros": zeros,
                                  "tied_at_threshold": tied}


class FirstTaskBiases(keras.callbacks.Callback):
    """Emulates Avalanche's biases: trained by task 1, then frozen.

    The library gives every task its own biases. Avalanche's PackNet trains
    one bias per layer on the first task and freezes it. For tasks 2 and
    later this callback sets the task's bias row back to task 1's after
    every step (the task's own row only, so no other task is touched), so
    the task computes with task 1's biases throughout.
    """

    def on_train_batch_end(self, batch, logs=None):
        task_id = self.model.active_task.task_id
        if task_id == 1:
            return
        for layer in self.model.trunk.layers:
            for name in getattr(layer, "_per_task_names", ()):
                if name != "bias":
                    continue
                variable = getattr(layer, name)
                rows = variable.numpy()
                rows[task_id - 1] = rows[0]
                variable.assign(rows)


def predict(model, task):
    return model.predict(task["x_test"], batch_size=INFERENCE_BATCH,
                         verbose=0)


def accuracy(logits, task):
    return float(np.mean(np.argmax(logits, -1) == task["y_test"]))


def _batches(task, seed, augment=None):
    # Held-out examples (`holdout_split`) never train.
    cached, count = (holdout_split(task, held_out=False)
                     if task.get("holdout") else (task["train"], task["count"]))
    batches = training_batches(cached, count, BATCH, seed=seed)
    layers = augmentation.augmenter(augment, seed)
    if layers is None:
        return batches
    return batches.map(lambda x, y: (layers(x, training=True), y))


def holdout_split(task, held_out):
    """Every `task["holdout"]`-th training example (by position in the
    cached split), or the others: validation data for
    `prune_fraction="auto"` that is neither trained on nor the test set.

    Returns:
        `(cached dataset, count)`.
    """
    every = task["holdout"]
    keep = (lambda i, _: i % every == 0) if held_out else (
        lambda i, _: i % every != 0)
    dataset = task["train"].enumerate().filter(keep).map(lambda _, e: e)
    held = -(-task["count"] // every)
    return dataset, held if held_out else task["count"] - held


def _validation(task):
    dataset, _ = holdout_split(task, held_out=True)
    return dataset.batch(500).map(to_unit).cache()


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def result(matrix, train_seconds, timer):
    """A method's figures; `images_per_s` is filled in by the caller."""
    matrix = [list(row) for row in matrix]
    full = len(matrix) > 1 or len(matrix[0]) == 1
    after = ([matrix[i][i] for i in range(len(matrix))] if full
             else None)
    final = matrix[-1]
    return {
        "accuracy_matrix": matrix if full else None,
        "acc_after_learning": after,
        "final_acc": final,
        "mean_final_acc": float(np.mean(final)),
        "mean_forgetting": (float(np.mean(np.subtract(after, final)))
                            if after else None),
        "train_seconds": train_seconds,
        "seconds_per_epoch": float(np.median(timer.seconds)),
        "images_per_s": None,
    }


def _row(evaluate, done, count):
    """One row of the matrix: tasks 0..done evaluated, None after."""
    return [evaluate(j) if j <= done else None for j in range(count)]


def run_packnet(tasks, settings, seed):
    """PackNet under `settings` (the workload's recipe and its variants).

    Settings: `prune_fraction` (a number or "equal"), `no_prune_last`,
    `free_init` (`PackNetModel(free_init=...)`), `adam_epsilon`, `gradual`
    (PolynomialDecay timings while fine-tuning, or None), `augment` (an
    augmentation spec, or None) and, with `prune_fraction="auto"`,
    `auto_holdout` (every k-th training example is held out as its
    validation data, and not trained on) and `auto_tolerance`.
    """
    keras.utils.set_random_seed(seed)
    trunk = keras.Sequential([keras.Input((32, 32, 3))]
                             + cifar_cnn_layers(keras.layers, packed=True))
    model = pn.PackNetModel(trunk, max_tasks=len(tasks),
                            free_init=settings.get("free_init", "zero"))
    optimizer = keras.optimizers.Adam(
        epsilon=settings.get("adam_epsilon", 1e-7))
    timer, matrix, logits_after, train_seconds = EpochTimer(), [], [], 0.0
    ties = PruneTies(settings["prune_fraction"])

    def evaluate(j):
        model.use_task(tasks[j]["name"])
        logits = predict(model, tasks[j])
        if j < len(logits_after) and not np.array_equal(
                logits, logits_after[j]):
            # PackNet's promise, checked on real data: earlier tasks'
            # outputs are bit-identical after every later task.
            raise AssertionError(
                f"PackNet changed task {tasks[j]['name']!r}'s logits by up "
                f"to {np.max(np.abs(logits - logits_after[j]))}.")
        return accuracy(logits, tasks[j])

    auto = settings["prune_fraction"] == "auto"
    choices = []
    for i, task in enumerate(tasks):
        last = i == len(tasks) - 1
        unpruned_last = last and settings["no_prune_last"]
        if auto:
            task = {**task, "holdout": settings["auto_holdout"]}
        start = time.perf_counter()
        trained = pn.train_task(
            model, task["name"],
            _batches(task, seed, settings.get("augment")), num_classes=2,
            # An unpruned task is not fine-tuned: it trains as long as the
            # baselines instead.
            epochs=BASELINE_EPOCHS if unpruned_last else EPOCHS,
            prune_fraction=(None if unpruned_last
                            else settings["prune_fraction"]),
            num_tasks=len(tasks), gradual=settings.get("gradual"),
            finetune_epochs=FINETUNE_EPOCHS, optimizer=optimizer,
            learning_rate=LEARNING_RATE,
            finetune_learning_rate=FINETUNE_LEARNING_RATE,
            **({"validation_data": _validation(task),
                "auto_tolerance": settings["auto_tolerance"]}
               if auto and not unpruned_last else {}),
            callbacks=[timer, ties] + (
                [FirstTaskBiases()] if settings.get("first_task_biases")
                else []), verbose=0)
        train_seconds += time.perf_counter() - start
        if trained.auto is not None:
            choices.append({"fraction": trained.auto.fraction,
                            "unpruned_accuracy":
                                trained.auto.unpruned_accuracy,
                            "trials": [list(t) for t in trained.auto.trials]})
            print(f"auto: pruned {trained.auto.fraction:.0%} "
                  f"(validation {trained.auto.unpruned_accuracy:.4f} "
                  f"unpruned; trials {trained.auto.trials})", flush=True)
        logits_after.append(predict(model, task))
        matrix.append(_row(evaluate, i, len(tasks)))
        print(f"packnet {task['name']}: {matrix[-1][i]:.4f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    drift = model.verify()
    if any(drift.values()):
        raise AssertionError(f"PackNet fingerprints moved: {drift}")

    def ready(name):
        model.use_task(name)
        return model

    print(model.capacity())
    readies = [lambda n=t["name"]: ready(n) for t in tasks]
    figures = result(matrix, train_seconds, timer)
    figures["prune_ties"] = ties.counts
    if choices:
        figures["auto"] = choices
    return figures, readies


def plain_network(trunk_only=False):
    layers = [keras.Input((32, 32, 3))] + cifar_cnn_layers(keras.layers)
    return keras.Sequential(layers + ([] if trunk_only
                                      else [keras.layers.Dense(2)]))


def compile_plain(model):
    model.compile(keras.optimizers.Adam(LEARNING_RATE), _loss(),
                  metrics=["accuracy"])


def _fit(model, task, seed, timer):
    model.fit(_batches(task, seed), epochs=BASELINE_EPOCHS,
              callbacks=[timer], shuffle=False,
              verbose=0)  # the dataset shuffles itself


def run_sequence(tasks, seed, method):
    """individual, finetune or classifier_only: one Keras model per task.

    - individual: a fresh network per task;
    - finetune: one trunk, trained on every task in turn, a head per task;
    - classifier_only: task 1 trained as PackNet trains it, less the
      pruning (4 epochs at 1e-3, then 2 at 1e-4), the trunk then frozen;
      later tasks train only their heads (6 epochs). Its trunk is asserted
      bit-identical after every later task.
    """
    keras.utils.set_random_seed(seed)
    trunk = plain_network(trunk_only=True) if method != "individual" else None
    timer, models, matrix, train_seconds = EpochTimer(), [], [], 0.0
    frozen = None
    for i, task in enumerate(tasks):
        start = time.perf_counter()
        if method == "individual":
            model = plain_network()
        elif method == "classifier_only" and i > 0:
            if frozen is None:
                frozen = [w.copy() for w in trunk.get_weights()]
            model = baselines.head_only_model(trunk, 2)
        else:
            model = keras.Sequential([trunk, keras.layers.Dense(2)])
        compile_plain(model)  # a fresh optimizer per task
        if method == "classifier_only" and i == 0:
            # One dataset for both phases, as `train_task` has it.
            data = _batches(task, seed)
            model.fit(data, epochs=EPOCHS, callbacks=[timer], verbose=0)
            model.compile(keras.optimizers.Adam(FINETUNE_LEARNING_RATE),
                          _loss(), metrics=["accuracy"])
            model.fit(data, epochs=FINETUNE_EPOCHS, callbacks=[timer],
                      verbose=0)
        else:
            _fit(model, task, seed, timer)
        train_seconds += time.perf_counter() - start
        models.append(model)
        matrix.append(_row(lambda j: accuracy(predict(models[j], tasks[j]),
                                              tasks[j]), i, len(tasks)))
        if frozen is not None and not all(
                np.array_equal(a, b)
                for a, b in zip(frozen, trunk.get_weights())):
            raise AssertionError("classifier_only moved the frozen trunk.")
        print(f"{method} {task['name']}: {matrix[-1][i]:.4f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    readies = [lambda m=m: m for m in models]
    return result(matrix, train_seconds, timer), readies


def run_lwf(tasks, seed):
    """LwF: a shared trunk, a head per task, distillation T=2, weight 1."""
    keras.utils.set_random_seed(seed)
    model = baselines.LwFModel(plain_network(trunk_only=True),
                               head_sizes=[2] * len(tasks))
    timer, matrix, train_seconds = EpochTimer(), [], 0.0

    def evaluate(j):
        model.use_task(j)
        return accuracy(predict(model, tasks[j]), tasks[j])

    for i, task in enumerate(tasks):
        start = time.perf_counter()
        model.start_task(i)
        model.compile(keras.optimizers.Adam(LEARNING_RATE), _loss(),
                      metrics=["accuracy"])
        _fit(model, task, seed, timer)
        train_seconds += time.perf_counter() - start
        matrix.append(_row(evaluate, i, len(tasks)))
        print(f"lwf {task['name']}: {matrix[-1][i]:.4f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)

    def ready(j):
        model.use_task(j)
        return model

    return result(matrix, train_seconds, timer), [
        lambda j=j: ready(j) for j in range(len(tasks))]


def run_joint(tasks, seed):
    """Joint: one multi-head network on every task's images at once."""
    keras.utils.set_random_seed(seed)
    model = baselines.joint_model(plain_network(trunk_only=True),
                                  [2] * len(tasks))
    compile_plain(model)
    parts = [task["train"].map(lambda x, y, t=t: ((x, t), y))
             for t, task in enumerate(tasks)]
    mixed = parts[0]
    for part in parts[1:]:
        mixed = mixed.concatenate(part)
    total = sum(task["count"] for task in tasks)
    batches = (mixed.shuffle(total, seed=seed, reshuffle_each_iteration=True)
               .batch(BATCH)
               .map(lambda xt, y: ((to_unit(xt[0], y)[0], xt[1]), y),
                    num_parallel_calls=2)
               .prefetch(2))
    batches = untuned(batches)
    timer, start = EpochTimer(), time.perf_counter()
    # Six epochs over all tasks: each task's images are seen as often as
    # in the sequential methods.
    model.fit(batches, epochs=BASELINE_EPOCHS, callbacks=[timer],
              verbose=0)
    train_seconds = time.perf_counter() - start
    final = []
    for t, task in enumerate(tasks):
        ids = np.full(len(task["y_test"]), t, "int32")
        logits = model.predict([task["x_test"], ids],
                               batch_size=INFERENCE_BATCH, verbose=0)
        final.append(accuracy(logits, task))
    print(f"joint: {np.round(final, 4).tolist()} ({train_seconds:.0f} s)",
          flush=True)
    return result([final], train_seconds, timer), None


#: Method name -> runner(tasks, settings, seed).
METHODS = {
    "packnet": run_packnet,
    "individual": lambda tasks, s, seed: run_sequence(tasks, seed,
                                                      "individual"),
    "finetune": lambda tasks, s, seed: run_sequence(tasks, seed,
                                                    "finetune"),
    "classifier_only": lambda tasks, s, seed: run_sequence(
        tasks, seed, "classifier_only"),
    "lwf": lambda tasks, s, seed: run_lwf(tasks, seed),
    "joint": lambda tasks, s, seed: run_joint(tasks, seed),
}
