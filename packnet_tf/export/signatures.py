"""The serving signatures of one task: float inputs, raw pixels, image files.

Given a task's forward function (a float batch of trunk inputs -> its head's
outputs) and its input contract, this builds the three `tf.function`s a
SavedModel serves:

- `task_<name>`: the trunk-ready float batch `inputs`, as before;
- `task_<name>_pixels`: uint8 images `pixels` [batch, height, width,
  channels] of any size, resized and preprocessed in the graph as the
  contract says (as `packnet_tf.data.batches` did in training);
- `task_<name>_images`: encoded JPEG/PNG/GIF/BMP strings `image_bytes`
  [batch] (TF Serving's REST `{"b64": ...}` values), decoded with
  `tf.io.decode_image`, then as `_pixels`.

Every signature checks its request against the export's `ImageLimits`
before it decodes or resizes anything (`packnet_tf.data.image_limits`):
image sizes read from the files' headers, batch size, request bytes,
finite floats.

Each returns `logits` (and `outputs`, the head's own outputs, for clients
of the first exports: the logits, or a probability head's probabilities,
whose `logits` are log p, finite where p is 0), `probabilities`, and the top k = min(5, classes) `class_ids`,
`class_names` and `scores` (their probabilities). Bad input (a wrong channel
count, an empty batch, a string that is no image) stops the call with an
`InvalidArgumentError` whose message says what was expected.
"""

import numpy as np
import tensorflow as tf

from packnet_tf.data import image_limits
from packnet_tf.export.checks import signature_name

#: Input names of the three signatures.
INPUT_NAME = "inputs"
PIXELS_NAME = "pixels"
IMAGES_NAME = "image_bytes"
#: Output names of every SavedModel signature.
LOGITS = "logits"
OUTPUT_NAME = "outputs"
PROBABILITIES = "probabilities"
CLASS_IDS = "class_ids"
CLASS_NAMES = "class_names"
SCORES = "scores"
#: The most classes `class_ids`, `class_names` and `scores` list.
TOP_K = 5
#: Suffixes of the signature keys of the raw-input signatures.
PIXELS_SUFFIX = "_pixels"
#: The least probability a `logits` output takes the log of (float32's
#: smallest normal): probability heads' zeros give finite logits.
TINY = float(np.finfo(np.float32).tiny)
IMAGES_SUFFIX = "_images"


def pixels_key(task):
    """The signature key of a task's raw-pixel signature."""
    return signature_name(task) + PIXELS_SUFFIX


def images_key(task):
    """The signature key of a task's encoded-image signature."""
    return signature_name(task) + IMAGES_SUFFIX


def image_shape(input_shape):
    """`(height, width, channels)` of an image trunk input, or None."""
    shape = tuple(input_shape)
    if len(shape) != 3 or any(d is None for d in shape):
        return None
    return tuple(int(d) for d in shape)


def head_outputs(outputs, num_classes, contract):
    """Every signature's outputs from a batch of head outputs.

    Args:
        outputs: the head's outputs `[batch, num_classes]`.
        num_classes: the head's width.
        contract: the task's `InputContract`, or None (logits, class ids
            as names).

    Returns:
        A dict of `logits`, `outputs`, `probabilities`, `class_ids`
        (int32), `class_names` (string) and `scores`.
    """
    from_logits = contract is None or contract.from_logits
    names = (tuple(str(i) for i in range(num_classes)) if contract is None
             else contract.names_for(num_classes))
    outputs = tf.cast(outputs, tf.float32)
    if from_logits:
        logits = outputs
        probabilities = tf.nn.softmax(outputs, axis=-1)
    else:
        # log p is a logit: softmax(log p) = p. A probability of exactly 0
        # (a saturated softmax) gives log(float32's smallest normal), about
        # -87.3, not -inf: JSON (TF Serving's REST API) has no infinity,
        # and softmax of the result differs from p by under 1e-37.
        probabilities = outputs
        logits = tf.math.log(tf.maximum(outputs, TINY))
    # Ranked by the head's own outputs: equal to `argmax` of the logits even
    # where softmax rounds two of them to the same probability.
    _, ids = tf.math.top_k(outputs, k=min(TOP_K, num_classes))
    scores = tf.gather(probabilities, ids, batch_dims=1)
    return {
        LOGITS: logits,
        OUTPUT_NAME: tf.identity(outputs),
        PROBABILITIES: probabilities,
        CLASS_IDS: ids,
        CLASS_NAMES: tf.gather(tf.constant(names, tf.string), ids),
        SCORES: scores,
    }


def _resized(images, size, method, what):
    """Float images resized to `size` as the training pipeline did.

    Images already of `size` are left exact (bilinear resizing to the same
    size is off by float rounding), as in `packnet_tf.data.batches`.
    """
    shape = tf.shape(images)
    same = tf.reduce_all(tf.equal(shape[-3:-1], size))
    if method is None:
        check = tf.debugging.assert_equal(
            same, True, message=(
                f"Expected {what} of {size[0]}x{size[1]} pixels: this task "
                "was trained without resizing. Resize the images to "
                f"{size[0]}x{size[1]} first."))
        with tf.control_dependencies([check]):
            return tf.identity(images)
    return tf.cond(same, lambda: images,
                   lambda: tf.image.resize(images, size, method=method))


def _check_batch(batch, what, expected):
    return tf.debugging.assert_greater(
        tf.shape(batch)[0], 0, message=(
            f"Expected at least one image in `{what}` ({expected}). "
            "Received: an empty batch. Send one or more images."))


