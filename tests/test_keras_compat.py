"""Pins every private Keras API in `packnet_tf.compat.keras_internals`.

Each test fails when a Keras release removes or changes what the package
relies on; fix `keras_internals` (and its callers) then, not the test alone.
"""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from packnet_tf import PackNetModel, layers
from packnet_tf.compat import keras_internals as compat

LOCKED = "You cannot add new elements of state"


class _Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.body = keras.layers.Dense(2, name="body")

    def build(self, input_shape):
        self.body.build(input_shape)

    def call(self, x):
        return self.body(x)


class _OpenSubclassed(compat.OpenStateMixin, _Subclassed):
    pass


def _chain():
    """A functional model x -> first -> second, and its three tensors."""
    x = keras.Input((3,), name="x")
    first = keras.layers.Dense(4, name="first")
    second = keras.layers.Dense(2, name="second")
    hidden = first(x)
    y = second(hidden)
    return keras.Model(x, y), first, second, (x, hidden, y)


def _compiled(model=None):
    model = model or keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.0), "mse")
    return model


# -- OpenStateMixin (model.py's `_lock_state` override) -------------------

def test_a_built_subclassed_model_locks_its_state_without_the_mixin():
    model = _Subclassed()
    model.build((None, 3))
    with pytest.raises(ValueError, match=LOCKED):
        model.head = keras.layers.Dense(5)


def test_build_calls_the_lock_state_hook_once():
    calls = []

    class Spy(_Subclassed):
        def _lock_state(self):
            calls.append(self.name)
            super()._lock_state()

    model = Spy(name="spy")
    model.build((None, 3))
    assert calls == ["spy"]
    assert "_lock_state" in vars(keras.layers.Layer)


def test_the_mixin_lets_a_built_model_gain_a_tracked_head():
    model = _OpenSubclassed()
    model.build((None, 3))
    model.head = keras.layers.Dense(5, name="head")
    model.head.build((None, 2))
    assert [layer.name for layer in model.layers] == ["body", "head"]
    assert len(model.weights) == 4


def _ended_task_model(cls):
    trunk = keras.Sequential([keras.Input((4,)),
                              layers.PackedDense(3, name="dense")])
    model = cls(trunk, max_tasks=3)
    model.add_task("a", num_classes=2)
    model.prune(0.5)
    model.end_task()
    return model


def test_packnet_model_adds_a_task_after_an_explicit_build():
    model = _ended_task_model(PackNetModel)
    model.build((None, 4))
    model.add_task("b", num_classes=2)
    assert [t.name for t in model.tasks] == ["a", "b"]


def test_without_the_override_build_locks_packnet_models_heads_out():
    class Locked(PackNetModel):
        _lock_state = keras.layers.Layer._lock_state

    model = _ended_task_model(Locked)
    model.build((None, 4))
    with pytest.raises(ValueError, match=LOCKED):
        model.add_task("b", num_classes=2)


# -- is_functional (twins.py) ----------------------------------------------

def test_is_functional_tells_functional_models_apart():
    functional = _chain()[0]
    sequential = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert compat.is_functional(functional)
    assert not compat.is_functional(sequential)
    assert not compat.is_functional(_Subclassed())
    assert not compat.is_functional(keras.layers.Dense(2))
    assert isinstance(functional, keras.Model)


# -- keras_history / inbound_node (convert.py) ----------------------------

def test_keras_history_names_the_layer_call_and_output():
    _, first, second, (x, hidden, y) = _chain()
    assert compat.keras_history(y) == (second, 0, 0)
    assert compat.keras_history(hidden) == (first, 0, 0)
    operation, _, _ = compat.keras_history(x)
    assert isinstance(operation, keras.layers.InputLayer)


def test_inbound_node_gives_the_calls_inputs():
    _, first, second, (x, hidden, _) = _chain()
    assert compat.inbound_node(second, 0).input_tensors == [hidden]
    assert compat.inbound_node(first, 0).input_tensors == [x]


def test_a_shared_layer_has_one_node_per_call():
    x = keras.Input((3,))
    shared = keras.layers.Dense(3, name="shared")
    once = shared(x)
    twice = shared(once)
    assert compat.keras_history(twice) == (shared, 1, 0)
    assert compat.inbound_node(shared, 1).input_tensors == [once]


