"""What PackNet needs from `tf.distribute`, kept in one place.

Two things here work around TensorFlow 2.21 / Keras 3.15 behaviour:

1. `MultiWorkerMirroredStrategy` broadcasts every new variable's initial
   value with a collective op that has no 8-bit kernel ("Value for attr 'T'
   of uint8 is not in the list of allowed values"). Owner variables are
   therefore int32 while such a strategy is in scope
   (`packnet_tf.layers.base.owner_dtype`); values and saved files
   are the same (owner ids fit in 8 bits either way).
2. Keras 3.15 `fit` fails under `MultiWorkerMirroredStrategy`
   (keras-team/keras#20585): its symbolic build feeds a `PerReplica` batch to
   the model, and it reduces scalar step results along an axis they do not
   have. `MultiWorkerFitMixin` overrides Keras' private
   `_maybe_symbolic_build` hook (reading it through
   `packnet_tf.compat.keras_internals`) and reshapes the step results.
   `tests/test_distribute.py` pins both failures on plain Keras, and
   `tests/test_keras_compat.py` the hook itself, so a Keras release that
   fixes or changes them shows up as a failing test.
"""

import tensorflow as tf

from packnet_tf.compat import keras_internals


def is_multi_worker(strategy=None):
    """Whether `strategy` (default: the current one) is multi-worker."""
    strategy = strategy or tf.distribute.get_strategy()
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


class MultiWorkerFitMixin:
    """Makes Keras 3.15 `fit` run a model under `MultiWorkerMirroredStrategy`.

    Mix in before `keras.Model`. Outside a multi-worker strategy both hooks
    defer to Keras unchanged.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = keras_internals.model_strategy(self)
        if iterator is not None and strategy is not None and is_multi_worker(
                strategy):
            batch = keras_internals.first_batch(iterator)
            if batch is not None:
                # Build from this worker's first replica's share of the batch.
                data_batch = tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0], batch
                )
            iterator = None
        return super()._maybe_symbolic_build(
            iterator=iterator, data_batch=data_batch
        )

    def _step_results(self, logs):
        """Step results shaped so Keras can reduce them across workers."""
        if not is_multi_worker():
            return logs
        return tf.nest.map_structure(lambda v: tf.reshape(v, [1]), logs)
