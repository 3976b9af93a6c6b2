"""The README's main job, the digits example, runs and forgets nothing."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_digits_example_packs_five_tasks(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "digits.py"),
         "--out", str(tmp_path), "--epochs", "2", "--finetune-epochs", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "task 5/5 digits_8_9" in result.stdout
    # The exit code is 1 if any task's outputs changed; check the table too.
    table = result.stdout.split("outputs changed", 1)[1]
    assert table.count("False") == 5 and "True" not in table.split("Who")[0]
    assert (tmp_path / "digits.keras").is_file()
