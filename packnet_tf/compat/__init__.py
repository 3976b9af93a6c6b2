"""Everything that leans on a private Keras API or a tf.distribute bug.

`keras_internals` reads Keras internals (functional graph nodes, traced
function caches, optimizer copies, fit's symbolic build hook) in one place;
`distribute` holds the `tf.distribute` workarounds. Each is pinned by a test
(`tests/test_keras_compat.py`, `tests/test_distribute.py`) so that a Keras
or TensorFlow release that changes one fails there first.

Layer 1 of the package: may import `packnet_tf.errors` only.
"""
