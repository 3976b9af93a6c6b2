"""The package's layout: few root modules, and imports only go down.

The layers, bottom to top (docs/design.md says why):
errors -> compat -> layers -> core -> io -> data -> inference ->
training, convert -> evaluation -> export -> cli. A module may import its
own subpackage and any lower layer, never a higher one or a sibling of the
same rank; every subpackage's docstring says its layer.
"""

import ast
import pathlib

import pytest

import packnet_tf

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "packnet_tf"

#: Each part of the package and its layer.
LAYERS = {
    "errors": 0,
    "_lazy": 0,
    "compat": 1,
    "layers": 2,
    "core": 3,
    "io": 4,
    "data": 5,
    "inference": 6,
    "training": 7,
    "convert": 7,
    "evaluation": 8,
    "export": 9,
    "cli": 10,
}


def _part(dotted):
    """`packnet_tf.core.model` -> "core"; the package itself -> None.

    A public name of the package root (`packnet_tf.PackNetModel`) is the
    part it comes from.
    """
    parts = dotted.split(".")
    if len(parts) == 1 or parts[1] == "__version__":
        return None
    if parts[1] not in LAYERS and parts[1] in packnet_tf._PUBLIC:
        return _part(packnet_tf._PUBLIC[parts[1]])
    return parts[1]


def _imports(path):
    """Every packnet_tf module `path` imports, at any depth of its code."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and (
                node.module.split(".")[0] == "packnet_tf"):
            if node.module == "packnet_tf":
                found += [f"packnet_tf.{a.name}" for a in node.names]
            else:
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names
                      if a.name.split(".")[0] == "packnet_tf"]
    return found


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        yield path, (relative.parts[0].removesuffix(".py")
                     if relative.parts[0] != "__init__.py" else None)


def test_at_most_four_modules_at_the_package_root():
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= 4, root


def test_every_part_has_a_layer_and_every_subpackage_says_it():
    parts = {p.name.removesuffix(".py") for p in PACKAGE.iterdir()
             if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert parts - {"__init__"} == set(LAYERS)
    for name, rank in LAYERS.items():
        init = PACKAGE / name / "__init__.py"
        if init.exists():
            doc = ast.get_docstring(ast.parse(init.read_text()))
            assert doc and f"Layer {rank}" in doc, name


@pytest.mark.parametrize("path,part", list(_modules()),
                         ids=lambda v: str(v) if isinstance(v, str) else None)
def test_no_module_imports_a_higher_layer(path, part):
    if part is None:  # packnet_tf/__init__.py: the public names
        return
    for target in _imports(path):
        other = _part(target)
        if other is None or other == part:
            continue
        assert LAYERS[other] < LAYERS[part], (
            f"{path.relative_to(PACKAGE.parent)} (layer {LAYERS[part]}, "
            f"{part}) imports {target} (layer {LAYERS[other]}, {other})")
