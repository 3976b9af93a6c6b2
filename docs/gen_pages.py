"""Writes the generated parts of the site at build time (mkdocs-gen-files).

- Tables: a line `<!-- table: NAME -->` in any page becomes the table
  `docs/results_tables.py` makes from `benchmarks/results/*.json`
  (`NAME` one of its `TABLES`), or the package layout (`layout`, from the
  subpackages' docstrings). An unknown name fails the build. A line
  `<!-- file: PATH -->` becomes the repository file PATH as a code block,
  and `<!-- cli: reference -->` every `packnet-tf` command's `--help`.
- Figures: every benchmark PNG (but quick runs') is copied from
  `benchmarks/results/` to `results/img/`.
- API reference: one page per public module of `packnet_tf/`, found by
  walking the package (so a new module gets its page with no edit here),
  and its navigation (`reference/SUMMARY.md`, read by mkdocs-literate-nav).

Run by `mkdocs build` / `mkdocs serve`; nothing is written into `docs/`.
"""

import ast
import os
import pathlib
import re
import subprocess
import sys

import mkdocs_gen_files

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
PACKAGE = ROOT / "packnet_tf"
RESULTS = ROOT / "benchmarks" / "results"

sys.path.insert(0, str(DOCS))
import results_tables  # noqa: E402  (beside this script, not a package)

MARKER = re.compile(r"^<!-- (table|file|cli): ([\w./-]+) -->$", re.M)


# API reference --------------------------------------------------------------


def _docstring(path):
    return ast.get_docstring(ast.parse(path.read_text())) or ""


def public_modules():
    """`(dotted parts, source path)` of every public module and package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(part.startswith("_") for part in parts):
            continue
        yield parts, path


def reference_page(parts, path):
    """The reference page's path (under `reference/`) of a module."""
    if path.name == "__init__.py":
        return pathlib.PurePosixPath(*parts, "index.md")
    return pathlib.PurePosixPath(*parts).with_suffix(".md")


def _defining_module(package, name):
    """The module a package's `__init__` takes `name` from, if it says.

    Either `from MODULE import name`, or a `{"name": "MODULE"}` table of
    names imported on first use (`packnet_tf._lazy.lazy_exports`).
    """
    init = PACKAGE.joinpath(*package.split(".")[1:], "__init__.py")
    for node in ast.walk(ast.parse(init.read_text())):
        if isinstance(node, ast.ImportFrom) and any(
                alias.name == name for alias in node.names):
            return node.module
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if (isinstance(key, ast.Constant) and key.value == name
                        and isinstance(value, ast.Constant)):
                    return value.value
    return package


