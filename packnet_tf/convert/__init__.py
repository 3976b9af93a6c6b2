"""Keras models to PackNet models: `convert` and the packed twins.

- `converter`: `convert(model, max_tasks, first_task=...)` rebuilds a
  Keras model with packed layers, optionally its classifier as task 1.
- `twins`: each Keras layer's packed twin (through the layer registry).

Layer 7: may import `core`, `layers`, `compat` and `errors`.
"""

from packnet_tf.convert.converter import convert, find_classifier

__all__ = ["convert", "find_classifier"]
