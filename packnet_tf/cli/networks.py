"""The network a config's `network` section describes.

- `cnn`: conv blocks (`conv: [32, 32, pool, 64]`: 'same' convolutions of
  `kernel_size`, optional task batch norm, ReLU; `pool` is a 2x2 max
  pool), then flatten (or global average pooling) and ReLU dense layers.
- `mlp`: dense layers on flattened inputs.
- `application`: a `keras.applications` model (`name: VGG16`) converted by
  `packnet_tf.convert.converter`; with `first_task` its classifier (as logits) becomes
  that task's head. `weights: imagenet` downloads the weights once.
- `file`: a saved `.keras` file: a `PackNetModel` to continue, or a plain
  Keras model to convert.
"""

import keras

from packnet_tf import layers
from packnet_tf.core.model import PackNetModel
from packnet_tf.core.planning import DEFAULT_FREE_INIT


def _cnn_trunk(spec):
    kernel = spec.get("kernel_size", 3)
    stack = [keras.Input(tuple(spec["input_shape"]))]
    convs = 0
    for item in spec.get("conv", []):
        if item == "pool":
            stack.append(keras.layers.MaxPooling2D())
            continue
        convs += 1
        stack.append(layers.PackedConv2D(item, kernel, padding="same",
                                         name=f"conv{convs}"))
        if spec.get("batch_norm"):
            stack.append(layers.TaskBatchNormalization(
                momentum=spec.get("batch_norm_momentum", 0.99),
                name=f"bn{convs}"))
        stack.append(keras.layers.ReLU())
    if spec.get("global_pool"):
        stack.append(keras.layers.GlobalAveragePooling2D())
    else:
        stack.append(keras.layers.Flatten())
    for index, width in enumerate(spec.get("dense", []), 1):
        stack.append(layers.PackedDense(width, activation="relu",
                                        name=f"fc{index}"))
    return keras.Sequential(stack, name="cnn_trunk")


def _mlp_trunk(spec):
    stack = [keras.Input(tuple(spec["input_shape"]))]
    if len(spec["input_shape"]) > 1:
        stack.append(keras.layers.Flatten())
    for index, width in enumerate(spec.get("dense", []), 1):
        stack.append(layers.PackedDense(width, name=f"fc{index}"))
        if spec.get("batch_norm"):
            stack.append(layers.TaskBatchNormalization(
                momentum=spec.get("batch_norm_momentum", 0.99),
                name=f"bn{index}"))
        stack.append(keras.layers.ReLU())
    return keras.Sequential(stack, name="mlp_trunk")


def _application(spec):
    name = spec["name"]
    constructor = getattr(keras.applications, name, None)
    if not callable(constructor):
        known = sorted(n for n in dir(keras.applications) if n[0].isupper())
        raise ValueError(f"keras.applications has no model {name!r}. "
                         f"Known: {', '.join(known)}.")
    kwargs = dict(spec.get("args") or {})
    kwargs.setdefault("weights", spec.get("weights"))
    if "input_shape" in spec:
        kwargs.setdefault("input_shape", tuple(spec["input_shape"]))
    if spec.get("first_task") is not None:
        # Logits, so that every task trains with the same loss.
        kwargs.setdefault("classifier_activation", None)
    return constructor(**kwargs)


def build_network(spec, max_tasks, load=None):
    """Builds the `PackNetModel` for a checked `network` section.

    Args:
        spec: the section (a dict with `type`; paths already absolute).
        max_tasks: the model's task capacity.
        load: the function that loads a `.keras` file (for `file`).

    Returns:
        A `PackNetModel` (with its first task when `first_task` is set).

    Raises:
        ValueError: for an unknown application, or arguments Keras or
            `packnet_tf.convert.converter` reject (with their message).
    """
    kind = spec["type"]
    free_init = spec.get("free_init", DEFAULT_FREE_INIT)
    if kind == "cnn":
        return PackNetModel(_cnn_trunk(spec), max_tasks=max_tasks,
                            free_init=free_init, name="packnet")
    if kind == "mlp":
        return PackNetModel(_mlp_trunk(spec), max_tasks=max_tasks,
                            free_init=free_init, name="packnet")
    from packnet_tf.convert.converter import convert

    if kind == "application":
        return convert(_application(spec), max_tasks,
                       first_task=spec.get("first_task"),
                       free_init=free_init)
    model = (load or keras.saving.load_model)(spec["path"])
    if isinstance(model, PackNetModel):
        if "free_init" in spec and spec["free_init"] != model.free_init:
            raise ValueError(
                f"network.free_init is {spec['free_init']!r}, but the "
                f"PackNetModel in {spec['path']} was built with "
                f"free_init={model.free_init!r}, which cannot change. Leave "
                "free_init out for a saved PackNetModel.")
        return model
    return convert(model, max_tasks, first_task=spec.get("first_task"),
                   free_init=free_init)


def input_shape(model):
    """The input shape of a `PackNetModel`, without the batch axis."""
    return tuple(int(d) for d in model.trunk.inputs[0].shape[1:])
