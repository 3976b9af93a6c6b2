"""A task's input contract: how raw images become the trunk's input.

Training prepares a task's examples in a certain way (decode, resize to the
trunk's size, scale or a `keras.applications` `preprocess_input`) and its
head's outputs have class names. The contract records that with the task,
in the model's `.keras` file, so that `packnet-tf eval` and the exporters
can repeat it exactly (in the exported graph, for the `_pixels` and
`_images` signatures) instead of asking the user again.

A task without a contract (files written before contracts existed, or a
task added without one) reads "trunk-ready floats": inputs already prepared.
"""

import dataclasses
import importlib

#: `preprocess` names besides the `keras.applications` module names.
PREPROCESS_NAMES = ("unit", "none")
#: `resize` values: `tf.image.resize` methods, or None (sizes must match).
RESIZE_METHODS = ("bilinear", "nearest", "bicubic", "area", "lanczos3",
                  "lanczos5", "gaussian", "mitchellcubic")


def preprocess_function(name):
    """The float32 -> float32 function a `preprocess` name stands for.

    Args:
        name: "unit" (divide by 255), "none" (identity), or a
            `keras.applications` module name whose `preprocess_input` reads
            0-255 pixels ("mobilenet_v2", "resnet50", "vgg16", ...).

    Returns:
        A function of a float32 tensor.

    Raises:
        ValueError: for a name that is none of these.
    """
    if name == "none":
        return lambda x: x
    if name == "unit":
        return lambda x: x / 255.0
    function = None
    if isinstance(name, str) and name.isidentifier():
        try:
            module = importlib.import_module(f"keras.applications.{name}")
            function = getattr(module, "preprocess_input", None)
        except ImportError:
            function = None
    if function is None:
        raise ValueError(
            f"Expected `preprocess` in {list(PREPROCESS_NAMES)} or a "
            "keras.applications module name with a `preprocess_input` "
            "('mobilenet_v2', 'resnet50', 'vgg16', ...). Received: "
            f"preprocess={name!r}")
    return lambda x: function(x)