def pixels_to_inputs(pixels, shape, contract, limits=None):
    """Trunk inputs from a uint8 batch `[batch, height, width, channels]`.

    Args:
        pixels: a uint8 tensor of rank 4, any height and width.
        shape: the trunk's `(height, width, channels)`.
        contract: the task's `InputContract`.
        limits: the `ImageLimits` the batch must keep (default: the
            defaults), checked before anything is resized.

    Returns:
        A float32 batch of `shape`.
    """
    limits = image_limits.check_limits(limits)
    height, width, channels = shape
    expected = f"uint8 [batch, height, width, {channels}]"
    # A signature's spec fixes the dtype; the shape reaches the graph
    # unchecked and would fail deep inside, naming no input.
    pixels = tf.ensure_shape(pixels, (None, None, None, None))
    checks = [
        _check_batch(pixels, PIXELS_NAME, expected),
        tf.debugging.assert_equal(
            tf.shape(pixels)[-1], channels, message=(
                f"Expected `{PIXELS_NAME}` with {channels} channel(s) "
                f"({expected}); the last axis of the batch received has "
                "another size. Convert the images to "
                f"{'greyscale' if channels == 1 else 'RGB'} first.")),
    ] + image_limits.check_pixels(pixels, limits, PIXELS_NAME)
    with tf.control_dependencies(checks):
        images = tf.cast(pixels, tf.float32)
    images = _resized(images, (height, width), contract.resize,
                      f"`{PIXELS_NAME}`")
    images = tf.ensure_shape(images, (None, height, width, channels))
    return contract.preprocess_function()(images)


def images_to_inputs(images, shape, contract, limits=None):
    """Trunk inputs from a batch of encoded image strings.

    Each image's size is read from its header and checked against `limits`
    before it is decoded; the request's batch size and bytes before any
    image is. Images are decoded one at a time (at most one decoded image
    is held besides the batch being built). An animated GIF gives its
    first frame (its decoder reads every frame: all of them count).

    Args:
        images: a 1-D string tensor of JPEG, PNG, GIF or BMP file bytes.
        shape: the trunk's `(height, width, channels)`.
        contract: the task's `InputContract`.
        limits: the `ImageLimits` (default: the defaults).

    Returns:
        A float32 batch of `shape`.
    """
    limits = image_limits.check_limits(limits)
    height, width, channels = shape

    def decode(item):
        data, index = item
        checks = image_limits.check_image(data, index, limits, IMAGES_NAME)
        with tf.control_dependencies(checks):
            image = tf.io.decode_image(data, channels=channels,
                                       expand_animations=False)
        image = _resized(tf.cast(image, tf.float32), (height, width),
                         contract.resize, f"`{IMAGES_NAME}`")
        return tf.ensure_shape(image, (height, width, channels))

    images = tf.ensure_shape(images, (None,))  # (see `pixels_to_inputs`)
    checks = [_check_batch(images, IMAGES_NAME,
                           "encoded image strings [batch]")]
    checks += image_limits.check_request(images, limits, IMAGES_NAME)
    with tf.control_dependencies(checks):
        count = tf.shape(images)[0]
    batch = tf.map_fn(
        decode, (images, tf.range(count)), parallel_iterations=1,
        fn_output_signature=tf.TensorSpec((height, width, channels),
                                          tf.float32))
    return contract.preprocess_function()(batch)


def task_functions(task, forward, input_spec, contract, limits=None):
    """The `tf.function`s of one task's SavedModel signatures.

    Args:
        task: the task's `TaskInfo`.
        forward: a function from a float batch of trunk inputs to the head's
            outputs (traced inside each signature).
        input_spec: the `tf.TensorSpec` of the float batch.
        contract: the task's `InputContract`, or None: only `task_<name>`
            (raw inputs need a contract to be prepared).
        limits: the `ImageLimits` every signature checks (default: the
            defaults).

    Returns:
        A dict `{signature key: tf.function}`: `task_<name>`, and with a
        contract of a task trained on pixels, on an image trunk,
        `task_<name>_pixels` and `task_<name>_images`.
    """
    num_classes = task.num_classes
    limits = image_limits.check_limits(limits)

    @tf.function(input_signature=[input_spec])
    def from_inputs(inputs):
        # (The shape unchecked otherwise: see `pixels_to_inputs`.)
        inputs = tf.ensure_shape(inputs, input_spec.shape)
        with tf.control_dependencies(image_limits.check_floats(
                inputs, limits, INPUT_NAME)):
            inputs = tf.identity(inputs)
        return head_outputs(forward(inputs), num_classes, contract)

    functions = {signature_name(task.name): from_inputs}
    shape = image_shape(input_spec.shape[1:])
    if contract is None or shape is None or not contract.pixels:
        # Trained on floats that are not pixels: raw images would be read
        # as something the trunk never saw.
        return functions

    @tf.function(input_signature=[tf.TensorSpec(
        (None, None, None, None), tf.uint8, name=PIXELS_NAME)])
    def from_pixels(pixels):
        inputs = pixels_to_inputs(pixels, shape, contract, limits)
        return head_outputs(forward(inputs), num_classes, contract)

    @tf.function(input_signature=[tf.TensorSpec(
        (None,), tf.string, name=IMAGES_NAME)])
    def from_images(image_bytes):
        inputs = images_to_inputs(image_bytes, shape, contract, limits)
        return head_outputs(forward(inputs), num_classes, contract)

    functions[pixels_key(task.name)] = from_pixels
    functions[images_key(task.name)] = from_images
    return functions
