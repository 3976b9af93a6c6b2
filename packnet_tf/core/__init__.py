"""The PackNet mechanism: owners, pruning, the masked step, the model.

- `model`: `PackNetModel`, the `keras.Model` that holds the tasks.
- `task`: a task's state (`TaskInfo`) and the lifecycle rules.
- `masked_training`: the masked `train_step` (only free weights move).
- `pruning`, `planning`, `capacity`: which weights a task frees (pure
  math), plans over tasks, and the capacity report.
- `free_init`: how freed weights start for the next task.
- `trunk`: finds and sizes a trunk's packed layers.
- `recalibration`: recomputing a task's batch-norm statistics.
- `contract`: how raw images become a task's inputs (the one
  preprocessing function of training, evaluation and every export).
- `labels`: label checks before `fit`.

Layer 3: may import `layers`, `compat` and `errors`. `planning`, `task`
and `contract` import no TensorFlow (the command's config checks read
them).
"""
