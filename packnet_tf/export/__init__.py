"""Deployment: TF Serving SavedModels and LiteRT (TFLite) files of a PackNetModel.

Everything exported is plain TensorFlow (or a LiteRT flatbuffer): it runs
without packnet_tf or Keras, and gives the outputs the model gives for the
same task.

- `saved_model(model, base_dir, tasks=None, version=1, layout="per_task",
  limits=None)`:
  the TF Serving layout `<base_dir>/<task>/<version>/` plus `models.config`;
  `layout="multi"` writes one SavedModel with every task's signatures
  sharing one copy of the weights. A task's signatures: `task_<name>`
  (trunk-ready floats) and, with an input contract, `task_<name>_pixels`
  (uint8 images of any size) and `task_<name>_images` (encoded JPEG/PNG),
  each returning logits, probabilities and the top-k class ids, names and
  scores (`packnet_tf.export.signatures`). Each checks its request
  against `ImageLimits` (pixels declared by each image's header, batch
  size, request bytes) before decoding (`packnet_tf.data.image_limits`).
- `tflite(model, path, task=None, tasks=None, quantize=None,
  representative_data=None, sparse=False, layout=None, inputs="float")`:
  one task per file, or one file with a signature per task; `inputs=
  "pixels"` reads uint8 pixels at the trunk's size. `<task>.labels.txt`
  goes beside the file.
- `plain_model(model, task)`: the task as a plain Keras model (masks baked
  in, batch norm folded).

The functions live in modules named apart from them (`to_saved_model`,
`to_tflite`, `plain`, `serving`), so that `packnet_tf.export.tflite` is
the function and `import packnet_tf.export.to_tflite` the module.

Layer 9: may import `evaluation`, `training`, `convert`, `inference`,
`data`, `io`, `core`, `layers`, `compat` and `errors`.
"""

from packnet_tf.data.image_limits import ImageLimits
from packnet_tf.export.plain import plain_model
from packnet_tf.export.serving import write_models_config
from packnet_tf.export.to_saved_model import saved_model
from packnet_tf.export.to_tflite import tflite

__all__ = ["ImageLimits", "plain_model", "saved_model", "tflite",
           "write_models_config"]
