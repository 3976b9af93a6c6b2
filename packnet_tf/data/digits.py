"""The embedded default data: scikit-learn's 8x8 digits as five 2-way tasks.

1,797 real images ship with scikit-learn, so the demo and the README's first
job run without any download.
"""

import numpy as np

from packnet_tf.data.arrays import ArraySource

#: Five tasks: (0, 1), (2, 3), ..., (8, 9).
NUM_DIGIT_TASKS = 5


def digit_tasks(seed=0, test_size=0.25):
    """Five `(name, (x_train, y_train), (x_test, y_test))` 2-way tasks.

    Images are float32 in [0, 1], shape (8, 8, 1); labels 0 and 1 stand
    for the task's lower and higher digit.

    Args:
        seed: the train/test split's random state.
        test_size: share of each task's images held out for testing.

    Returns:
        A list of five tuples, task "digits_0_1" first.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype("float32")[..., None]
    tasks = []
    for t in range(NUM_DIGIT_TASKS):
        keep = np.isin(digits.target, (2 * t, 2 * t + 1))
        x, y = images[keep], (digits.target[keep] - 2 * t).astype("int32")
        x_tr, x_te, y_tr, y_te = train_test_split(
            x, y, test_size=test_size, random_state=seed, stratify=y)
        tasks.append((f"digits_{2 * t}_{2 * t + 1}", (x_tr, y_tr),
                      (x_te, y_te)))
    return tasks


def digit_sources(seed=0):
    """The five digit tasks as `(name, ArraySource)` pairs."""
    return [
        (name, ArraySource({"train": train, "test": test},
                           class_names=[name.split("_")[1],
                                        name.split("_")[2]],
                           description=f"digits {name}"))
        for name, train, test in digit_tasks(seed)
    ]


def write_digit_folder(root, seed=0, test_size=0.25):
    """Writes the digits as an image folder `<root>/<split>/<digit>/*.png`.

    The layout users have for their own images; `examples/digits_folder.yaml`
    trains on it. Pixels 0..16 are stored as 0..255 greyscale PNGs. The
    folder is written under a temporary name and renamed, so it is either
    complete or absent.

    Args:
        root: the folder to create (must not exist).
        seed: the train/test split's random state.
        test_size: the share of each digit held out as `test`.

    Returns:
        `root` as a `pathlib.Path`.

    Raises:
        FileExistsError: if `root` exists.
    """
    import pathlib
    import shutil

    import tensorflow as tf
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    root = pathlib.Path(root)
    if root.exists():
        raise FileExistsError(f"{root} exists; pick a new folder.")
    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype("uint8")[..., None]
    index = np.arange(len(images))
    train, test = train_test_split(index, test_size=test_size,
                                   random_state=seed, stratify=digits.target)
    staging = root.with_name(root.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    for split, rows in (("train", train), ("test", test)):
        for row in rows:
            folder = staging / split / str(digits.target[row])
            folder.mkdir(parents=True, exist_ok=True)
            png = tf.io.encode_png(images[row]).numpy()
            (folder / f"{row:04d}.png").write_bytes(png)
    staging.rename(root)
    return root
