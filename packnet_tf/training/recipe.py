"""`Recipe`: how one task trains, with every default written once.

The defaults of a task's options live here and nowhere else: `train_task`'s
signature and the run config's `TASK_DEFAULTS` (`packnet_tf.cli.schema`)
read `DEFAULTS`, and `packnet_tf.training.phases` applies a `Recipe`. The
module imports no TensorFlow (the command checks configs without it);
making a `Recipe` imports Keras to check its optimizer and schedule.
"""

import dataclasses

from packnet_tf.core.planning import check_fraction, check_keep_patterns
from packnet_tf.training import auto_prune

#: The timings a `gradual` dict may hold (tfmot's `PolynomialDecay`
#: arguments; `packnet_tf.training.gradual.schedule_for` reads them), each
#: with its least value (None: not an int).
GRADUAL_TIMINGS = {"end_step": 0, "begin_step": 0, "frequency": 1,
                   "power": None, "initial_sparsity": None}


def fresh_optimizer(optimizer, learning_rate=None):
    """A new, unbuilt optimizer like `optimizer`.

    PackNet starts every phase with fresh optimizer state, so that no moment
    or step count of one phase leaks into the next.

    Args:
        optimizer: a name (`"adam"`), a `{"class_name", "config"}` dict, or a
            Keras optimizer to copy (its configuration, not its state).
        learning_rate: overrides the learning rate when given.

    Returns:
        A `keras.optimizers.Optimizer`.

    Raises:
        TypeError: for anything else.
        ValueError: for an unknown optimizer name.
    """
    import keras

    if isinstance(optimizer, (str, dict)):
        optimizer = keras.optimizers.get(optimizer)
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            "Expected `optimizer` to be a name like 'adam' or a "
            f"keras.optimizers.Optimizer. Received: {type(optimizer).__name__}"
        )
    config = optimizer.get_config()
    if learning_rate is not None:
        config["learning_rate"] = float(learning_rate)
    return optimizer.__class__.from_config(config)


