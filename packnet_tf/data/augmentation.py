"""Training-time data augmentation by Keras preprocessing layers.

An augmentation spec is a dict such as `{"flip": "horizontal",
"translate": 0.1}`: `flip` is a `keras.layers.RandomFlip` mode, `translate`
the largest shift as a share of the height and width
(`keras.layers.RandomTranslation`, reflecting at the border). It is off
unless asked for, and only ever applied to training batches
(`packnet_tf.data.batches(..., augment=spec)` refuses other splits).

Checking a spec needs no TensorFlow (the run config is checked with this
module); Keras is imported when the layers are built.
"""

import numbers

#: Keys of a spec.
KEYS = ("flip", "translate")
#: `RandomFlip` modes.
FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")


def check_augment(spec):
    """Checks an augmentation spec.

    Args:
        spec: None, or a dict with keys from `KEYS`: `flip` one of
            `FLIP_MODES` (or None), `translate` a number in (0, 1) (or
            None / 0 for none).

    Returns:
        The spec as a dict of the augmentations it turns on (keys with a
        value), or None when it turns on none.

    Raises:
        ValueError: on an unknown key or a bad value.
        TypeError: if `spec` is not a dict or None.
    """
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise TypeError(
            "Expected augmentation as a dict such as {'flip': 'horizontal', "
            f"'translate': 0.1}}, or None. Received: {spec!r}"
        )
    unknown = sorted(set(spec) - set(KEYS))
    if unknown:
        raise ValueError(
            f"Unknown augmentation key(s) {unknown}. Allowed: {list(KEYS)}."
        )
    checked = {}
    flip = spec.get("flip")
    if flip is not None:
        if flip not in FLIP_MODES:
            raise ValueError(
                f"Expected `flip` to be one of {list(FLIP_MODES)} (or None "
                f"for no flips). Received: flip={flip!r}"
            )
        checked["flip"] = flip
    translate = spec.get("translate")
    if translate is not None and translate != 0:
        if (isinstance(translate, bool)
                or not isinstance(translate, numbers.Real)
                or not 0.0 < float(translate) < 1.0):
            raise ValueError(
                "Expected `translate` to be a number in (0, 1): the largest "
                "shift as a share of the image's height and width (0.1 "
                f"shifts by up to 10%). Received: translate={translate!r}"
            )
        checked["translate"] = float(translate)
    return checked or None


def augmenter(spec, seed):
    """The Keras layers that augment a batch of images under `spec`.

    Args:
        spec: an augmentation spec (see `check_augment`).
        seed: an int; the same seed gives the same augmentations, epoch by
            epoch.

    Returns:
        A `keras.Sequential` to call with `training=True` on float image
        batches `(batch, height, width, channels)`, or None when `spec`
        turns nothing on.

    Raises:
        ValueError, TypeError: as `check_augment`.
    """
    import keras

    spec = check_augment(spec)
    if spec is None:
        return None
    layers = []
    if "flip" in spec:
        layers.append(keras.layers.RandomFlip(spec["flip"], seed=seed))
    if "translate" in spec:
        layers.append(keras.layers.RandomTranslation(
            spec["translate"], spec["translate"], fill_mode="reflect",
            seed=seed + 1))
    return keras.Sequential(layers, name="augment")
