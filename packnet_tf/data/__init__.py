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
"""

from packnet_tf.data.arrays import ArraySource, DatasetSource, npz_source
from packnet_tf.data.checks import BadFilesError, CheckCache, CheckReport
from packnet_tf.data.checks import check_source
from packnet_tf.data.digits import digit_sources, digit_tasks
from packnet_tf.data.digits import write_digit_folder
from packnet_tf.data.folder import ImageFolderSource
from packnet_tf.data.image_limits import ImageLimits
from packnet_tf.data.pipeline import FitPlan, batches, fit_plan
from packnet_tf.data.source import DataError, DataSource
from packnet_tf.data.spec import from_spec, normalize_spec
from packnet_tf.data.tfds_source import TFDSSource

__all__ = [
    "ArraySource",
    "BadFilesError",
    "CheckCache",
    "CheckReport",
    "DataError",
    "DataSource",
    "DatasetSource",
    "FitPlan",
    "ImageFolderSource",
    "ImageLimits",
    "TFDSSource",
    "batches",
    "check_source",
    "digit_sources",
    "digit_tasks",
    "fit_plan",
    "from_spec",
    "normalize_spec",
    "npz_source",
    "write_digit_folder",
]
