"""The baselines PackNet is compared with in the paper's tables.

- `LwFModel`: Learning without Forgetting (Li & Hoiem 2016): one shared
  trunk, a head per task; while task t trains, the old heads' outputs on
  task t's images are kept close to what they were before t began
  (a distillation loss at temperature 2, weight 1).
- `head_only_model`: "classifier only": the trunk learned on the first task,
  then frozen; every later task trains only its own head.
- `joint_model`: one multi-head network trained on every task's data at
  once (needs all data up front: the reference point, not a sequence).

Fine-tuning (one trunk trained task after task, nothing protected) and
individual networks (one per task) need nothing beyond plain Keras.
"""

import keras
from keras import ops

from packnet_tf.compat import keras_internals


def distillation_loss(teacher_logits, student_logits, temperature=2.0):
    """LwF's distillation term: KL(teacher || student) at a temperature.

    Both sets of logits are softened by `temperature`; the result is the
    mean over examples of the KL divergence of the student's distribution
    from the teacher's: exactly 0 when the logits are equal, positive
    otherwise.

    Args:
        teacher_logits: `[batch, classes]` recorded outputs (before the new
            task trained).
        student_logits: `[batch, classes]` current outputs of the same head.
        temperature: the softening temperature (LwF uses 2).

    Returns:
        A scalar tensor.

    Raises:
        ValueError: if `temperature` is not positive.
    """
    if not temperature > 0:
        raise ValueError("Expected a positive `temperature`. Received: "
                         f"temperature={temperature!r}")
    teacher = ops.convert_to_tensor(teacher_logits) / temperature
    student = ops.convert_to_tensor(student_logits) / temperature
    log_p = ops.log_softmax(teacher, axis=-1)
    log_q = ops.log_softmax(student, axis=-1)
    return ops.mean(ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1))


@keras.saving.register_keras_serializable(package="packnet_tf")
class LwFModel(keras.Model):
    """Learning without Forgetting on a shared trunk, a head per task.

    Call `start_task(t)` before training task t (0-based, in order): it
    records the current trunk and heads as the teacher, makes head t the
    one `call` uses, and resets the traced functions. Then `compile` (a
    fresh optimizer) and `fit` as usual. The loss is the task's own loss
    plus `distillation_weight` times the sum over the old heads of
    `distillation_loss(teacher head, student head)` on the same images.
    The trunk and every head so far train together (LwF's joint step).

    Args:
        trunk: a built Keras model: images to features.
        head_sizes: the class count of every task's head, in order.
        temperature: distillation temperature (2 in LwF).
        distillation_weight: the distillation term's weight (1 in LwF).
        **kwargs: `keras.Model` arguments.

    Raises:
        ValueError: on empty `head_sizes` or a non-positive temperature or
            weight.
    """

    def __init__(self, trunk, head_sizes, temperature=2.0,
                 distillation_weight=1.0, **kwargs):
        super().__init__(**kwargs)
        if not head_sizes or any(int(n) < 1 for n in head_sizes):
            raise ValueError("Expected `head_sizes`, a class count >= 1 per "
                             f"task. Received: {head_sizes!r}")
        if not temperature > 0 or not distillation_weight >= 0:
            raise ValueError(
                "Expected temperature > 0 and distillation_weight >= 0. "
                f"Received: temperature={temperature!r}, "
                f"distillation_weight={distillation_weight!r}")
        self.trunk = trunk
        self.head_sizes = [int(n) for n in head_sizes]
        self.temperature = float(temperature)
        self.distillation_weight = float(distillation_weight)
        self.heads = [keras.layers.Dense(n, name=f"head_{i}")
                      for i, n in enumerate(self.head_sizes)]
        # The teacher exists from the start (Keras locks a model's state
        # once built); `start_task` copies the student's weights into it.
        self.teacher_trunk = keras.models.clone_model(trunk)
        self.teacher_heads = [keras.layers.Dense(n, name=f"teacher_{i}")
                              for i, n in enumerate(self.head_sizes)]
        features = keras.KerasTensor(tuple(trunk.outputs[0].shape))
        for head, teacher in zip(self.heads, self.teacher_heads):
            head(features)
            teacher(features)
        self.teacher_trunk.trainable = False
        for teacher in self.teacher_heads:
            teacher.trainable = False
        self.active = 0
        self.distillation_tracker = keras.metrics.Mean(name="distillation")
        self.built = True

    def start_task(self, index):
        """Makes task `index` the one that trains; records the teacher.

        Raises:
            ValueError: if `index` is out of range.
        """
        if not 0 <= index < len(self.heads):
            raise ValueError(f"Expected a task index in [0, "
                             f"{len(self.heads)}). Received: {index!r}")
        self.teacher_trunk.set_weights(self.trunk.get_weights())
        for head, teacher in zip(self.heads, self.teacher_heads):
            teacher.set_weights(head.get_weights())
        self.active = int(index)
        keras_internals.retrace(self)

    def use_task(self, index):
        """Makes `call` (predict, evaluate) use head `index`."""
        self.active = int(index)
        keras_internals.retrace(self)

    def call(self, x, training=False):
        return self.heads[self.active](self.trunk(x, training=training))

    @property
    def metrics(self):
        return super().metrics + [self.distillation_tracker]

    def train_step(self, data):
        import tensorflow as tf

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        old = range(self.active)
        variables = list(self.trunk.trainable_variables) + [
            v for head in self.heads[:self.active + 1]
            for v in head.trainable_variables]
        with tf.GradientTape() as tape:
            features = self.trunk(x, training=True)
            y_pred = self.heads[self.active](features)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred,
                                     sample_weight=sample_weight,
                                     training=True)
            distill = ops.zeros(())
            if self.active:
                recorded = self.teacher_trunk(x, training=False)
                for k in old:
                    distill = distill + distillation_loss(
                        self.teacher_heads[k](recorded),
                        self.heads[k](features), self.temperature)
            total = loss + self.distillation_weight * distill
            scaled = self.optimizer.scale_loss(total)
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)
        self.distillation_tracker.update_state(distill)
        logs = self.compute_metrics(x, y, y_pred,
                                    sample_weight=sample_weight)
        logs["distillation"] = self.distillation_tracker.result()
        return logs

    def get_config(self):
        return {**super().get_config(),
                "trunk": keras.saving.serialize_keras_object(self.trunk),
                "head_sizes": self.head_sizes,
                "temperature": self.temperature,
                "distillation_weight": self.distillation_weight}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["trunk"] = keras.saving.deserialize_keras_object(
            config["trunk"])
        return cls(**config)


