"""A task's data options that a run config sets, without TensorFlow.

The values here are read by the data pipeline, the data checks and the
command's config schema alike, so each is written once.
"""

#: The batch size of `batches` and of a run config's tasks (Keras' own
#: default for arrays).
DEFAULT_BATCH_SIZE = 32
#: What `on_bad_files` accepts; the first is the default ("error": stop
#: before training and name the files; "skip": leave them out).
ON_BAD_FILES = ("error", "skip")
