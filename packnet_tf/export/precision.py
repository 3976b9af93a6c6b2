"""Exports compute in float32, whatever dtype policy the model trained under.

A model trained under `mixed_float16` or `mixed_bfloat16` keeps float32
variables but computes in half precision. Its exports compute in float32:
the weights lose nothing, the outputs are what a float32 client expects,
and CPUs without half-precision kernels (most TF Serving hosts, many edge
devices) run them at full speed. A Keras layer rebuilt from its config
carries its policy with it, so the export replaces the policy in the config
(`float32_config`), rebuilds the weightless layers it would otherwise reuse
(`float32_layer`), and builds its own inputs and models under a float32
global policy (`float32_policy`).
"""

import contextlib

import keras

#: Compute dtypes an export does not keep.
HALF_DTYPES = ("float16", "bfloat16")
#: What exports compute in.
EXPORT_DTYPE = "float32"


def computes_in_half(layer):
    """Whether `layer`'s dtype policy computes in float16 or bfloat16."""
    policy = getattr(layer, "dtype_policy", None)
    return policy is not None and policy.compute_dtype in HALF_DTYPES


def float32_config(layer):
    """`layer.get_config()`, with a float32 policy where it computes in half.

    Args:
        layer: a Keras layer.

    Returns:
        The config dict, ready for `from_config`.
    """
    config = layer.get_config()
    if computes_in_half(layer):
        config["dtype"] = EXPORT_DTYPE
    return config


def float32_layer(layer):
    """`layer` itself, or a float32 copy where it computes in half precision.

    Args:
        layer: a Keras layer without weights (an activation, a reshape, a
            merge); one with weights is returned as it is, since a copy
            would need them set after it is built.

    Returns:
        A layer that computes in float32 where `layer` computed in half.
    """
    if not computes_in_half(layer) or layer.weights:
        return layer
    return layer.__class__.from_config(float32_config(layer))


@contextlib.contextmanager
def float32_policy():
    """Keras' global dtype policy float32 inside the block, restored after.

    The policy is process-wide in Keras; an export is not meant to run
    beside model building in another thread.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(EXPORT_DTYPE)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