def head_only_model(trunk, num_classes, name=None):
    """A new head on a frozen trunk ("classifier only").

    Args:
        trunk: the trunk, trained on the first task; set non-trainable here
            (its weights then never change, whatever the optimizer).
        num_classes: the head's width.
        name: the model's name.

    Returns:
        A `keras.Sequential` of the frozen trunk and a new Dense head.
    """
    trunk.trainable = False
    return keras.Sequential([trunk, keras.layers.Dense(num_classes)],
                            name=name)


#: The logit a joint model gives the classes a narrower head lacks: its
#: softmax probability is exactly 0 in float32, so the loss and the argmax
#: are those of the image's own head alone.
MISSING_CLASS_LOGIT = -1e9


def joint_model(trunk, head_sizes):
    """One network, a head per task, trained on every task at once.

    Its inputs are `[images, task ids]` (int32, one per image); its output
    is the logits of each image's own task's head, so one loss over a batch
    that mixes tasks trains every head and the shared trunk together.
    Heads may differ in width (data sets of 10 and 43 classes): the output
    has the widest head's width, and an image of a narrower task gets
    `MISSING_CLASS_LOGIT` for the classes its head lacks.

    Args:
        trunk: a built Keras model: images to features.
        head_sizes: the class count of every task's head.

    Returns:
        A functional `keras.Model`.

    Raises:
        ValueError: if `head_sizes` is empty or holds a count below 1.
    """
    sizes = [int(n) for n in head_sizes]
    if not sizes or min(sizes) < 1:
        raise ValueError("Expected a class count >= 1 for every task's head. "
                         f"Received: {list(head_sizes)}")
    widest = max(sizes)
    images = keras.Input(tuple(trunk.inputs[0].shape[1:]), name="images")
    task = keras.Input((), dtype="int32", name="task")
    features = trunk(images)
    heads = []
    for i, n in enumerate(sizes):
        logits = keras.layers.Dense(n, name=f"head_{i}")(features)
        if n < widest:
            logits = ops.pad(logits, [[0, 0], [0, widest - n]],
                             constant_values=MISSING_CLASS_LOGIT)
        heads.append(logits)
    stacked = ops.stack(heads, axis=1)
    # Each image's own head, picked exactly (no arithmetic on the others).
    chosen = ops.take_along_axis(
        stacked, ops.reshape(ops.cast(task, "int32"), (-1, 1, 1)), axis=1)
    return keras.Model([images, task], ops.squeeze(chosen, 1), name="joint")
