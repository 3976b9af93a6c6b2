"""Bounds on what a served request may decode to, checked before decoding.

A 750 KB PNG can declare 16,000 x 16,000 pixels and decode to 768 MB (3 GB
as floats); a GIF of a few hundred frames costs every frame's pixels. The
`_images` signatures read each image's size from its header (JPEG, PNG,
BMP; GIF from its logical screen and every frame's descriptor), with
TensorFlow ops only, and refuse an image over `max_image_pixels`, a batch
over `max_batch_size` and a request over `max_request_bytes` before any
decoder allocates. The `_pixels` signatures check the same pixel and batch
limits before resizing (the client's tensor is already in memory then),
and the float signatures check the batch size and refuse NaN or infinite
values. Every refusal is an `InvalidArgumentError` that says what was
expected and what arrived.

The training and evaluation pipelines read files through the same check
(`DataSource.decode`, `decode_image`): a file over `max_image_pixels` is
a bad file there (named, or left out with `on_bad_files: skip`), never
decoded at full size.

The limits are an export option (`ImageLimits`) recorded in the
SavedModel (`record_limits`): the file `assets/image_limits.json` of every
version folder, for an operator to read, and the function `image_limits`
of the loaded object (`tf.saved_model.load(path).image_limits()`; listed by
`saved_model_cli show --all`). They are not a signature, so a served
model's signatures stay those of earlier exports.
"""

import dataclasses
import json
import os

import tensorflow as tf

#: The SavedModel asset that records the limits it was exported with.
LIMITS_FILE = "image_limits.json"
#: Leading bytes of each format the `_images` signatures read, by format.
FORMATS = {
    "JPEG": (b"\xff\xd8\xff",),
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "GIF": (b"GIF87a", b"GIF89a"),
    "BMP": (b"BM",),
}


@dataclasses.dataclass(frozen=True)
class ImageLimits:
    """What one request to a served task may hold.

    Attributes:
        max_image_pixels: the most pixels (height x width) one image may
            declare; for a GIF, every frame's pixels together (its decoder
            reads all of them) and its canvas each. Default 16 megapixels
            (4,000 x 4,000): 48 MB decoded, 192 MB as floats while it is
            resized.
        max_batch_size: the most images (or examples) in one request.
        max_request_bytes: the most encoded bytes in one `_images` request.
    """

    max_image_pixels: int = 16_000_000
    max_batch_size: int = 256
    max_request_bytes: int = 64 * 2**20

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or (
                    value < 1):
                raise ValueError(
                    f"Expected `{field.name}` to be an int >= 1. Received: "
                    f"{field.name}={value!r}")

    def as_dict(self):
        """The limits as `{name: int}`."""
        return dataclasses.asdict(self)


def check_limits(limits):
    """`limits` as an `ImageLimits` (None: the defaults; a dict: its fields).

    Raises:
        TypeError: for anything else; ValueError: for a bad field.
    """
    if limits is None:
        return ImageLimits()
    if isinstance(limits, ImageLimits):
        return limits
    if isinstance(limits, dict):
        unknown = sorted(set(limits) - set(ImageLimits().as_dict()))
        if unknown:
            raise ValueError(
                f"Unknown image limit {unknown[0]!r}. Known: "
                f"{sorted(ImageLimits().as_dict())}.")
        return ImageLimits(**limits)
    raise TypeError("Expected `limits` to be an ImageLimits, a dict of its "
                    f"fields or None. Received: {type(limits).__name__}")


def record_limits(module, limits, folder):
    """Makes `module`'s SavedModel carry `limits`.

    Writes `folder/image_limits.json` (the SavedModel copies it into its
    `assets/`) and attaches the function `image_limits` (no inputs; a dict
    of int64 scalars).

    Args:
        module: the `tf.Module` about to be saved.
        limits: an `ImageLimits`.
        folder: a scratch folder that exists until the module is saved.
    """
    values = limits.as_dict()
    path = os.path.join(folder, LIMITS_FILE)
    with open(path, "w") as f:
        json.dump(values, f, indent=2)
        f.write("\n")
    module.limits_file = tf.saved_model.Asset(path)

    @tf.function(input_signature=[])
    def image_limits():
        return {name: tf.constant(value, tf.int64)
                for name, value in values.items()}

    module.image_limits = image_limits


