"""The packed-layer registry: its entries, their checks, and the docs' list."""

import pathlib
import re

import keras
import pytest

import packnet_tf as pn
from packnet_tf import layers
from packnet_tf.convert import twins
from packnet_tf.layers import PackedLayerSpec, registry

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
#: Where the packed layers are listed, and where adding one is explained.
LAYERS_PAGE = DOCS / "concepts" / "packing.md"
DESIGN_PAGE = DOCS / "design.md"

BUILT_IN = [
    "PackedDense", "PackedConv1D", "PackedConv2D", "PackedDepthwiseConv2D",
    "PackedSeparableConv2D", "TaskBatchNormalization",
]


class SubclassedDense(keras.layers.Dense):
    """A Keras subclass: it may compute differently, so it has no entry."""


class SubclassedPackedDense(layers.PackedDense):
    """A packed subclass without an entry of its own."""


def _spec(**overrides):
    arguments = {
        "keras_class": SubclassedDense, "packed_class": SubclassedPackedDense,
        "weights": {"kernel": "kernel", "bias": "bias"},
        "example": lambda: (SubclassedDense(2), (3,))}
    arguments.update(overrides)
    return PackedLayerSpec(**arguments)


def test_built_in_entries_cover_every_packed_layer():
    assert [spec.name for spec in registry.specs()] == BUILT_IN
    packed = {getattr(layers, name) for name in layers.__all__}
    packed = {cls for cls in packed if isinstance(cls, type) and issubclass(
        cls, layers.PackedLayer) and cls is not layers.PackedLayer}
    assert {spec.packed_class for spec in registry.specs()} == packed


@pytest.mark.parametrize("spec", registry.specs(), ids=lambda s: s.name)
def test_weight_map_names_exactly_the_weights_of_both_layers(spec):
    keras_layer, shape = spec.example()
    keras_layer.build((2,) + shape)
    assert {w.name for w in keras_layer.weights} == set(spec.weights)
    packed_cls, config = twins.twin_config(keras_layer, max_tasks=2)
    assert packed_cls is spec.packed_class
    packed = packed_cls.from_config(config)
    packed.build((2,) + shape)
    names = [n for n, _, _ in packed.packed_kernels()] + [
        v.name for v in packed.per_task_variables()]
    assert sorted(names) == sorted(spec.weights.values())
    if spec.folds_batch_norm:
        assert spec.fold_kernel in spec.weights


def test_lookups_by_keras_class_are_exact_and_by_packed_class_walk_bases():
    dense = registry.spec_for_keras_class(keras.layers.Dense)
    assert dense.packed_class is layers.PackedDense
    assert registry.spec_for_keras_class(SubclassedDense) is None
    assert registry.spec_for_keras_class(keras.layers.Conv3D) is None
    assert registry.spec_for_packed_class(SubclassedPackedDense) is dense
    assert registry.spec_for_packed_class(keras.layers.Dense) is None
    depthwise = registry.spec_for_keras_class(keras.layers.DepthwiseConv2D)
    assert depthwise.keras_weight("depthwise_kernel") == "kernel"
    with pytest.raises(KeyError, match="declares no weight 'pointwise'"):
        depthwise.keras_weight("pointwise")


