"""How a task is trained: the recipe, its phases, and the one task driver.

- `recipe`: `Recipe`, every option of a task's training with its default
  (the one place defaults are written; the run config's schema reads it).
- `phases`: the phases of a task (train, choose, prune, fine-tune, end).
- `driver`: `train_task`, the task cycle in order; the command's runner
  calls the same phases with saving and resume around them.
- `gradual`: pruning on a tfmot schedule during fine-tuning.
- `auto_prune`: choosing the prune fraction by validation accuracy.

Layer 7: may import `inference`, `data`, `io`, `core`, `layers`, `compat`
and `errors`. `recipe` and `auto_prune` import no TensorFlow.
"""

from packnet_tf._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "GradualPruning": "packnet_tf.training.gradual",
    "TaskResult": "packnet_tf.training.driver",
    "train_task": "packnet_tf.training.driver",
})