def format_index(data):
    """0.. for the formats of `FORMATS` in order, -1 for none of them."""
    index = tf.constant(-1)
    for position, magics in reversed(list(enumerate(FORMATS.values()))):
        match = tf.reduce_any(tf.stack([
            tf.equal(_substr(data, 0, len(m)), m) for m in magics]))
        index = tf.where(match, position, index)
    return index


def _substr(data, start, count):
    """`data[start:start + count]`, empty past the end.

    `tf.strings.substr` refuses a start past the end with the string itself
    in its message (raw bytes, not UTF-8: a client that decodes the error
    fails on it), so the start is clamped to the end.
    """
    length = tf.cast(tf.strings.length(data), tf.int64)
    return tf.strings.substr(
        data, tf.minimum(tf.cast(start, tf.int64), length), count)


def _bytes(data, start, count):
    """`count` bytes of `data` from `start` as int64 (0 past its end)."""
    piece = _substr(data, start, count)
    values = tf.cast(tf.io.decode_raw(piece, tf.uint8), tf.int64)
    return tf.reshape(tf.pad(values, [[0, count - tf.shape(values)[0]]]),
                      [count])


def _big_endian(values):
    """An unsigned integer from its bytes (int64 values), most significant
    first."""
    weights = [256 ** k for k in reversed(range(values.shape[0]))]
    return tf.reduce_sum(values * tf.constant(weights, tf.int64))


def _little_endian(values):
    return _big_endian(tf.reverse(values, [0]))


def _png_size(data, length):
    ok = tf.logical_and(length >= 24, tf.equal(
        _substr(data, 12, 4), b"IHDR"))
    fields = _bytes(data, 16, 8)
    width, height = _big_endian(fields[:4]), _big_endian(fields[4:])
    return ok, height, width, height * width


def _bmp_size(data, length):
    fields = _bytes(data, 18, 8)
    width, height = _little_endian(fields[:4]), _little_endian(fields[4:])
    # Signed 32-bit: a negative height is a top-down bitmap.
    height = tf.where(height >= 2**31, 2**32 - height, height)
    width = tf.where(width >= 2**31, 2**32 - width, width)
    return length >= 26, height, width, height * width


def _jpeg_size(data, length):
    # TensorFlow's own header reader (no decoding); it refuses a header it
    # cannot read.
    shape = tf.cast(tf.io.extract_jpeg_shape(data), tf.int64)
    return tf.constant(True), shape[0], shape[1], shape[0] * shape[1]


def _colour_table(flags):
    """Bytes of a GIF colour table announced by a flags byte (0 if none)."""
    return tf.where(flags >= 128, 3 * tf.bitwise.left_shift(
        tf.constant(2, tf.int64), flags % 8), 0)


def _skip_sub_blocks(data, position, length):
    """The position after a GIF data sub-block chain (size-prefixed blocks
    ending in a 0 byte), or `length` + 1 if the file ends first."""

    def more(p):
        return tf.logical_and(p < length, _bytes(data, p, 1)[0] > 0)

    position = tf.while_loop(
        more, lambda p: [p + 1 + _bytes(data, p, 1)[0]], [position])[0]
    return tf.where(position < length, position + 1, length + 1)


