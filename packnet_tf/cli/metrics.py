"""A task's accuracy and loss on a data set, for reports and `eval`."""

import keras
import numpy as np


def task_metrics(model, task, data, from_logits=True):
    """Accuracy, mean loss and example count of one task on `data`.

    Uses the model's predict function (kept per task), so evaluating does
    not recompile the model or disturb its optimizer.

    Args:
        model: a `PackNetModel`.
        task: the task's name.
        data: batches of `(x, y)` with integer labels.
        from_logits: whether the task's head outputs logits.

    Returns:
        `(accuracy, loss, count)`; accuracy and loss are None for no data.
    """
    model.use_task(task)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(
        from_logits=from_logits, reduction="sum")
    correct = total = 0
    loss = 0.0
    for x, y in data:
        if model.distribute_strategy.num_replicas_in_sync > 1:
            # predict_on_batch would give every replica the whole batch.
            outputs = keras.ops.convert_to_numpy(model(x, training=False))
        else:
            outputs = model.predict_on_batch(x)
        correct += int(np.sum(np.argmax(outputs, axis=-1) == y.numpy()))
        loss += float(loss_fn(y, outputs))
        total += int(y.shape[0])
    if not total:
        return None, None, 0
    return correct / total, loss / total, total
