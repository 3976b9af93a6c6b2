"""Measuring continual learning: metrics, and the baselines PackNet meets.

- `metrics`: the accuracy matrix's average accuracy, BWT, FWT and
  forgetting; task-inference accuracy; the accuracy-across-tasks figure.
- `baselines`: LwF, classifier only and joint models (the paper's
  comparisons), registered Keras classes.

Layer 8: may import `training`, `convert`, `inference`, `data`, `io`,
`core`, `layers`, `compat` and `errors`.
"""

from packnet_tf._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "ContinualMetrics": "packnet_tf.evaluation.metrics",
    "TaskInferenceMetrics": "packnet_tf.evaluation.metrics",
    "continual_metrics": "packnet_tf.evaluation.metrics",
    "plot_accuracy_across_tasks": "packnet_tf.evaluation.metrics",
    "task_inference_metrics": "packnet_tf.evaluation.metrics",
})