def _gif_size(data, length):
    """A GIF's canvas and the pixels of all its frames, from its blocks.

    Walks the block structure (extensions and image descriptors, their
    data sub-blocks skipped) without decoding anything. The canvas is the
    logical screen grown to hold every frame (TensorFlow's reader sizes it
    by the largest frame); the pixels counted are the larger of the canvas
    and all frames together (the reader holds every frame's pixels). A
    walk cut short by a truncated file counts what it read; the decoder
    then refuses the file.
    """
    header = _bytes(data, 6, 5)
    screen_w = _little_endian(header[0:2])
    screen_h = _little_endian(header[2:4])
    start = 13 + _colour_table(header[4])
    zero = tf.constant(0, tf.int64)

    def walking(p, done, canvas_w, canvas_h, pixels):
        return tf.logical_and(tf.logical_not(done), p < length)

    def step(p, done, canvas_w, canvas_h, pixels):
        kind = _bytes(data, p, 1)[0]

        def extension():
            return (_skip_sub_blocks(data, p + 2, length), done, canvas_w,
                    canvas_h, pixels)

        def image():
            fields = _bytes(data, p + 1, 9)
            left, top = _little_endian(fields[0:2]), _little_endian(
                fields[2:4])
            w, h = _little_endian(fields[4:6]), _little_endian(fields[6:8])
            # Descriptor (10 bytes), local colour table, LZW code size.
            after = _skip_sub_blocks(
                data, p + 10 + _colour_table(fields[8]) + 1, length)
            return (after, done, tf.maximum(canvas_w, left + w),
                    tf.maximum(canvas_h, top + h), pixels + w * h)

        def end():  # the trailer, or a byte no GIF block starts with
            return p, tf.constant(True), canvas_w, canvas_h, pixels

        branch = tf.where(tf.equal(kind, 0x21), 0, tf.where(
            tf.equal(kind, 0x2C), 1, 2))
        return tf.switch_case(tf.cast(branch, tf.int32),
                              [extension, image, end])

    _, _, canvas_w, canvas_h, pixels = tf.while_loop(
        walking, step,
        [start, tf.constant(False), screen_w, screen_h, zero])
    return (length >= 13, canvas_h, canvas_w,
            tf.maximum(canvas_w * canvas_h, pixels))


def declared_size(data):
    """What one encoded image declares, read from its header.

    Args:
        data: a scalar string tensor (the file's bytes).

    Returns:
        `(known, height, width, pixels)`: whether a header of a known
        format was read, the image's height and width (for a GIF its
        canvas), and the pixels its decoder reads (for a GIF, the larger
        of its canvas and all its frames together), int64.
    """
    length = tf.cast(tf.strings.length(data), tf.int64)

    def unknown():
        zero = tf.constant(0, tf.int64)
        return tf.constant(False), zero, zero, zero

    index = format_index(data)
    branches = [lambda f=f: f(data, length) for f in (
        _jpeg_size, _png_size, _gif_size, _bmp_size)] + [unknown]
    return tf.switch_case(tf.where(index < 0, len(branches) - 1, index),
                          branches)


def _assert(condition, template, values):
    """`tf.debugging.Assert` with one message, `{}`s filled in with
    `values` (TensorFlow prints each item of an Assert's data in brackets:
    one formatted string reads as a sentence)."""
    message = tf.strings.format(template, values, summarize=-1)
    return tf.debugging.Assert(condition, [message])


def check_image(data, index, limits, what):
    """Assertions that image `index` of a request fits `limits`.

    Args:
        data: a scalar string tensor.
        index: its position in the request (for the message).
        limits: an `ImageLimits`.
        what: the input's name, for messages.

    Returns:
        The assertion ops, to run before decoding `data`.
    """
    known, height, width, pixels = declared_size(data)
    return [_known(known, data, index, what),
            _has_area(height, width, index, what),
            _within(height, width, pixels, index, limits.max_image_pixels,
                    what, "this export's")]


def _known(known, data, index, what):
    names = list(FORMATS)
    formats = ", ".join(names[:-1]) + " or " + names[-1]
    # As numbers: raw bytes in an error message are not valid UTF-8, and
    # a client that decodes the message would fail on them.
    first = tf.io.decode_raw(_substr(data, 0, 8), tf.uint8)
    return _assert(known, (
        f"Expected {formats} file bytes in `{what}` (base64 in REST: "
        '{"b64": "..."}). Received at index {} bytes whose header none of '
        "them has (first bytes: {}). Send the image file's contents, not a "
        "path or decoded pixels."), (index, first))


def _has_area(height, width, index, what):
    return _assert(tf.logical_and(height > 0, width > 0), (
        f"Expected an image with at least one pixel in `{what}`. Received "
        "at index {} an image that declares {} x {} pixels."),
        (index, height, width))


