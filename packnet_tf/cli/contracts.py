"""Input contracts on the command line: made from a run config, read back.

`packnet-tf train` records each task's contract from its config (the data
source's class names, `preprocess` with "auto" resolved the way the data
pipeline resolves it, `resize`, `from_logits`). `eval` and `export` read
their data the way the contract says, so `--preprocess` and `--classes`
are only overrides.
"""

from packnet_tf.core.contract import InputContract

#: The resize method `packnet_tf.data.batches` applies.
PIPELINE_RESIZE = "bilinear"


def resolved_preprocess(source, preprocess):
    """`preprocess` with "auto" made explicit for `source`'s examples.

    "auto" scales integer pixels to [0, 1] ("unit") and leaves floats as
    they are ("none"), as `packnet_tf.data.batches` does.

    Args:
        source: a `DataSource`.
        preprocess: the config's value.

    Returns:
        "unit", "none" or the value itself.
    """
    if preprocess != "auto":
        return preprocess
    if source.encoded:
        return "unit"
    dtype = source.dataset(source.train_split).element_spec[0].dtype
    return "unit" if dtype.is_integer else "none"


def trained_on_pixels(source, preprocess):
    """Whether `source`'s examples are 0-255 pixels before `preprocess`.

    Images and integer arrays are; float arrays are too when a pixel
    preprocessing ("unit", a `keras.applications` one) was asked for, and
    are not under "none" (values used as they are, e.g. already in [0, 1]).
    """
    if source.encoded or preprocess != "none":
        return True
    return source.dataset(source.train_split).element_spec[0].dtype.is_integer


def contract_for(source, options):
    """The `InputContract` of a task trained from `source` with `options`.

    Args:
        source: the task's `DataSource`.
        options: the task's config options (`preprocess`, `resize`,
            `from_logits`).

    Returns:
        An `InputContract`.
    """
    preprocess = resolved_preprocess(source, options["preprocess"])
    return InputContract(
        preprocess=preprocess,
        resize=PIPELINE_RESIZE if options["resize"] else None,
        class_names=tuple(str(n) for n in source.class_names),
        from_logits=bool(options["from_logits"]),
        pixels=trained_on_pixels(source, preprocess))


def data_options(info, preprocess=None, classes=None):
    """How to read data for task `info`: its contract, overridden.

    Args:
        info: the task's `TaskInfo`.
        preprocess: `--preprocess`, or None to follow the contract.
        classes: `--classes` as a list, or None to follow the contract.

    Returns:
        A dict of `preprocess`, `resize` (a bool, for
        `packnet_tf.data.batches`) and `classes` (a list or None).

    Raises:
        ValueError: if the contract resizes with a method the data pipeline
            does not apply.
    """
    contract = info.input_contract
    if contract is None:
        # Trunk-ready floats: today's defaults.
        return {"preprocess": preprocess or "auto", "resize": True,
                "classes": classes}
    if contract.resize not in (None, PIPELINE_RESIZE):
        raise ValueError(
            f"task {info.name!r} resizes images with {contract.resize!r}, "
            f"but the data pipeline resizes with {PIPELINE_RESIZE!r}. "
            "Pass data of the trunk's size.")
    if classes is None and contract.class_names is not None:
        classes = list(contract.class_names)
    return {"preprocess": preprocess or contract.preprocess,
            "resize": contract.resize is not None, "classes": classes}


def describe(info):
    """The contract line `packnet-tf info` prints for a task."""
    if info.input_contract is None:
        return "trunk-ready float inputs (no input contract recorded)"
    return info.input_contract.describe()

