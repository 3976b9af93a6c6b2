"""The documentation: the site builds strictly, the README stays a landing page.

`mkdocs build --strict` fails on a broken link or anchor, a page missing
from the navigation, a docstring griffe cannot read, or a results table
whose JSON is missing (`docs/gen_pages.py`). Running it here makes the
README's test command build the documentation too.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

#: The command CI runs, which the README's "Set up" tells users to run.
TEST_COMMAND = "python -m pytest -q -rs"


def _results_tables():
    path = ROOT / "docs" / "results_tables.py"
    spec = importlib.util.spec_from_file_location("results_tables", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_is_a_landing_page():
    lines = README.read_text().splitlines()
    assert len(lines) < 250, (
        f"README.md has {len(lines)} lines; keep it a landing page (under "
        "250) and move the rest into docs/.")


def test_readme_keeps_the_test_command():
    assert TEST_COMMAND in README.read_text()


def test_readme_headline_table_is_the_results_data():
    table = _results_tables().headline()
    assert table in README.read_text(), (
        "README.md's results table differs from benchmarks/results/*.json; "
        "paste docs/results_tables.py's headline() output:\n" + table)


@pytest.mark.slow
def test_docs_build_strictly(tmp_path):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1",
               DISABLE_MKDOCS_2_WARNING="true")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict",
         "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (
        f"mkdocs build --strict exited {done.returncode}:\n"
        f"{done.stdout}\n{done.stderr}")
    site = tmp_path / "site"
    assert (site / "index.html").exists()
    assert (site / "results" / "img" / "split_cifar10_5_accuracy.png").exists()
    assert (site / "reference" / "packnet_tf" / "core" / "model"
            / "index.html").exists()
