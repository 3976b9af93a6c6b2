"""Helpers the benchmarks share: the reference network, machine facts, JSON."""

import json
import os
import pathlib
import platform
import sys
import tempfile

import numpy as np

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def machine():
    """A short description of this machine for the results."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()}"


def command():
    """The command line that produced the results."""
    return " ".join(["python"] + sys.argv)


def write_json(name, payload):
    """Writes `results/<name>` atomically and returns its path."""
    path = RESULTS / name  # may name a subfolder: "variants/x.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp makes it private; results are for all
    os.replace(tmp, path)
    return path


def parse_seeds(text, parser):
    """`--seeds 0,1,2` as a list of ints; `parser.error` on anything else
    (not ints, repeats, negatives, none)."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        parser.error(f"expected distinct seeds >= 0 separated by commas, "
                     f"e.g. 0,1,2. Received: {text!r}")
    return seeds


def summary(values):
    """Median, min and max of `values`."""
    values = np.asarray(values, dtype=float)
    return {"median": float(np.median(values)), "min": float(values.min()),
            "max": float(values.max())}


def batch_stepper(model, x, y, batch):
    """A zero-argument callable: one `train_on_batch` of `model`.

    Cycles through the `len(x) // batch` batches of `(x, y)`, converted to
    tensors up front. `train_on_batch` returns NumPy logs, so a call ends
    when its step has run.
    """
    import tensorflow as tf

    count = len(x) // batch
    batches = [(tf.constant(x[i * batch:(i + 1) * batch]),
                tf.constant(y[i * batch:(i + 1) * batch]))
               for i in range(count)]
    position = [0]

    def step():
        xb, yb = batches[position[0] % count]
        position[0] += 1
        model.train_on_batch(xb, yb)

    return step


def interleaved_step_seconds(steppers, rounds, steps, warmup=3):
    """Seconds per step of several models, measured step by step in turn.

    This machine switches between a fast and a slow mode (2x apart; see
    ../shared/NOTES.md) every few seconds. Timing whole runs of one model
    after another lets a switch fall between them; here every step of every
    model is timed on its own, the models taking turns step by step (the
    one that goes first rotates), so each round's models ran in the same
    seconds, through the same switches.

    Args:
        steppers: `{name: callable}`, each running one synchronous step.
        rounds: number of rounds.
        steps: steps of each model per round.
        warmup: untimed steps of each model first (tracing).

    Returns:
        `{name: [mean seconds per step of each round]}`.
    """
    import time

    names = list(steppers)
    for name in names:
        for _ in range(warmup):
            steppers[name]()
    seconds = {name: [] for name in names}
    for r in range(rounds):
        total = dict.fromkeys(names, 0.0)
        for s in range(steps):
            k = (r * steps + s) % len(names)
            for name in names[k:] + names[:k]:
                start = time.perf_counter()
                steppers[name]()
                total[name] += time.perf_counter() - start
        for name in names:
            seconds[name].append(total[name] / steps)
    return seconds


def cifar_cnn_layers(module, width=1, packed=False):
    """The split-cifar10-5 trunk (shared/data/README.md) as a layer list.

    Args:
        module: `keras.layers` (Keras 3) or `tf_keras.layers`.
        width: channel multiplier (1 is the reference network).
        packed: use packnet_tf's packed layers instead of `module`'s.
    """
    if packed:
        from packnet_tf import layers as packed_layers

        conv, dense = packed_layers.PackedConv2D, packed_layers.PackedDense
    else:
        conv, dense = module.Conv2D, module.Dense
    w = width
    return [
        conv(32 * w, 3, padding="same", activation="relu"),
        conv(32 * w, 3, padding="same", activation="relu"),
        module.MaxPooling2D(),
        conv(64 * w, 3, padding="same", activation="relu"),
        conv(64 * w, 3, padding="same", activation="relu"),
        module.MaxPooling2D(),
        conv(128 * w, 3, padding="same", activation="relu"),
        module.MaxPooling2D(),
        module.Flatten(),
        dense(256 * w, activation="relu"),
    ]


#: Networks of the step-time benchmarks: the split-cifar10-5 CNN, where conv
#: compute dominates, and a dense-heavy MLP on the flattened 32x32x3 images
#: (3072-2048-2048-1024), where elementwise work on the kernels weighs most.
STEP_NETWORKS = ("cnn", "mlp")


def bench_layers(network, module, packed=False):
    """The trunk of one of `STEP_NETWORKS` as a layer list.

    Args:
        network: "cnn" or "mlp".
        module: `keras.layers` (Keras 3) or `tf_keras.layers`.
        packed: use packnet_tf's packed layers instead of `module`'s.
    """
    if network == "cnn":
        return cifar_cnn_layers(module, packed=packed)
    if packed:
        from packnet_tf import layers as packed_layers

        dense = packed_layers.PackedDense
    else:
        dense = module.Dense
    return [module.Flatten(), dense(2048, activation="relu"),
            dense(2048, activation="relu"), dense(1024, activation="relu")]


