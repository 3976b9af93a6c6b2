"""Public names of a package, imported on their first use (PEP 562).

The package root and each subpackage that re-exports its modules' names
list them with `lazy_exports` instead of importing those modules eagerly,
so that importing one light module (the TF-free ones the `packnet-tf`
command reads before TensorFlow) does not import the rest.
"""

import importlib


def lazy_exports(package, exports, modules=()):
    """`__getattr__` and `__dir__` for a package's lazily imported names.

    Args:
        package: the package's `__name__`.
        exports: `{public name: module it is defined in}`.
        modules: the public names that are the modules themselves (a
            subpackage such as `packnet_tf.export`), not a name in them.

    Returns:
        `(__getattr__, __dir__)`, to assign in the package's `__init__`.

    Example:

    >>> __getattr__, __dir__ = lazy_exports(
    ...     __name__, {"train_task": "packnet_tf.training.driver"})
    """
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name):
        if name not in exports:
            raise AttributeError(
                f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(exports[name])
        value = module if name in modules else getattr(module, name)
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
