"""Prediction without a task id: which task an input belongs to.

`infer_task` scores every task's head on the input (entropy or
confidence, optionally calibrated against each task's own scores) and
answers with the task and its class; `TaskInference` is its result.

Layer 6: may import `core`, `layers`, `compat` and `errors`.
"""

from packnet_tf._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "TaskInference": "packnet_tf.inference.task_inference",
    "calibrate": "packnet_tf.inference.task_inference",
    "choose_tasks": "packnet_tf.inference.task_inference",
    "infer_task": "packnet_tf.inference.task_inference",
})
