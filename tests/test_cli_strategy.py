"""`packnet-tf train --strategy`: strategies, TF_CONFIG roles, worker paths."""

import json

import pytest
from cli_support import (make_npz_tasks, run_cli, run_subprocess, tiny_config,
                         write_config)

from packnet_tf.cli import strategy
from packnet_tf.io import checkpoint


@pytest.mark.slow
def test_mirrored_run_trains_and_verifies(tmp_path):
    # A process of its own: TensorFlow's collective keys are per process,
    # and a second MirroredStrategy in the test process would share them.
    make_npz_tasks(tmp_path)
    config = tiny_config(tmp_path, tasks=(("a", 2), ("b", 3)))
    config["defaults"].update(prune_fraction=0.5, epochs=1)
    path = write_config(tmp_path / "run.yaml", config)
    result = run_subprocess("train", path, "--quiet", "--strategy",
                            "mirrored")
    assert result.returncode == 0, result.stderr[-3000:]
    model = checkpoint.load_model(tmp_path / config["model"])
    assert [t.state for t in model.tasks] == ["frozen", "frozen"]
    assert model.verify() == {"a": 0.0, "b": 0.0}


def test_multiworker_without_tf_config_is_a_clear_error(tmp_path,
                                                        monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    make_npz_tasks(tmp_path)
    path = write_config(tmp_path / "run.yaml", tiny_config(tmp_path))
    code, out, err = run_cli("train", path, "--strategy", "multiworker")
    assert code == 2
    assert "needs TF_CONFIG" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists() or not any(
        (tmp_path / "run").iterdir())


@pytest.mark.parametrize("config, expected", [
    ({"cluster": {"worker": ["a:1", "b:2"]},
      "task": {"type": "worker", "index": 0}}, (0, True)),
    ({"cluster": {"worker": ["a:1", "b:2"]},
      "task": {"type": "worker", "index": 1}}, (1, False)),
    ({"cluster": {"chief": ["c:0"], "worker": ["a:1"]},
      "task": {"type": "worker", "index": 0}}, (0, False)),
    ({"cluster": {"chief": ["c:0"], "worker": ["a:1"]},
      "task": {"type": "chief", "index": 0}}, (0, True)),
])
def test_worker_role_from_tf_config(config, expected):
    assert strategy.worker_role({"TF_CONFIG": json.dumps(config)}) == expected


def test_bad_tf_config_says_what_it_needs():
    with pytest.raises(strategy.StrategyError, match="'task' of 'type'"):
        strategy.worker_role({"TF_CONFIG": '{"cluster": {}}'})


def test_non_chief_workers_write_elsewhere(tmp_path):
    path = strategy.worker_model_path(str(tmp_path / "m.keras"), 1)
    assert path.endswith("m.keras") and not path.startswith(str(tmp_path))
    assert "worker1" in path