def _root_constant(name):
    """A constant of the package root (`_PUBLIC`, `_SUBPACKAGES`), by ast."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    for node in tree.body:
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign)
                   else [])
        if any(getattr(t, "id", None) == name for t in targets):
            return ast.literal_eval(node.value)
    raise KeyError(f"packnet_tf/__init__.py defines no {name}")


def _root_page():
    """The package root: its docstring and its public names, linked."""
    lines = ["::: packnet_tf", "    options:", "      members: false", "",
             "## Public names", "",
             "`import packnet_tf as pn` gives these names "
             "(`pn.PackNetModel`, `pn.train_task`, ...):", ""]
    subpackages = _root_constant("_SUBPACKAGES")
    for name, module in sorted(_root_constant("_PUBLIC").items()):
        if name in subpackages:
            lines.append(f"- `{name}`: the subpackage [`{module}`][{module}]")
            continue
        if PACKAGE.joinpath(*module.split(".")[1:]).is_dir():
            module = _defining_module(module, name)
        lines.append(f"- [`{name}`][{module}.{name}] (`{module}`)")
    return "\n".join(lines) + "\n"


def _package_page(dotted, parts):
    children = []
    directory = PACKAGE.joinpath(*parts[1:])
    for child in sorted(directory.iterdir()):
        stem = child.name.removesuffix(".py")
        if stem.startswith("_") or stem == "__pycache__":
            continue
        if child.suffix == ".py" or (child / "__init__.py").exists():
            summary = _docstring(child if child.suffix == ".py"
                                 else child / "__init__.py")
            first = summary.split("\n\n")[0].replace("\n", " ")
            children.append(f"- [`{dotted}.{stem}`][{dotted}.{stem}]: "
                            f"{first}")
    text = f"::: {dotted}\n    options:\n      members: false\n"
    if children:
        text += "\n## Modules\n\n" + "\n".join(children) + "\n"
    return text


def write_reference():
    nav = mkdocs_gen_files.Nav()
    for parts, path in public_modules():
        page = reference_page(parts, path)
        nav[parts] = page.as_posix()
        dotted = ".".join(parts)
        if dotted == "packnet_tf":
            text = _root_page()
        elif path.name == "__init__.py":
            text = _package_page(dotted, parts)
        else:
            text = f"::: {dotted}\n"
        with mkdocs_gen_files.open(f"reference/{page}", "w") as f:
            f.write(text)
    with mkdocs_gen_files.open("reference/SUMMARY.md", "w") as f:
        f.writelines(nav.build_literate_nav())


# The package layout (design notes) ------------------------------------------


def _layer(docstring):
    found = re.search(r"Layer (\d+)", docstring)
    return int(found.group(1)) if found else 0


def layout_table():
    """Each part of the package, its layer and what it holds."""
    rows = []
    for path in sorted(PACKAGE.iterdir()):
        name = path.name.removesuffix(".py")
        if name.startswith("_") or name == "__pycache__":
            continue
        if path.is_dir() and (path / "__init__.py").exists():
            doc = _docstring(path / "__init__.py")
            page = f"reference/packnet_tf/{name}/index.md"
            modules = sorted(
                p.name.removesuffix(".py") for p in path.iterdir()
                if p.suffix == ".py" and not p.name.startswith("_")
                or (p / "__init__.py").exists())
        elif path.suffix == ".py":
            doc = _docstring(path)
            page = f"reference/packnet_tf/{name}.md"
            modules = []
        else:
            continue
        summary = doc.split("\n\n")[0].replace("\n", " ")
        rows.append((_layer(doc), name, page, summary, modules))
    rows.sort(key=lambda row: (row[0], row[1]))
    return results_tables.table(
        ["layer", "part", "what it holds", "modules"],
        [[str(layer), f"[`{name}`]({page})", summary,
          ", ".join(f"`{m}`" for m in modules) or "-"]
         for layer, name, page, summary, modules in rows])


# Tables and figures -----------------------------------------------------------


def render(kind, name):
    """The Markdown a marker `<!-- KIND: NAME -->` stands for."""
    if kind == "file":
        path = ROOT / name
        language = {".yaml": "yaml", ".yml": "yaml", ".py": "python",
                    ".json": "json"}.get(path.suffix, "text")
        return f"```{language}\n{path.read_text().rstrip()}\n```\n"
    if kind == "cli":
        return cli_reference()
    if name == "layout":
        return layout_table()
    if name not in results_tables.TABLES:
        raise KeyError(
            f"A page names the table {name!r}, which docs/results_tables.py "
            f"does not make. Known: {sorted(results_tables.TABLES)}")
    return results_tables.TABLES[name]()


def write_tables():
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text()
        if not MARKER.search(text):
            continue
        text = MARKER.sub(
            lambda m: render(m.group(1), m.group(2)).rstrip("\n"), text)
        with mkdocs_gen_files.open(page.relative_to(DOCS).as_posix(), "w") as f:
            f.write(text)


# The packnet-tf reference ---------------------------------------------------


def _help(*args):
    """`packnet-tf ARGS --help`, from the launcher (no TensorFlow)."""
    env = dict(os.environ, COLUMNS="80", PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, str(ROOT / "packnet_tf_cli.py"), *args, "--help"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        check=True)
    return done.stdout.rstrip()


def cli_reference():
    """Every command's `--help`, each under its own heading."""
    top = _help()
    commands = re.search(r"\{([\w,-]+)\}", top).group(1).split(",")
    parts = ["### `packnet-tf`", "", "```text", top, "```", ""]
    for command in commands:
        parts += [f"### `packnet-tf {command}`", "", "```text",
                  _help(command), "```", ""]
    return "\n".join(parts)


def write_figures():
    for png in sorted(RESULTS.glob("*.png")):
        if "_quick" in png.name:
            continue
        with mkdocs_gen_files.open(f"results/img/{png.name}", "wb") as f:
            f.write(png.read_bytes())


write_reference()
write_tables()
write_figures()
