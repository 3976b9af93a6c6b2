"""A resumable run: the config's tasks, phase by phase, saved after each.

Each task goes through the phases of `packnet_tf.training.phases` - train ->
prune -> fine-tune -> end - under its `Recipe` (a task with prune fraction
0 skips prune and fine-tune; a task with `gradual` timings has no prune
phase and is pruned along its schedule while it fine-tunes). After every phase
the model file is replaced atomically (`packnet_tf.io.checkpoint`), so a kill
at any moment leaves the state at the end of the last finished phase. The
run's position is read back from the model itself: a task's `state` says
"training" (its train phase is done), "pruned" or "frozen". Only "pruned"
is ambiguous (fine-tuned yet or not); the run record next to the model
(`<model>.run.json`, also written atomically, after the model) names the
last phase and the SHA-256 of the model file it describes, and is trusted
only when that digest matches. If a kill falls between the two writes, the
fine-tune phase runs again: time is lost, never a state. A gradual task is
saved "pruned" only at the end of its fine-tune phase, so there "pruned"
means done; a kill during that phase resumes from the end of training and
prunes along the schedule from the start again.

Every phase is seeded from the run's seed, the task's position and the
phase, so a resumed run computes what an uninterrupted one would have.
"""

import time

import keras

from packnet_tf.cli import outcome
from packnet_tf.cli.contracts import contract_for
from packnet_tf.cli.metrics import task_metrics
from packnet_tf.cli.networks import input_shape
from packnet_tf.cli.prepare import network_record, prepare, sidecar_path
from packnet_tf.cli.progress import (NanGuard, PhaseFailed, Reporter,
                                     accuracy_table, history_summary)
from packnet_tf.core.task import FROZEN, TRAINING
from packnet_tf.data import batches
from packnet_tf.io import checkpoint
from packnet_tf.training import phases
from packnet_tf.training.driver import TaskHooks, run_phases
from packnet_tf.training.phases import PHASES