def _within(height, width, pixels, index, limit, what, whose,
            allowed=None):
    """The pixel limit's assertion (`allowed`: also true where it holds)."""
    where = "" if index is None else " at index {}"
    values = (height, width, pixels) if index is None else (
        index, height, width, pixels)
    ok = pixels <= limit
    if allowed is not None:
        ok = tf.logical_or(ok, allowed)
    return _assert(ok, (
        f"Expected images of at most {limit:,} pixels in `{what}` ({whose} "
        f"max_image_pixels). Received{where} an image that declares {{}} x "
        "{} ({} pixels to decode). Send it smaller, or raise "
        "max_image_pixels."), values)


def pixel_check(data, max_image_pixels=None, what="image"):
    """The assertion that an encoded image declares at most
    `max_image_pixels` pixels (only for JPEG, PNG, GIF and BMP headers:
    other bytes are left to the decoder, which decodes or refuses them).

    Args:
        data: a scalar string tensor.
        max_image_pixels: the limit (None: `ImageLimits`' default).
        what: the data, for the message.

    Returns:
        An op to run before decoding `data`.
    """
    limit = ImageLimits().max_image_pixels if max_image_pixels is None else (
        max_image_pixels)
    known, height, width, pixels = declared_size(data)
    return _within(height, width, pixels, None, limit, what, "the data's",
                   allowed=tf.logical_not(known))


def decode_image(data, channels, max_image_pixels=None, what="image"):
    """`tf.io.decode_image` (first frame of an animation) after
    `pixel_check`: an image over the limit is refused before it is decoded.

    Args:
        data: a scalar string tensor.
        channels: channels to decode to (0: the file's own).
        max_image_pixels: the limit (None: `ImageLimits`' default).
        what: the data, for the message.

    Returns:
        A uint8 image `[height, width, channels]`.
    """
    with tf.control_dependencies([pixel_check(data, max_image_pixels,
                                              what)]):
        return tf.io.decode_image(data, channels=channels,
                                  expand_animations=False)


def check_request(images, limits, what):
    """Assertions on a whole `_images` request: batch size and bytes."""
    count = tf.shape(images, out_type=tf.int64)[0]
    size = tf.reduce_sum(tf.cast(tf.strings.length(images), tf.int64))
    return [
        _assert(count <= limits.max_batch_size, (
            f"Expected at most {limits.max_batch_size} images in `{what}` "
            "(this export's max_batch_size). Received {}. Split the "
            "request."), (count,)),
        _assert(size <= limits.max_request_bytes, (
            f"Expected at most {limits.max_request_bytes:,} bytes of images "
            f"in `{what}` (this export's max_request_bytes). Received {{}} "
            "bytes. Split the request or send smaller files."), (size,)),
    ]


def check_pixels(pixels, limits, what):
    """Assertions on a `_pixels` batch: batch size and pixels per image."""
    shape = tf.shape(pixels, out_type=tf.int64)
    return [
        _assert(shape[0] <= limits.max_batch_size, (
            f"Expected at most {limits.max_batch_size} images in `{what}` "
            "(this export's max_batch_size). Received {}. Split the "
            "request."), (shape[0],)),
        _assert(shape[1] * shape[2] <= limits.max_image_pixels, (
            f"Expected images of at most {limits.max_image_pixels:,} pixels "
            f"in `{what}` (this export's max_image_pixels). Received {{}} x "
            "{}. Send them smaller."), (shape[1], shape[2])),
    ]


def check_floats(inputs, limits, what):
    """Assertions on a float batch: batch size, finite values."""
    count = tf.shape(inputs, out_type=tf.int64)[0]
    return [
        _assert(count <= limits.max_batch_size, (
            f"Expected at most {limits.max_batch_size} examples in `{what}` "
            "(this export's max_batch_size). Received {}. Split the "
            "request."), (count,)),
        tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(inputs)), [
            f"Expected finite values in `{what}`. Received NaN or infinite "
            "values. Send the preprocessed inputs the task was trained on."]),
    ]
