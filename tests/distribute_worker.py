"""One worker of the multi-worker tests, run as a subprocess.

Usage: python distribute_worker.py MODE INDEX PORTS OUT_DIR

MODE "packnet" trains two PackNet tasks under MultiWorkerMirroredStrategy and
writes its weights and task-1 outputs; "keras_bug" runs a plain Keras model and
a uint8 variable under the same strategy and prints how each fared, so a test
notices when TensorFlow or Keras change.
"""

import json
import os
import sys

import numpy as np

BATCH = 16


def task_data(num_classes, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 6, 6, 2)).astype("float32")
    return x, rng.integers(0, num_classes, 64).astype("int32")


def build_model():
    """The same network, seeded, in every process."""
    import keras

    import packnet_tf as pn
    from packnet_tf import layers

    keras.utils.set_random_seed(0)
    trunk = keras.Sequential([
        keras.Input((6, 6, 2)),
        layers.PackedConv2D(4, 3, padding="same", name="conv"),
        layers.TaskBatchNormalization(synchronized=True, name="bn"),
        keras.layers.ReLU(),
        keras.layers.Flatten(),
        layers.PackedDense(8, activation="relu", name="dense"),
    ])
    return pn.PackNetModel(trunk, max_tasks=3)


def dataset(x, y, shard_policy=None):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    if shard_policy is not None:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = shard_policy
        ds = ds.with_options(options)
    return ds


def train_two_tasks(model, shard_policy=None, optimizer=None):
    """Trains tasks a and b; returns task a's probe outputs after each.

    `optimizer` builds each task's optimizer (default: SGD with momentum
    and weight decay).
    """
    import keras

    import packnet_tf as pn

    optimizer = optimizer or (lambda: keras.optimizers.SGD(
        1e-2, momentum=0.9, weight_decay=0.01))

    probe = task_data(2, 9)[0][:8]
    outputs = []
    for name, seed in (("a", 1), ("b", 2)):
        x, y = task_data(2, seed)
        pn.train_task(
            model, name, dataset(x, y, shard_policy), num_classes=2,
            epochs=2, finetune_epochs=1, prune_fraction=0.5, verbose=0,
            optimizer=optimizer(),
        )
        model.use_task("a")
        outputs.append(keras.ops.convert_to_numpy(model(probe)))
    return outputs


def main(mode, index, ports, out_dir):
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
        "task": {"type": "worker", "index": index},
    })
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    if mode == "keras_bug":
        report_keras_bug(strategy)
        return
    with strategy.scope():
        model = build_model()
    outputs = train_two_tasks(
        model, tf.data.experimental.AutoShardPolicy.DATA)
    np.savez(os.path.join(out_dir, f"worker{index}.npz"),
             after_a=outputs[0], after_b=outputs[1],
             **{f"w{i}": v.numpy() for i, v in enumerate(model.trunk.weights)})
    # Only the chief writes the model; the other worker writes nothing.
    if index == 0:
        model.save(os.path.join(out_dir, "model.keras"))


def report_keras_bug(strategy):
    import keras
    import tensorflow as tf

    with strategy.scope():
        try:
            tf.Variable(np.zeros(3, np.uint8))
            print("UINT8_BROADCAST ok", flush=True)
        except Exception as error:  # the outcome is what is reported
            print(f"UINT8_BROADCAST failed {type(error).__name__}",
                  flush=True)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile("sgd", "mse")
    x = np.ones((32, 4), "float32")
    try:
        model.fit(x, np.ones((32, 2), "float32"), batch_size=8, verbose=0)
        print("KERAS_FIT ok", flush=True)
    except Exception as error:
        print(f"KERAS_FIT failed {type(error).__name__}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","), sys.argv[4])
