"""SIGKILL `packnet-tf train` at several points; re-running loses nothing.

A run is killed again and again, each time shortly after it finished
another phase (at a random delay, so kills land inside training, inside a
save, between the model file and its record). Every re-run resumes. The
finished model must equal, bit for bit, an uninterrupted run's, and every
task must verify.
"""

import json
import random
import signal
import subprocess
import time

import pytest
from cli_support import (cli_command, cli_env, fingerprints, make_npz_tasks,
                         run_subprocess, tiny_config, write_config)

from packnet_tf.io import checkpoint

#: The run has 10 phases (3 tasks: 4 + 4 + 2); kill after these many.
KILL_AFTER = (1, 3, 5, 8)


def _phases_done(record_path):
    try:
        return len(json.loads(record_path.read_text())["log"])
    except (OSError, ValueError, KeyError):
        return 0


def _run_and_kill(config_path, record_path, after, rng):
    """Starts a run, SIGKILLs it once `after` phases are recorded.

    Returns:
        The phases recorded when it died, and whether it finished first.
    """
    process = subprocess.Popen(
        cli_command("train", config_path, "--quiet", "--deterministic"),
        env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while _phases_done(record_path) < after:
            if process.poll() is not None:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    return _phases_done(record_path), process.returncode == 0


@pytest.mark.slow
def test_sigkill_at_any_point_loses_nothing(tmp_path):
    make_npz_tasks(tmp_path)
    config = tiny_config(tmp_path)
    config["defaults"]["epochs"] = 3
    reference = write_config(tmp_path / "reference.yaml",
                             dict(config, model="ref/model.keras"))
    done = run_subprocess("train", reference, "--quiet", "--deterministic")
    assert done.returncode == 0, done.stderr
    expected = fingerprints(tmp_path / "ref" / "model.keras")

    path = write_config(tmp_path / "run.yaml", config)
    model_path = tmp_path / "out" / "model.keras"
    record_path = tmp_path / "out" / "model.run.json"
    rng = random.Random(0)
    killed_at = []
    for after in KILL_AFTER:
        before = fingerprints(model_path) if model_path.exists() else {}
        recorded, finished = _run_and_kill(path, record_path, after, rng)
        assert recorded >= after or finished
        if not finished:
            killed_at.append(recorded)
        # Whatever the moment of the kill, the file is a whole model, and
        # every task it had finished is exactly as it was.
        checkpoint.check_archive(model_path)
        now = checkpoint.load_model(model_path)
        assert all(d == 0.0 for d in now.verify().values())
        for name, fingerprint in before.items():
            if fingerprint is not None:
                assert fingerprints(model_path)[name] == fingerprint
    # The kills really fell mid-run, at different places.
    assert len(killed_at) == len(KILL_AFTER) and len(set(killed_at)) >= 3, (
        killed_at)
    done = run_subprocess("train", path, "--quiet", "--deterministic")
    assert done.returncode == 0, done.stderr
    model = checkpoint.load_model(model_path)
    assert [t.state for t in model.tasks] == ["frozen"] * 3
    assert model.verify() == {"a": 0.0, "b": 0.0, "c": 0.0}
    # Resumed four times, the result is the uninterrupted run's, bit for bit.
    assert fingerprints(model_path) == expected
    leftovers = [p.name for p in (tmp_path / "out").iterdir()
                 if ".tmp-" in p.name]
    assert leftovers == []
    print(f"killed after {killed_at} of 10 phases")
