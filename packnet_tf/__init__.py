"""packnet_tf: many tasks in one Keras network with PackNet.

Mallya & Lazebnik, "PackNet: Adding Multiple Tasks to a Single Network by
Iterative Pruning", CVPR 2018.

`import packnet_tf` registers every Keras class of the library with
`keras.saving` (so `keras.saving.load_model` reads a saved `PackNetModel`
with no `custom_objects`), which imports TensorFlow and Keras. The one
exception is a process started by the `packnet-tf` command (its launcher,
the top-level module `packnet_tf_cli`, is imported first): the command
answers `--help`, `--version` and config errors without TensorFlow, and its
paths that read or build models import the classes themselves. The other
public names are imported on first use (PEP 562); `packnet_tf.PackNetModel`
and `from packnet_tf import train_task` work as plain imports would.
"""

import importlib
import sys
import types

from packnet_tf._lazy import lazy_exports

__version__ = "0.1.0"

#: Each public name and the module it comes from.
_PUBLIC = {
    "CapacityError": "packnet_tf.errors",
    "CapacityReport": "packnet_tf.core.capacity",
    "FusedUpdateError": "packnet_tf.errors",
    "GradualPruning": "packnet_tf.training.gradual",
    "InputContract": "packnet_tf.core.contract",
    "PackNetModel": "packnet_tf.core.model",
    "TaskInference": "packnet_tf.inference.task_inference",
    "TaskInfo": "packnet_tf.core.task",
    "TaskStateError": "packnet_tf.errors",
    "UnsupportedLayerError": "packnet_tf.errors",
    "convert": "packnet_tf.convert",
    "export": "packnet_tf.export",
    "infer_task": "packnet_tf.inference.task_inference",
    "layers": "packnet_tf.layers",
    "prune_fraction_for": "packnet_tf.core.planning",
    "train_task": "packnet_tf.training.driver",
}

#: The modules whose import registers the library's Keras classes
#: (`keras.saving.register_keras_serializable(package="packnet_tf")`).
_SERIALIZABLE = (
    "packnet_tf.layers",
    "packnet_tf.core.model",
    "packnet_tf.training.gradual",
    "packnet_tf.evaluation.baselines",
)

#: The `packnet-tf` command's launcher (see the module docstring).
_COMMAND_LAUNCHER = "packnet_tf_cli"

#: The public names that are subpackages themselves.
_SUBPACKAGES = ("export", "layers")

__all__ = [
    "CapacityError",
    "CapacityReport",
    "FusedUpdateError",
    "GradualPruning",
    "InputContract",
    "PackNetModel",
    "TaskInference",
    "TaskInfo",
    "TaskStateError",
    "UnsupportedLayerError",
    "convert",
    "export",
    "infer_task",
    "layers",
    "prune_fraction_for",
    "train_task",
]


# Each public name is imported on its first use (PEP 562).
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, modules=_SUBPACKAGES)


class _Package(types.ModuleType):
    """This package's module type: `packnet_tf.convert` stays the function.

    Importing the subpackage `packnet_tf.convert` makes Python bind it as
    the package's attribute `convert`, which would hide the public function
    of that name (an eager `from packnet_tf.convert import convert` here
    used to rebind it). This keeps the function in its place.
    """

    def __setattr__(self, name, value):
        if (isinstance(value, types.ModuleType)
                and value.__name__ == f"{__name__}.{name}"
                and name in _PUBLIC and name not in _SUBPACKAGES):
            value = getattr(value, name)
        super().__setattr__(name, value)


# The module's own type, not global state: only this package's attribute
# binding changes.
sys.modules[__name__].__class__ = _Package


def _register_keras_classes():
    """Registers every Keras class of the library with `keras.saving`.

    `import packnet_tf` calls it, except in a process the `packnet-tf`
    command started; calling it again does nothing more.
    """
    for module in _SERIALIZABLE:
        importlib.import_module(module)


if _COMMAND_LAUNCHER not in sys.modules:
    _register_keras_classes()