@dataclasses.dataclass(frozen=True)
class InputContract:
    """How a task's raw images become trunk inputs, and what its classes are.

    The input size and channel count are the trunk's own
    (`model.trunk.inputs[0].shape`); the contract says how to get there.

    Attributes:
        preprocess: "unit" (pixels / 255), "none" (pixels as floats), or a
            `keras.applications` module name ("mobilenet_v2", ...) whose
            `preprocess_input` is applied to 0-255 float pixels.
        resize: the `tf.image.resize` method images of another size are
            resized with ("bilinear", as `packnet_tf.data.batches` does), or
            None: the task was trained without resizing, images must have
            the trunk's size.
        class_names: the class names in label order (label i is
            `class_names[i]`), or None (labels are their ids).
        from_logits: whether the head outputs logits (else probabilities).
        pixels: whether the task was trained on 0-255 pixels (images,
            integer arrays) before `preprocess`. False for float data
            such as arrays already in [0, 1]: then no raw-pixel or
            image-file signature is exported (it would read values the
            trunk never saw).

    Raises:
        ValueError: on a bad value (in `__post_init__`).

    Example:

    >>> InputContract("mobilenet_v2", class_names=("cat", "dog"))
    """

    preprocess: str = "unit"
    resize: str = "bilinear"
    class_names: tuple = None
    from_logits: bool = True
    pixels: bool = True

    def __post_init__(self):
        preprocess_function(self.preprocess)
        if self.resize is not None and self.resize not in RESIZE_METHODS:
            raise ValueError(
                f"Expected `resize` in {list(RESIZE_METHODS)} or None (no "
                f"resizing). Received: resize={self.resize!r}")
        if self.class_names is not None:
            names = self.class_names
            if isinstance(names, str) or not names or not all(
                    isinstance(n, str) and n and "\n" not in n
                    for n in names):
                raise ValueError(
                    "Expected `class_names` to be a non-empty list of "
                    "non-empty one-line strings. Received: "
                    f"class_names={names!r}")
            if len(set(names)) != len(names):
                raise ValueError(
                    "Expected distinct `class_names`. Received: "
                    f"{list(names)}")
            object.__setattr__(self, "class_names", tuple(names))
        for key in ("from_logits", "pixels"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(
                    f"Expected `{key}` to be True or False. Received: "
                    f"{key}={getattr(self, key)!r}")

    def preprocess_function(self):
        """The float32 -> float32 preprocessing of 0-255 pixels."""
        return preprocess_function(self.preprocess)

    def names_for(self, num_classes):
        """The class names of a head of `num_classes` outputs.

        Returns:
            `class_names`, or `("0", "1", ...)` when there are none.
        """
        if self.class_names is None:
            return tuple(str(i) for i in range(num_classes))
        return self.class_names

    def check_classes(self, num_classes, task):
        """Raises unless the class names fit a head of `num_classes`.

        Raises:
            ValueError: naming both counts.
        """
        if self.class_names is not None and len(self.class_names) != (
                num_classes):
            raise ValueError(
                f"Task {task!r} has a head of {num_classes} outputs but its "
                f"input contract names {len(self.class_names)} classes "
                f"({list(self.class_names)[:10]}). Give one name per "
                "output, in label order.")

    def check_input_shape(self, shape, task):
        """Raises unless the preprocessing keeps an image trunk's input shape.

        A `keras.applications` preprocessing may need 3 channels (the
        "caffe" ones reorder RGB to BGR): this catches it on a 1-channel
        trunk when the contract is set, not when a client calls.

        Args:
            shape: the trunk's input shape without the batch axis.
            task: the task's name, for the message.

        Raises:
            ValueError: naming the preprocessing and the shape.
        """
        import numpy as np

        shape = tuple(shape)
        if len(shape) != 3:
            return
        try:
            out = self.preprocess_function()(
                np.zeros((1,) + shape, "float32"))
            ok = tuple(np.shape(out)) == (1,) + shape
        except Exception:  # shape errors come in many types
            ok = False
        if not ok:
            raise ValueError(
                f"Task {task!r}: preprocess={self.preprocess!r} does not "
                f"work on the trunk's input shape {shape}. Use 'unit' or "
                "'none', or a network with the channels it expects.")

    def describe(self):
        """One line for `packnet-tf info`."""
        resize = f"resize {self.resize}" if self.resize else "no resize"
        names = ("class ids" if self.class_names is None
                 else ", ".join(self.class_names[:6])
                 + (", ..." if len(self.class_names) > 6 else ""))
        head = "" if self.from_logits else "; head outputs probabilities"
        floats = "" if self.pixels else "; float inputs, not pixels"
        return (f"preprocess {self.preprocess}, {resize}; {names}{head}"
                f"{floats}")

    def to_config(self):
        """The contract as a JSON-friendly dict."""
        config = dataclasses.asdict(self)
        if self.class_names is not None:
            config["class_names"] = list(self.class_names)
        return config

    @classmethod
    def from_config(cls, config):
        """The inverse of `to_config`."""
        return cls(**config)


def as_contract(value):
    """An `InputContract` from a contract, a dict of its fields, or None.

    Raises:
        TypeError: for anything else.
        ValueError: for bad fields.
    """
    if value is None or isinstance(value, InputContract):
        return value
    if isinstance(value, dict):
        unknown = sorted(set(value) - {
            f.name for f in dataclasses.fields(InputContract)})
        if unknown:
            raise ValueError(
                f"Unknown input contract key(s) {unknown}. Expected some of "
                "preprocess, resize, class_names, from_logits, pixels.")
        return InputContract(**value)
    raise TypeError(
        "Expected `input_contract` to be a packnet_tf.InputContract, a dict "
        f"of its fields, or None. Received: {type(value).__name__}")