class Run:
    """Trains a checked `RunPlan`, saving after every phase.

    Args:
        plan: a `RunPlan` (see `packnet_tf.cli.prepare.prepare`).
        reporter: a `Reporter`.
        verbose: Keras `fit` verbosity.
        strategy: an optional `tf.distribute.Strategy` to compile under.
    """

    def __init__(self, plan, reporter, verbose="auto", strategy=None):
        self.plan = plan
        self.config = plan.config
        self.model = plan.model
        self.reporter = reporter
        self.verbose = verbose
        self.strategy = strategy
        self._summary = ""
        self.record = dict(plan.sidecar)
        self.record.setdefault("accuracy", {})
        self.record.setdefault("log", [])
        skipped = {t.name: t.check.as_dict() for t in plan.tasks
                    if t.check is not None and t.check.num_bad}
        if skipped:
            self.record["skipped_files"] = skipped
        else:
            self.record.pop("skipped_files", None)
        self._where = None
        digest_ok = plan.resumed and self.record.get(
            "model_sha256") == checkpoint.file_digest(self.config.model)
        self.last = self.record.get("last_phase") if digest_ok else None

    # -- helpers ----------------------------------------------------------

    def _scope(self):
        if self.strategy is not None:
            return self.strategy.scope()
        return self.model.distribute_strategy.scope()

    def _seed(self, task, phase):
        return (self.config.seed * 1_000_003 + task.config.index * 10
                + PHASES.index(phase))

    def _data(self, task, split, seed, shuffle=None, augment=None,
              held_out=False):
        options = task.options
        # prune_fraction: auto measures on every k-th training example,
        # which then never trains.
        holdout = (options["auto_holdout"] if task.recipe.auto
                   and split == task.source.train_split else None)
        return batches(task.source, split, input_shape(self.model),
                       batch_size=options["batch_size"], shuffle=shuffle,
                       seed=seed, preprocess=options["preprocess"],
                       resize=options["resize"], augment=augment,
                       holdout=holdout, held_out=held_out,
                       autotune=options["autotune"])

    def _statistics_data(self, task):
        """`data()`: the task's training examples for batch-norm
        recalibration: no augmentation, shuffled in a fixed order (a split
        stored class by class would give batches of one class)."""
        return lambda: self._data(task, task.source.train_split, 0,
                                  shuffle=True)

    def _held_out_accuracy(self, task):
        """`accuracy()` of `task` on its held-out training examples."""
        data = self._data(task, task.source.train_split, 0, shuffle=False,
                          held_out=True)
        return lambda: task_metrics(self.model, task.name, data,
                                    task.options["from_logits"])[0]

    def _save(self, task, phase):
        checkpoint.save_model(self.model, self.config.model,
                              include_optimizer=False)
        self.record.update({
            "format": 1,
            "config": self.config.path,
            "network": network_record(self.config),
            "model_sha256": checkpoint.file_digest(self.config.model),
            "last_phase": {"task": task.name, "phase": phase},
        })
        self.record["log"].append({"task": task.name, "phase": phase,
                                   "time": time.time()})
        checkpoint.write_json(sidecar_path(self.config.model), self.record)
        step = task.config.index * len(PHASES) + PHASES.index(phase)
        self.reporter.capacity(step, self.model.capacity())

    def _compiler(self, task, phase):
        """`compile(learning_rate)` for phase `phase` of `task`."""
        def start(learning_rate):
            self._where = (task.name, phase)
            keras.utils.set_random_seed(self._seed(task, phase))
            # Keeps the traced train step within a task (see
            # `phases.restart_optimizer`).
            with self._scope():
                phases.restart_optimizer(self.model, task.recipe,
                                         learning_rate)
        return start

    def _fitter(self, task, phase):
        """`fit(epochs, callbacks)` for phase `phase` of `task`.

        Records the phase's one-line summary in `self._summary`.
        """
        def fit(epochs, extra_callbacks):
            seed = self._seed(task, phase)
            guard = NanGuard()
            validation = (self._data(task, task.source.test_split, seed)
                          if task.options["validation"]
                          and task.source.test_split else None)
            start = time.perf_counter()
            history = self.model.fit(
                self._data(task, task.source.train_split, seed,
                           augment=task.options["augment"]),
                epochs=epochs, validation_data=validation,
                verbose=self.verbose, shuffle=False,
                callbacks=[guard] + list(extra_callbacks)
                + self.reporter.fit_callbacks(task.name, phase))
            if guard.failed_at is not None:
                epoch, batch, loss = guard.failed_at
                raise PhaseFailed(
                    f"Task {task.name!r}, {phase}: the loss became {loss} at "
                    f"epoch {epoch + 1}, batch {batch + 1}; the phase was "
                    f"stopped and {self.config.model} keeps the state before "
                    "it. Lower the learning rate (or check the data for "
                    "NaN/inf) and re-run the same command to resume.")
            self._summary = history_summary(history, epochs,
                                            time.perf_counter() - start)
            return history
        return fit

    def _report_auto(self, task, auto):
        """Records and prints what `prune_fraction: auto` chose."""
        self.record.setdefault("auto_prune", {})[task.name] = {
            "fraction": auto.fraction,
            "unpruned_accuracy": auto.unpruned_accuracy,
            "tolerance": auto.tolerance,
            "trials": [list(t) for t in auto.trials]}
        tried = ", ".join(f"{f:.0%}: {a:.4f}" for f, a in auto.trials)
        self.reporter.phase(
            task.config.index, task.name, "auto",
            f"prune fraction {auto.fraction:.0%} (held-out accuracy "
            f"{auto.unpruned_accuracy:.4f} unpruned; tried {tried}; "
            f"tolerance {auto.tolerance:g})")

    def evaluate(self, task):
        """Test accuracy of a task, or None without a test split."""
        if task.source is None or not task.source.test_split:
            return None
        data = self._data(task, task.source.test_split, 0, shuffle=False)
        return task_metrics(self.model, task.name, data,
                            task.options["from_logits"])[0]

    # -- the phases -------------------------------------------------------

    def _state(self, task):
        for info in self.model.tasks:
            if info.name == task.name:
                return info.state
        return None

    def _end(self, task):
        """Records the frozen task's accuracy, saves, and reports it."""
        name = task.name
        accuracy = self.evaluate(task)
        self.record["accuracy"][name] = accuracy
        # A row of the accuracy matrix: every task so far, after this one.
        earlier = self.plan.tasks[:self.plan.tasks.index(task)]
        self.record.setdefault("accuracy_matrix", {})[name] = {
            **{t.name: self.evaluate(t) for t in earlier}, name: accuracy}
        self._save(task, "end")
        if accuracy is not None:
            self.reporter.scalars(task.config.index,
                                  {f"accuracy/{name}": accuracy})
        self.reporter.phase(
            task.config.index, name, "end",
            ("" if accuracy is None else f"test accuracy {accuracy:.4f}; ")
            + f"frozen and saved to {self.config.model}")

    def run_task(self, task):
        """Runs the phases of `task` that are not done yet."""
        index, name = task.config.index, task.name
        state = self._state(task)
        if state == FROZEN:
            self.reporter.phase(index, name, "done",
                                "finished in an earlier run")
            return
        # A task in a file loaded to resume has finished its train phase
        # (files are written only at phase ends); a task in a new model
        # (a converted network's own task) has not.
        train_pending = state is None or not self.plan.resumed
        contract = (None if task.source is None
                    else contract_for(task.source, task.options))
        if state is None:
            keras.utils.set_random_seed(self._seed(task, "train"))
            with self._scope():
                self.model.add_task(name, num_classes=task.num_classes,
                                    input_contract=contract)
            state = TRAINING
        else:
            self.model.use_task(name)
            if contract is not None and (
                    self.model.active_task.input_contract is None):
                # A converted network's own task, or a file from before
                # contracts: the config says how its inputs are prepared.
                self.model.set_input_contract(name, contract)
            if self.plan.resumed:
                self.reporter.phase(index, name, "resume", f"from state "
                                    f"{state!r} in {self.config.model}")
        if train_pending and task.source is None:
            self.reporter.phase(index, name, "train", "no data: the weights "
                                "stay as the network holds them")
        run_phases(self.model, task.recipe, _RunHooks(self, task),
                   state=state,
                   train=train_pending and task.source is not None,
                   finetuned=self.last == {"task": name,
                                           "phase": "finetune"})

    def run(self):
        """Runs every task, then prints the accuracy and capacity tables.

        Returns:
            A dict `{task: test accuracy now}` (None without a test split).

        Raises:
            PhaseFailed: if a phase stops (NaN loss, or any error raised
                while training, evaluating or saving); the model file keeps
                its last complete state.
        """
        with checkpoint.RunLock(self.config.model):
            for task in self.plan.tasks:
                self._where = (task.name, "start")
                try:
                    self.run_task(task)
                except PhaseFailed:
                    raise
                except Exception as error:  # reported, with the traceback
                    raise outcome.stopped(self, error) from error
        # A finished run leaves no stale traceback from an earlier stop.
        outcome.error_log(self.config.model).unlink(missing_ok=True)
        now = {t.name: self.evaluate(t) for t in self.plan.tasks}
        rows = [(t.name, self.record["accuracy"].get(t.name), now[t.name])
                for t in self.plan.tasks]
        self.reporter.line("\nTest accuracy right after each task and now:")
        self.reporter.line(accuracy_table(rows))
        outcome.report_matrix(self)
        self.reporter.line(f"\nWho owns the network:\n{self.model.capacity()}")
        return now


