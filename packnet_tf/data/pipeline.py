"""From a `DataSource` to the batches a network reads, the `tf.data` way.

`fit_plan` decides, before anything is read, how a source's examples reach
the network's input shape (decode, resize, add a channel axis, flatten) and
raises a `DataError` naming both shapes when they cannot. `batches` builds
the pipeline: shuffle (seeded, early: file names or encoded bytes), decode
and resize in parallel, preprocess, batch, prefetch (tf.data autotuning
off unless asked for: see `batches`).
"""

import dataclasses

import numpy as np
import tensorflow as tf

from packnet_tf.core import contract
from packnet_tf.data import augmentation
from packnet_tf.data.options import DEFAULT_BATCH_SIZE
from packnet_tf.data.source import DataError

#: Batches prefetched when tf.data autotuning is off (`batches`).
PREFETCH_BATCHES = 2
#: `preprocess` names besides the `keras.applications` module names.
PREPROCESS_MODES = ("auto", "unit", "none")


@dataclasses.dataclass(frozen=True)
class FitPlan:
    """How examples of one shape become network inputs.

    Attributes:
        input_shape: the network's input shape (no batch axis).
        decode_channels: channels to decode encoded images to, or None.
        resize: (height, width) to resize images to, or None.
        expand_channel: add a trailing channel axis (2-D grey images).
        flatten: reshape to the network's 1-D input.
        convert_color: `"rgb"` (repeat a grey channel 3 times),
            `"grayscale"` (RGB to luma) or None.
    """

    input_shape: tuple
    decode_channels: int = None
    resize: tuple = None
    expand_channel: bool = False
    flatten: bool = False
    convert_color: str = None


def _shape_str(shape):
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + (
        ",)" if len(shape) == 1 else ")")


def fit_plan(source, input_shape, resize=True):
    """Plans how `source`'s examples reach `input_shape`.

    Images (rank 3, or encoded) go into an image network (input rank 3) by
    decoding with its channel count and resizing height and width. Arrays
    of images must have the network's channels, unless the source's
    `color_mode` converts them: `"rgb"` repeats greyscale (2-D or one
    channel) examples to 3 channels, `"grayscale"` turns RGB ones into one
    channel (`tf.image.rgb_to_grayscale`). Examples whose size is known go
    into a 1-D input of the same size by flattening. Anything else must
    match exactly.

    Args:
        source: a `DataSource`.
        input_shape: the network's input shape without the batch axis.
        resize: whether images may be resized (False: sizes must match).

    Returns:
        A `FitPlan`.

    Raises:
        DataError: saying both shapes, when the examples cannot fit.
    """
    target = tuple(int(d) for d in input_shape)
    shape = tuple(source.example_shape)
    if source.encoded:
        shape = shape if len(shape) == 3 else (None, None, None)
    received = _shape_str(shape)

    def no_fit(why):
        return DataError(
            f"{source.description} yields examples of shape {received}, "
            f"which do not fit the network's input {_shape_str(target)}: "
            f"{why}")

    mode = getattr(source, "color_mode", "auto")
    wanted = {"rgb": 3, "grayscale": 1}.get(mode)
    if wanted is not None and (len(target) != 3 or target[-1] != wanted):
        raise no_fit(f"color_mode {mode!r} makes {wanted}-channel images; "
                     "the network reads other inputs. Leave `color_mode` "
                     "out, or use a network of (height, width, "
                     f"{wanted}) inputs.")
    if len(target) == 3:
        expand = len(shape) == 2  # a one-channel image
        if expand:
            shape = shape + (1,)
        if len(shape) != 3:
            raise no_fit("expected images (height, width, channels).")
        channels = convert = None
        if source.encoded:
            channels = target[-1]
        elif (mode, shape[-1]) in (("rgb", 1), ("grayscale", 3)):
            convert = mode
        elif shape[-1] != target[-1]:
            hint = (" Set `color_mode: rgb` in the data (or "
                    "`source.color_mode = 'rgb'`) to repeat the grey "
                    "channel." if (shape[-1], target[-1]) == (1, 3) else "")
            raise no_fit(
                f"{shape[-1]} channels, the network reads {target[-1]}. "
                "Convert the data or use a network with "
                f"{shape[-1]} input channels.{hint}")
        size = None
        if tuple(shape[:2]) != target[:2]:
            if not resize:
                raise no_fit("sizes differ and `resize` is off.")
            size = target[:2]
        return FitPlan(target, channels, size, expand, convert_color=convert)
    if shape == target:
        return FitPlan(target)
    if len(target) == 1 and None not in shape and not source.encoded and (
            int(np.prod(shape)) == target[0]):
        return FitPlan(target, flatten=True)
    raise no_fit("expected the same shape (or as many values, for a 1-D "
                 "input).")


def preprocess_function(mode, dtype):
    """The per-image preprocessing for `mode`: the input contract's own.

    Training, evaluation and every export prepare pixels with
    `packnet_tf.core.contract.preprocess_function`; this resolves `"auto"` by the
    source's dtype first, so no second implementation can drift from it.

    Args:
        mode: `"auto"` (uint8 -> [0, 1] floats, floats unchanged),
            `"unit"` (divide by 255), `"none"`, or a `keras.applications`
            module name (`"vgg16"`, `"resnet50"`, ...) whose
            `preprocess_input` is applied to 0-255 pixels.
        dtype: the source's example dtype.

    Returns:
        A function from a float32 tensor to a float32 tensor.

    Raises:
        DataError: (key "preprocess") for an unknown mode.
    """
    if mode == "auto":
        mode = "unit" if dtype == tf.uint8 or dtype.is_integer else "none"
    try:
        return contract.preprocess_function(mode)
    except ValueError:
        raise DataError(
            f"Unknown preprocess {mode!r}. Expected one of "
            f"{list(PREPROCESS_MODES)} or a keras.applications module name "
            "such as 'vgg16', 'resnet50', 'mobilenet_v2'.",
            key="preprocess") from None