def _check_epochs(key, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"Expected `{key}` to be an int >= 0. Received: {key}={value!r}"
        )


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How one task trains; checked when made.

    Attributes:
        epochs: training epochs before pruning.
        prune_fraction: this task's share of its weights to free, in
            [0, 1), None (not pruned; with a schedule: the schedule
            decides), or "auto" (the largest fraction whose validation
            accuracy stays within `auto_tolerance`; see `choose` and
            `packnet_tf.training.auto_prune`). Plans (lists, "equal") are resolved
            by the caller (`packnet_tf.core.planning.prune_fraction_for`).
        finetune_epochs: epochs after pruning.
        optimizer: a name, config dict or Keras optimizer (copied per
            phase by `fresh_optimizer`).
        learning_rate: the training rate (None keeps the optimizer's).
        finetune_learning_rate: the fine-tuning rate (None: a tenth of
            `learning_rate`).
        loss: the loss (None: sparse categorical cross-entropy on logits).
        metrics: compiled metrics.
        gradual: None for one-shot pruning, or what
            `packnet_tf.training.gradual.schedule_for` takes (a dict of timings, a
            tfmot schedule or its config).
        auto_tolerance: with "auto": the validation accuracy the task may
            lose.
        auto_candidates: with "auto": the fractions tried, largest first.
        auto_recovery_epochs: with "auto": epochs of recovery (at the
            fine-tuning rate) after each trial prune, before measuring.
        recalibrate: whether batch-norm statistics are recomputed over the
            training data before the task is frozen (and before each
            "auto" trial measures); False freezes them as training left
            them (`end_task(recalibrate=False)`).
        recalibrate_steps: None for one pass over the training data, or
            at most this many batches.
        prune_keep: kernels the one-shot prune leaves whole: `fnmatch`
            patterns of `"layer/kernel"` keys (see `PackNetModel.prune`),
            e.g. `("*/depthwise_kernel",)`; `()` prunes every kernel. None
            (the default) keeps the network's depthwise kernels whole
            (`planning.DEFAULT_PRUNE_KEEP`) in a one-shot prune, "auto"'s
            trials included. Patterns do not combine with `gradual`,
            which prunes every kernel.

    Raises:
        ValueError: on bad epochs, fraction or schedule.
        TypeError: on a bad optimizer.
    """

    epochs: int = 1
    prune_fraction: float = 0.5
    finetune_epochs: int = 1
    optimizer: object = "adam"
    learning_rate: float = 1e-3
    finetune_learning_rate: float = None
    loss: object = None
    metrics: tuple = ("accuracy",)
    gradual: object = None
    auto_tolerance: float = auto_prune.DEFAULT_TOLERANCE
    auto_candidates: tuple = auto_prune.DEFAULT_CANDIDATES
    auto_recovery_epochs: int = 1
    recalibrate: bool = True
    recalibrate_steps: int = None
    prune_keep: tuple = None
    schedule: object = dataclasses.field(init=False, default=None)

    def __post_init__(self):
        # Imported here: the module itself stays free of TensorFlow.
        from packnet_tf.core.recalibration import check_steps
        from packnet_tf.training import gradual as gradual_pruning

        if self.auto:
            if self.gradual is not None:
                raise ValueError(
                    "prune_fraction='auto' picks a one-shot fraction; it "
                    "does not combine with `gradual`. Pass a number with "
                    "`gradual`, or leave `gradual` out.")
            auto_prune.check_tolerance(self.auto_tolerance)
            object.__setattr__(self, "auto_candidates",
                               auto_prune.check_candidates(
                                   self.auto_candidates))
            _check_epochs("auto_recovery_epochs", self.auto_recovery_epochs)
        elif self.prune_fraction is not None:
            object.__setattr__(self, "prune_fraction",
                               check_fraction(self.prune_fraction))
        if not isinstance(self.recalibrate, bool):
            raise ValueError(
                "Expected `recalibrate` to be True or False. Received: "
                f"recalibrate={self.recalibrate!r}")
        check_steps(self.recalibrate_steps, "recalibrate_steps")
        if self.prune_keep is not None:
            check_keep_patterns(self.prune_keep, "prune_keep", ValueError)
            if self.prune_keep and self.gradual is not None:
                raise ValueError(
                    "`prune_keep` applies to a one-shot prune; it does not "
                    "combine with `gradual`, which prunes every kernel. "
                    "Leave one of them out.")
            object.__setattr__(self, "prune_keep", tuple(self.prune_keep))
        _check_epochs("epochs", self.epochs)
        _check_epochs("finetune_epochs", self.finetune_epochs)
        schedule = None if self.auto else gradual_pruning.schedule_for(
            self.gradual, self.prune_fraction)
        if schedule is not None:
            gradual_pruning.check_fits(schedule, None, self.finetune_epochs)
        object.__setattr__(self, "schedule", schedule)
        fresh_optimizer(self.optimizer)  # fails early on a bad optimizer
        object.__setattr__(self, "metrics", tuple(self.metrics or ()))

    @property
    def auto(self):
        """Whether the fraction is still to be chosen (`choose`)."""
        return isinstance(self.prune_fraction, str) and (
            self.prune_fraction == auto_prune.AUTO)

    @property
    def prunes(self):
        """Whether the task is pruned (one shot or gradually)."""
        return self.schedule is not None or bool(self.prune_fraction)

    @property
    def finetune_rate(self):
        """The fine-tuning learning rate (a tenth of training's by default)."""
        if self.finetune_learning_rate is not None:
            return self.finetune_learning_rate
        if self.learning_rate is None:
            return None
        return self.learning_rate / 10.0

    def loss_function(self):
        """The loss to compile with."""
        if self.loss is None:
            import keras

            return keras.losses.SparseCategoricalCrossentropy(
                from_logits=True)
        return self.loss

    def check_fits(self, steps_per_epoch):
        """Checks that fine-tuning finishes the schedule (if any).

        Args:
            steps_per_epoch: training batches per epoch, or None.

        Raises:
            ValueError: if the schedule ends after fine-tuning does.
        """
        if self.schedule is not None:
            from packnet_tf.training import gradual as gradual_pruning

            gradual_pruning.check_fits(self.schedule, steps_per_epoch,
                                       self.finetune_epochs)


#: Every option of `Recipe` with its default (`train_task` and the run
#: config read them from here).
DEFAULTS = {field.name: field.default for field in dataclasses.fields(Recipe)
            if field.init}
