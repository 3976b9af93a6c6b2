"""Task data for PackNet: TFDS names, image folders and zips, arrays.

Every source gives labelled examples per split with class names (after an
optional class subset, relabelled 0..k-1 in the given order);
`batches(...)` turns one into shuffled (seeded), resized, preprocessed,
batched and prefetched `tf.data` input for a network; `check_source(...)`
finds image files that cannot be decoded before anything trains. Every
encoded image's header is read before it is decoded: one that declares
more than `max_image_pixels` is refused (`ImageLimits`, `image_limits`).

Example:

>>> from packnet_tf import data
>>> source = data.from_spec({"folder": "cifar10_jpg.zip",
...                          "classes": ["airplane", "automobile"]})
>>> train = data.batches(source, "train", (32, 32, 3), batch_size=64)

`augmentation` (the training-time augmentation options) imports no
TensorFlow; the names above are imported on first use.

Layer 5: may import `io`, `core`, `layers`, `compat` and `errors`.
"""

from packnet_tf._lazy import lazy_exports

#: Each public name and the module it comes from.
_EXPORTS = {
    "ArraySource": "packnet_tf.data.arrays",
    "BadFilesError": "packnet_tf.data.checks",
    "CheckCache": "packnet_tf.data.checks",
    "CheckReport": "packnet_tf.data.checks",
    "DataError": "packnet_tf.data.source",
    "DataSource": "packnet_tf.data.source",
    "DatasetSource": "packnet_tf.data.arrays",
    "FitPlan": "packnet_tf.data.pipeline",
    "ImageFolderSource": "packnet_tf.data.folder",
    "ImageLimits": "packnet_tf.data.image_limits",
    "TFDSSource": "packnet_tf.data.tfds_source",
    "batches": "packnet_tf.data.pipeline",
    "check_source": "packnet_tf.data.checks",
    "digit_sources": "packnet_tf.data.digits",
    "digit_tasks": "packnet_tf.data.digits",
    "fit_plan": "packnet_tf.data.pipeline",
    "from_spec": "packnet_tf.data.spec",
    "normalize_spec": "packnet_tf.data.spec",
    "npz_source": "packnet_tf.data.arrays",
    "write_digit_folder": "packnet_tf.data.digits",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