# -- real data: split-cifar10-5 (shared/data/README.md) ----------------------

#: ../shared/data/cifar10_jpg.zip, relative to the repository root.
CIFAR10_ZIP = (pathlib.Path(__file__).resolve().parent.parent.parent
               / "shared" / "data" / "cifar10_jpg.zip")

#: The five tasks of split-cifar10-5, in order.
SPLIT_CIFAR10_5 = (("airplane", "automobile"), ("bird", "cat"),
                   ("deer", "dog"), ("frog", "horse"), ("ship", "truck"))

#: Images decoded per pipeline batch (decoding only; not the training batch).
_DECODE_BATCH = 256


def accurate_jpeg_source(path, classes):
    """An image-folder source that decodes JPEGs as PIL does.

    `tf.io.decode_image` uses libjpeg's fast integer DCT; PIL (and so
    torchvision, and Avalanche's benchmark) the accurate one, which
    `tf.io.decode_jpeg(dct_method="INTEGER_ACCURATE")` matches exactly on
    the CIFAR-10 zip (benchmarks/jpeg_decoders.py). For measuring that
    difference only.
    """
    import tensorflow as tf

    from packnet_tf import data

    class AccurateJpegSource(data.ImageFolderSource):
        def decode(self, x, channels):
            return tf.io.decode_jpeg(x, channels=channels,
                                     dct_method="INTEGER_ACCURATE")

    return AccurateJpegSource(path, classes=list(classes))


def decoded_split(path, classes, split, limit=None, seed=0,
                  accurate_jpeg=False):
    """One split of a class subset, decoded once and held in memory.

    Reads through packnet_tf's own image-folder source (class subset
    relabelled 0..k-1 in the given order) and pipeline, then caches the
    decoded uint8 images with `tf.data`'s in-memory `cache()`. The cache is
    filled here, so later epochs, and every method of a benchmark, read
    decoded images and never the JPEGs again. uint8 holds the decoded
    pixels exactly and takes a quarter of float32's memory.

    Args:
        path: an image folder or zip of `<split>/<label>/*`.
        classes: the class names, in the order of their labels.
        split: the split to read.
        limit: read only this many images, a seeded random subset (for
            quick runs), or None for all.
        seed: the seed of that subset.
        accurate_jpeg: decode as PIL does (`accurate_jpeg_source`).

    Returns:
        `(dataset, count)`: a cached `tf.data.Dataset` of single
        `(uint8 image, int32 label)` examples, and its length.
    """
    import tensorflow as tf

    from packnet_tf import data

    source = (accurate_jpeg_source(path, classes) if accurate_jpeg
              else data.ImageFolderSource(path, classes=list(classes)))
    # "none": 0-255 floats; the input size equals the images' size, so the
    # pipeline's resize leaves every pixel as decoded.
    dataset = data.batches(source, split, (32, 32, 3),
                           batch_size=_DECODE_BATCH, preprocess="none",
                           shuffle=limit is not None, seed=seed).unbatch()
    if limit is not None:
        dataset = dataset.take(limit)
    dataset = dataset.map(lambda x, y: (tf.cast(x, tf.uint8), y)).cache()
    count = int(dataset.reduce(0, lambda n, _: n + 1))  # fills the cache
    # A known length lets Keras count steps from the first epoch on.
    return dataset.apply(tf.data.experimental.assert_cardinality(count)), count


def to_unit(x, y):
    """uint8 pixels -> float32 in [0, 1], as the workload defines."""
    import tensorflow as tf

    return tf.cast(x, tf.float32) / 255.0, y


def untuned(dataset):
    """`dataset` with tf.data autotuning off (parallelism stays as given).

    With autotuning on, the first step of an epoch of Keras' `fit` waited
    up to about 4 s on this 2-core machine in one sitting and not at all in
    another (epoch_stall.py); autotuning off never waited. PyTorch's
    loader, the peer's, has no such wait.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def training_batches(cached, count, batch_size, seed=0, autotune=False):
    """Shuffled (seeded, reshuffled every epoch) batches of a cached split.

    Every call gives the same sequence of epoch orders, so methods compared
    in one run see the same batches. Two parallel calls and two batches
    prefetched, tf.data autotuning off (`untuned`) unless `autotune`, which
    prefetches `tf.data.AUTOTUNE` batches with autotuning on.
    """
    import tensorflow as tf

    dataset = (cached.shuffle(count, seed=seed, reshuffle_each_iteration=True)
               .batch(batch_size).map(to_unit, num_parallel_calls=2))
    if autotune:
        return dataset.prefetch(tf.data.AUTOTUNE)
    return untuned(dataset.prefetch(2))


def as_arrays(cached):
    """A cached split as NumPy `(float32 x in [0, 1], int32 y)` arrays."""
    import tensorflow as tf

    x, y = next(iter(cached.batch(1 << 20).map(to_unit)
                     .prefetch(tf.data.AUTOTUNE)))
    return x.numpy(), y.numpy()