class _RunHooks(TaskHooks):
    """The runner's part of a task's phases: seeds, saves and reports."""

    def __init__(self, run, task):
        super().__init__(
            statistics_data=(None if task.source is None
                             else run._statistics_data(task)))
        self.run, self.task = run, task
        self._owned = 0

    def accuracy(self):
        # Built on first use: only `prune_fraction: auto` measures.
        if self._accuracy is None:
            self._accuracy = self.run._held_out_accuracy(self.task)
        return self._accuracy()

    def fit(self, phase):
        return self.run._fitter(self.task, phase)

    def compile(self, phase):
        return self.run._compiler(self.task, phase)

    def _say(self, phase, text):
        self.run.reporter.phase(self.task.config.index, self.task.name,
                                phase, text)

    def before(self, phase):
        run, task = self.run, self.task
        run._where = (task.name, phase)
        if phase in ("prune", "end"):
            # A recalibration's shuffled order (before each "auto" trial,
            # and at the end): the same whether the run resumes here or
            # not.
            keras.utils.set_random_seed(run._seed(task, phase))
        if phase == "finetune":
            self._owned = sum(run.model.owned_counts().values())

    def after(self, phase, **details):
        run, task, model = self.run, self.task, self.run.model
        if phase == "train":
            run._save(task, "train")
            self._say("train", run._summary if details["history"]
                      else "0 epochs")
        elif phase == "choose" and details["auto"] is not None:
            run._report_auto(task, details["auto"])
        elif phase == "prune":
            freed = sum(details["freed"].values())
            owned = freed + sum(model.owned_counts().values())
            run._save(task, "prune")
            free = model.capacity().free_fraction()
            self._say("prune", f"freed {freed:,} of its {owned:,} weights "
                      f"({details['fraction']:.1%}); the network is "
                      f"{free:.1%} free")
        elif phase == "finetune" and details["history"] is not None:
            run._save(task, "finetune")
            if task.recipe.schedule is not None:  # pruned gradually
                free = model.capacity().free_fraction()
                run._summary += (
                    f"; pruned gradually: freed "
                    f"{sum(details['freed'].values()):,} of its "
                    f"{self._owned:,} weights "
                    f"({task.recipe.prune_fraction:.1%}); the network is "
                    f"{free:.1%} free")
            self._say("finetune", run._summary)
        elif phase == "end":
            run._end(task)