def test_a_sequential_models_output_comes_from_its_last_layer():
    last = keras.layers.Dense(2, name="last")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), last])
    operation, node_index, _ = compat.keras_history(model.outputs[0])
    assert operation is last
    node = compat.inbound_node(operation, node_index)
    assert len(node.input_tensors) == 1


# -- config_keras_histories (export/folding.py) ----------------------------

def test_config_lists_each_layers_inputs_and_the_outputs():
    config = _chain()[0].get_config()
    inbound = {entry["name"]: entry["inbound_nodes"]
               for entry in config["layers"]}
    assert compat.config_keras_histories(inbound["x"]) == []
    assert compat.config_keras_histories(inbound["first"]) == [("x", 0, 0)]
    assert compat.config_keras_histories(inbound["second"]) == [
        ("first", 0, 0)]
    assert compat.CONFIG_TENSOR_CLASS in repr(inbound["second"])


def test_config_outputs_are_bare_triples():
    single = _chain()[0].get_config()
    assert single["output_layers"] == ["second", 0, 0]
    assert compat.config_output_histories(single) == [("second", 0, 0)]
    x = keras.Input((3,), name="x")
    hidden = keras.layers.Dense(4, name="first")(x)
    y = keras.layers.Dense(2, name="second")(hidden)
    double = keras.Model(x, [hidden, y]).get_config()
    assert double["output_layers"] == [["first", 0, 0], ["second", 0, 0]]
    assert compat.config_output_histories(double) == [
        ("first", 0, 0), ("second", 0, 0)]
    # Not tensor dicts: the inbound-node reader finds nothing in them.
    assert compat.config_keras_histories(double["output_layers"]) == []


def test_config_keras_histories_reads_nested_structures_in_order():
    tensor = {"class_name": compat.CONFIG_TENSOR_CLASS,
              "config": {"keras_history": ["a", 1, 2]}}
    other = {"class_name": compat.CONFIG_TENSOR_CLASS,
             "config": {"keras_history": ["b", 0, 0]}}
    assert compat.config_keras_histories(
        [{"args": [tensor, (other,)], "kwargs": {"n": 3}}]) == [
            ("a", 1, 2), ("b", 0, 0)]


# -- compile_state (model.py) ----------------------------------------------

def test_compile_state_changes_with_each_compile_and_only_then():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert compat.compile_state(model) is None
    _compiled(model)
    first = compat.compile_state(model)
    assert first is not None
    model.fit(np.zeros((4, 3)), np.zeros((4, 2)), verbose=0)
    model.predict(np.zeros((2, 3)), verbose=0)
    assert compat.compile_state(model) is first
    assert model.predict_function is not None
    _compiled(model)
    assert compat.compile_state(model) is not first
    # compile() drops the traced functions, which is why a cache keyed on
    # the compile state stays valid.
    assert model.predict_function is None


# -- traced_predict_function, retrace (model.py, baselines.py) -------------

def test_keras_keeps_traced_functions_and_retraces_what_retrace_drops():
    model = _compiled(keras.Sequential([keras.Input((3,)),
                                        keras.layers.Dense(2)]))
    x, y = np.zeros((4, 3)), np.zeros((4, 2))
    assert compat.traced_predict_function(model) is None
    model.fit(x, y, verbose=0)
    model.evaluate(x, y, verbose=0)
    model.predict(x, verbose=0)
    traced = (model.train_function, model.test_function,
              compat.traced_predict_function(model))
    assert all(f is not None for f in traced)
    model.fit(x, y, verbose=0)  # kept while nothing drops them
    assert model.train_function is traced[0]
    compat.retrace(model, predict_function=traced[2])
    assert model.train_function is None and model.test_function is None
    model.predict(x, verbose=0)
    assert compat.traced_predict_function(model) is traced[2]  # reused
    model.fit(x, y, verbose=0)
    assert model.train_function is not None
    assert model.train_function is not traced[0]  # traced again
    compat.retrace(model)
    assert compat.traced_predict_function(model) is None


# -- loss_tracker (masked_training.py) -------------------------------------

