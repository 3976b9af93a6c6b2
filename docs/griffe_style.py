"""A griffe extension: reads the package's docstring style as Google style.

Two habits of packnet_tf's docstrings are not Google style as griffe parses
it, and would lose text in the API reference (or fail `mkdocs build
--strict` with a warning):

- Examples are doctest lines at the docstring's own indentation after an
  `Example:` line. Markdown would read `>>>` as nested quotes; they become
  a fenced `pycon` block.
- One `Args:` entry may name several arguments whose names wrap
  (`strides, padding, data_format,` / `dilation_rate: as in ...`), and a
  description may go on without indentation. Wrapped names are joined
  onto the line with the colon, and an unindented continuation is
  indented, so every entry is one `name: description` item.

Loaded by mkdocstrings (`mkdocs.yml`, `extensions:`); it changes only the
text griffe parses, never the package.
"""

import re

import griffe

_SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters):\s*$")
_NEXT_SECTION = re.compile(r"^\s*[A-Z][A-Za-z ]*:\s*$")


def _indent(line):
    return len(line) - len(line.lstrip())


def fence_doctests(lines):
    """Wraps each unindented run of doctest lines in a `pycon` fence."""
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(">>>"):
            if out and out[-1].strip():
                out.append("")
            out.append("```pycon")
            while i < len(lines) and lines[i].strip():
                out.append(lines[i])
                i += 1
            out.append("```")
            continue
        out.append(line)
        i += 1
    return out


def join_wrapped_args(lines):
    """Makes every `Args:` entry one `name: description` item (see above)."""
    out = []
    i = 0
    while i < len(lines):
        match = _SECTION.match(lines[i])
        out.append(lines[i])
        i += 1
        if not match:
            continue
        base = len(match.group(1))
        item = None  # the entries' indentation, from the first one
        names = []  # wrapped names waiting for their colon
        last = ""  # the last line of the previous entry
        while i < len(lines):
            line = lines[i]
            if not line.strip():
                if names:
                    out.extend(names)
                    names = []
                if i + 1 < len(lines) and (
                        _indent(lines[i + 1]) <= base
                        or _NEXT_SECTION.match(lines[i + 1])):
                    break
                out.append(line)
                i += 1
                continue
            if _indent(line) <= base:
                break
            if item is None:
                item = _indent(line)
            if _indent(line) > item:
                out.append(line)
                last = line
            elif ":" in line:
                if names:
                    joined = " ".join(n.strip() for n in names)
                    line = " " * item + joined + " " + line.strip()
                    names = []
                out.append(line)
                last = line
            elif names or (re.match(r"[A-Za-z_*]", line.strip())
                           and last.rstrip().endswith(".")):
                names.append(line)
            else:
                line = " " * (item + 4) + line.strip()
                out.append(line)
                last = line
            i += 1
        out.extend(names)
    return out


class PackageDocstrings(griffe.Extension):
    """Rewrites each docstring's text before griffe parses it."""

    def on_instance(self, *, obj, **kwargs):
        docstring = obj.docstring
        if docstring is None or not docstring.value:
            return
        lines = docstring.value.split("\n")
        lines = join_wrapped_args(fence_doctests(lines))
        docstring.value = "\n".join(lines)