@pytest.mark.parametrize("overrides, error, match", [
    ({"keras_class": int}, TypeError,
     ("Expected `keras_class` to be a Keras layer class, e.g. "
     "keras.layers.Conv3D. Received: int.")),
    ({"packed_class": keras.layers.Dense}, TypeError,
     ("Expected `packed_class` to be a subclass of "
     "packnet_tf.layers.PackedLayer. Received: Dense.")),
    ({"weights": {}}, ValueError,
     "Expected `weights` to be a non-empty mapping"),
    ({"weights": {"kernel": ""}}, ValueError,
     "non-empty strings\\). Received: 'kernel': ''"),
    ({"weights": {"kernel": "kernel", "bias": "kernel"}}, ValueError,
     ("Expected each packed weight to receive one Keras weight. Received "
     "several for 'kernel'")),
    ({"example": None}, TypeError,
     "Expected `example` to be a callable returning"),
    ({"fold_kernel": "gamma"}, ValueError,
     ("Expected `fold_kernel` to be one of the Keras weights in `weights` "
     "\\(kernel, bias\\) or None. Received: fold_kernel='gamma'")),
    ({"fold_kernel": "kernel", "fold_axes": 0}, ValueError,
     "Expected `fold_axes` to be a positive int"),
    ({"config_from_keras": 3}, TypeError,
     "Expected `config_from_keras` to be None or a callable"),
])
def test_bad_entries_say_what_was_expected(overrides, error, match):
    with pytest.raises(error, match=match):
        _spec(**overrides)


def test_duplicate_entries_are_refused():
    before = registry.specs()
    with pytest.raises(ValueError, match=(
            "Expected one entry per keras_class. Received a second entry "
            "for Dense, which the entry of PackedDense \\(Keras Dense\\) "
            "already has. Call `unregister")):
        registry.register(_spec(keras_class=keras.layers.Dense))
    with pytest.raises(ValueError, match=(
            "Expected one entry per packed_class. Received a second entry "
            "for PackedConv2D")):
        registry.register(_spec(packed_class=layers.PackedConv2D))
    with pytest.raises(TypeError, match="Expected a `PackedLayerSpec`. "
                       "Received: dict"):
        registry.register({"keras_class": SubclassedDense})
    assert registry.specs() == before


def test_registered_adds_an_entry_for_a_block_only():
    before = registry.specs()
    spec = _spec()
    with pytest.raises(RuntimeError, match="inside"), registry.registered(
            spec):
        assert registry.specs() == before + (spec,)
        assert registry.spec_for_keras_class(SubclassedDense) is spec
        assert registry.spec_for_packed_class(
            SubclassedPackedDense) is spec
        raise RuntimeError("inside")
    assert registry.specs() == before
    assert registry.spec_for_packed_class(
        SubclassedPackedDense).packed_class is layers.PackedDense
    with pytest.raises(ValueError, match=(
            "Expected a registered entry. Received one for "
            "SubclassedPackedDense, which is not registered")):
        registry.unregister(spec)


def test_messages_name_the_registered_layers():
    spec = _spec()
    with registry.registered(spec):
        assert twins.supported_message().startswith(
            "Supported layers with weights: Dense, Conv1D, Conv2D, "
            "DepthwiseConv2D, SeparableConv2D, BatchNormalization, "
            "SubclassedDense (packed per task)")
        trunk = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        with pytest.raises(pn.UnsupportedLayerError, match=(
                "Use PackedDense, PackedConv1D, PackedConv2D, "
                "PackedDepthwiseConv2D, PackedSeparableConv2D, "
                "TaskBatchNormalization, SubclassedPackedDense")):
            pn.PackNetModel(trunk, max_tasks=2)


def _docs_layers_item():
    text = LAYERS_PAGE.read_text()
    match = re.search(r"^\*\*Layers\*\* \(`packnet_tf\.layers`\):(.*?)^$",
                      text, flags=re.DOTALL | re.MULTILINE)
    assert match, f"{LAYERS_PAGE} has no '**Layers** (`packnet_tf.layers`):'"
    return " ".join(match.group(1).split())


def test_docs_list_every_registered_layer_with_its_keras_class():
    item = _docs_layers_item()
    for spec in registry.specs():
        entry = f"`{spec.name}` ({spec.keras_class.__name__})"
        assert entry in item, f"The docs' Layers paragraph lacks {entry}"


def test_design_notes_name_the_registry_as_the_place_to_add_a_layer():
    layout = DESIGN_PAGE.read_text().split("## Adding a packed layer", 1)[1]
    assert "registry.py" in layout
    assert "to add a layer" in " ".join(layout.split())