def _held_out(source, split, every, held_out, shuffle, seed):
    """The split's examples with (or without) every `every`-th one."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 2:
        raise ValueError(
            "Expected `holdout` to be an int >= 2 (every k-th example is "
            f"held out). Received: holdout={every!r}")
    keep = tf.constant(bool(held_out))
    dataset = source.dataset(split, shuffle=False).enumerate().filter(
        lambda i, example: tf.equal(tf.equal(i % every, 0), keep)).map(
            lambda i, example: example)
    total = source.num_examples(split)
    if total:
        # A filter hides the length; state it, so Keras knows the steps.
        held = -(-total // every)
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(
            held if held_out else total - held))
    if shuffle:
        dataset = dataset.shuffle(total or 10_000, seed=seed,
                                  reshuffle_each_iteration=True)
    return dataset


def batches(source, split, input_shape, batch_size=DEFAULT_BATCH_SIZE, shuffle=None,
            seed=0, preprocess="auto", resize=True, repeat=False,
            augment=None, holdout=None, held_out=False, autotune=False):
    """A batched, prefetched `tf.data.Dataset` of `(x, y)` for a network.

    Args:
        source: a `DataSource`.
        split: the split to read.
        input_shape: the network's input shape (no batch axis).
        batch_size: examples per batch.
        shuffle: whether to shuffle (default: for the train split only).
        seed: shuffle seed; the order differs per epoch, the same per seed.
        preprocess: see `preprocess_function`.
        resize: whether images may be resized to the input size.
        repeat: repeat forever (for step-based training).
        augment: None (default), or an augmentation spec such as
            `{"flip": "horizontal", "translate": 0.1}` (see
            `packnet_tf.data.augmentation`), applied to each training batch
            after preprocessing, seeded by `seed` (the same per seed,
            different every epoch). Only for the train split of an image
            network.
        holdout: None, or an int k >= 2: every k-th example of the split
            (in the source's fixed order) is held out as validation data.
        held_out: with `holdout`, False gives the other examples (to train
            on), True the held-out ones (to validate on).
        autotune: False (default): tf.data autotuning off, so parallel
            reads and decoding keep TensorFlow's starting parallelism (its
            thread pool's size, at most 16) and two batches are
            prefetched. Keras' `fit` makes a new iterator every epoch, and
            with autotuning on the first step of an epoch waited longer on
            a 2-core machine: 1.39 s against 0.66 s for JPEGs decoded
            every epoch, up to 4 s for cached images in one sitting
            (`benchmarks/epoch_stall.py`). True: autotuned parallelism and
            prefetching, for pipelines whose best settings differ.

    Returns:
        A `tf.data.Dataset` of float32 `x` batches and int32 labels.

    Raises:
        DataError: if the examples do not fit `input_shape` (see
            `fit_plan`) or `preprocess` is unknown.
        ValueError: for a bad `augment` spec, or `augment` on a split
            other than the train split or on inputs that are not images.

    Example:

    >>> train = batches(source, "train", (32, 32, 3), batch_size=64, seed=0)
    """
    plan = fit_plan(source, input_shape, resize=resize)
    layers = augmentation.augmenter(augment, seed)
    if layers is not None and split != source.train_split:
        raise ValueError(
            f"Augmentation is for training batches only; received split "
            f"{split!r} (the train split is {source.train_split!r}). Leave "
            "`augment` out for validation and evaluation data."
        )
    if layers is not None and len(plan.input_shape) != 3:
        raise ValueError(
            "Augmentation flips and shifts images: it needs a network input "
            f"of shape (height, width, channels). Received input shape "
            f"{tuple(plan.input_shape)}. Leave `augment` out for this "
            "network."
        )
    if shuffle is None:
        shuffle = split == source.train_split
    if holdout is None:
        dataset = source.dataset(split, shuffle=bool(shuffle), seed=seed)
    else:
        dataset = _held_out(source, split, holdout, held_out, shuffle, seed)
    in_dtype = tf.uint8 if source.encoded else dataset.element_spec[0].dtype
    prep = preprocess_function(preprocess, in_dtype)

    def to_input(x, y):
        if plan.decode_channels:
            x = source.decode(x, plan.decode_channels)
        if plan.expand_channel:
            x = x[..., None]
        x = tf.cast(x, tf.float32)
        if plan.convert_color == "rgb":
            x = tf.image.grayscale_to_rgb(x)
        elif plan.convert_color == "grayscale":
            x = tf.image.rgb_to_grayscale(x)
        if plan.resize or source.encoded:
            size = plan.input_shape[:2]
            # Images already of the input size stay exact: bilinear
            # resizing to the same size is off by float rounding.
            x = tf.cond(
                tf.reduce_all(tf.equal(tf.shape(x)[:2], size)),
                lambda: x, lambda: tf.image.resize(x, size))
        if plan.flatten:
            x = tf.reshape(x, plan.input_shape)
        x = tf.ensure_shape(prep(x), plan.input_shape)
        return x, y

    dataset = dataset.map(to_input, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size)
    if layers is not None:
        # One call at a time: the layers' seed generator then advances in
        # the same order on every run, so a seed gives the same batches.
        dataset = dataset.map(lambda x, y: (layers(x, training=True), y))
    if autotune:
        return dataset.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(PREFETCH_BATCHES).with_options(options)