def _fraction_text(task):
    if task.recipe.auto:
        return (f"auto (within {task.options['auto_tolerance']:g} of the "
                f"accuracy on 1 in {task.options['auto_holdout']} training "
                "examples, held out)")
    return f"{task.prune_fraction:.1%}"


def train(config, stream=None, verbose="auto", strategy=None):
    """Checks and runs a config, resuming from its model file.

    Args:
        config: a `RunConfig`.
        stream: where progress lines go (default stdout).
        verbose: Keras progress-bar verbosity.
        strategy: an optional `tf.distribute.Strategy`; the model is built
            and compiled under its scope.

    Returns:
        `(model, {task: test accuracy})`.

    Raises:
        ConfigError: on a bad config, before anything trains.
        PhaseFailed: if a phase stops (NaN loss); the model file keeps
            its last complete state.
        RunBusyError: if another process is training the same model file.
    """
    plan = prepare(config, strategy=strategy)
    reporter = Reporter(stream=stream, log_dir=config.log_dir,
                        num_tasks=len(plan.tasks))
    if plan.resumed:
        done = [t.name for t in plan.model.tasks if t.finished]
        reporter.line(f"Resuming {config.model}: {len(done)} of "
                      f"{len(plan.tasks)} tasks finished.")
    else:
        reporter.line(f"New run: {len(plan.tasks)} tasks into "
                      f"{config.model} (max_tasks={plan.model.max_tasks}).")
    for task in plan.tasks:
        source = task.source
        if source is None:
            reporter.line(f"  {task.name}: no data (the network's own "
                          f"weights), prune {_fraction_text(task)}, then "
                          "frozen")
            continue
        sizes = "/".join(str(source.num_examples(s) or "?")
                         for s in source.splits)
        skipped = task.check.counts() if task.check is not None else {}
        left_out = ("; bad files left out: " + ", ".join(
            f"{n} in {split}" for split, n in skipped.items())
            if skipped else "")
        reporter.line(
            f"  {task.name}: {source.description}, {task.num_classes} "
            f"classes, {sizes} examples ({'/'.join(source.splits)}), "
            f"prune {_fraction_text(task)}{left_out}")
    run = Run(plan, reporter, verbose=verbose, strategy=strategy)
    accuracy = run.run()
    return plan.model, accuracy