def test_loss_tracker_is_the_reported_loss_metric():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert compat.loss_tracker(model) is None
    _compiled(model)
    tracker = compat.loss_tracker(model)
    assert isinstance(tracker, keras.metrics.Mean)
    assert tracker.name == "loss"
    assert model.metrics[0] is tracker
    assert [m.name for m in model.metrics].count("loss") == 1


def test_keras_train_step_weights_the_loss_by_batch_size():
    model = _compiled()
    x = np.linspace(-1, 1, 12, dtype="float32").reshape(4, 3)
    y = np.ones((4, 2), "float32")
    history = model.fit(x, y, batch_size=3, epochs=1, verbose=0,
                        shuffle=False)
    tracker = compat.loss_tracker(model)
    assert float(tracker.count.numpy()) == 4.0  # batches of 3 and 1
    assert history.history["loss"] == [pytest.approx(float(tracker.result()))]
    per_sample = np.mean((model.predict(x, verbose=0) - y) ** 2, axis=1)
    np.testing.assert_allclose(history.history["loss"][0],
                               per_sample.mean(), rtol=1e-5)


def test_compute_loss_leaves_the_tracker_to_the_step():
    model = _compiled()
    x = np.zeros((2, 3), "float32")
    model.fit(x, np.zeros((2, 2)), verbose=0)
    tracker = compat.loss_tracker(model)
    before = float(tracker.count.numpy())
    model.compute_loss(x=x, y=np.zeros((2, 2)), y_pred=model(x),
                       training=True)
    assert float(tracker.count.numpy()) == before


# -- model_strategy / first_batch (distribute.py) --------------------------

def test_model_strategy_is_none_outside_a_strategy():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert compat.model_strategy(model) is None
    assert model.distribute_strategy is tf.distribute.get_strategy()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        inside = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert compat.model_strategy(inside) is strategy


def test_the_symbolic_build_hook_keeps_its_signature():
    hook = keras.Model._maybe_symbolic_build
    assert list(inspect.signature(hook).parameters) == [
        "self", "iterator", "data_batch"]


def test_fit_and_evaluate_call_the_symbolic_build_hook_with_the_iterator():
    calls = []

    class Spy(keras.Sequential):
        def _maybe_symbolic_build(self, iterator=None, data_batch=None):
            calls.append((iterator is not None, data_batch is None))
            return super()._maybe_symbolic_build(
                iterator=iterator, data_batch=data_batch)

    model = _compiled(Spy([keras.Input((3,)), keras.layers.Dense(2)]))
    x = np.zeros((4, 3), "float32")
    model.fit(x, x[:, :2], epochs=2, verbose=0)
    model.evaluate(x, x[:, :2], verbose=0)
    assert calls == [(True, True), (True, True)]


def test_keras_hands_the_symbolic_build_hook_distributed_batches():
    """What `MultiWorkerFitMixin` replaces: the hook's iterator and batch."""
    seen = []

    class Spy(keras.Sequential):
        def _maybe_symbolic_build(self, iterator=None, data_batch=None):
            if iterator is not None:
                batch = compat.first_batch(iterator)
                seen.append(batch)
                strategy = compat.model_strategy(self)
                data_batch = tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0],
                    batch)
            return super()._maybe_symbolic_build(data_batch=data_batch)

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = Spy([keras.Input((3,)), keras.layers.Dense(2)])
        model.compile(keras.optimizers.SGD(0.0), "mse")
    x = np.zeros((8, 3), "float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, x[:, :2])).batch(4)
    # evaluate() calls the hook as fit() does (with no gradient all-reduce,
    # whose collective keys clash with other strategies in one process).
    model.evaluate(dataset, verbose=0)
    assert len(seen) == 1
    leaves = tf.nest.flatten(seen[0])
    assert len(leaves) == 2
    for leaf in leaves:
        assert isinstance(leaf, tf.distribute.DistributedValues)
        parts = strategy.experimental_local_results(leaf)
        # Each of the two replicas holds half of the batch of 4.
        assert [p.shape[0] for p in parts] == [2, 2]


def test_first_batch_of_an_empty_iterator_is_none():
    assert compat.first_batch(iter([])) is None
    assert compat.first_batch(iter([(0, 0, iter(["b0", "b1"]))])) == "b0"
