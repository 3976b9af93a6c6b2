"""A `.keras` file written by packnet_tf 0.1.0 loads and answers unchanged.

`tests/fixtures/release_0_1_0.keras` was written by
`tests/fixtures/make_release_model.py` with the package as released, before
its modules moved to subpackages; the stored outputs are what that code
predicted. Every packed layer kind, a task's batch norm, an input contract
and the calibration quantiles are in it.
"""

import pathlib

import keras
import numpy as np

import packnet_tf as pn

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def test_a_released_keras_file_loads_with_its_tasks_and_outputs():
    model = keras.saving.load_model(FIXTURES / "release_0_1_0.keras")
    assert isinstance(model, pn.PackNetModel)
    stored = np.load(FIXTURES / "release_0_1_0_outputs.npz")
    assert [t.name for t in model.tasks] == ["first", "second"]
    assert all(t.state == "frozen" and t.score_reference for t in model.tasks)
    assert model.tasks[1].input_contract.class_names == ("a", "b", "c")
    for name in ("first", "second"):
        model.use_task(name)
        np.testing.assert_array_equal(
            model.predict(stored["x"], verbose=0), stored[name])
    model.verify()
