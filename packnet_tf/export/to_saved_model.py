"""SavedModels for TF Serving: one per task, or one with a signature per task."""

import os
import shutil
import tempfile

import tensorflow as tf

from packnet_tf.data.image_limits import check_limits, record_limits
from packnet_tf.export import checks
from packnet_tf.export.any_task import SCORE, check_score
from packnet_tf.export.modules import SharedTasksModule, TaskModule
from packnet_tf.export.serving import write_models_config
from packnet_tf.io import atomic

#: `layout` values: one SavedModel per task, or one for all.
LAYOUTS = ("per_task", "multi")


def saved_model(model, base_dir, tasks=None, version=1, layout="per_task",
                limits=None, any_task_score="entropy"):
    """Exports finished tasks as SavedModels in the TF Serving layout.

    `layout="per_task"` writes `<base_dir>/<task>/<version>/` for every task:
    a plain network with the task's masks baked into the weights and batch
    norm folded, with the signatures `serving_default` and `task_<name>`.
    `layout="multi"` writes one SavedModel, `<base_dir>/<model.name>/<version>/`,
    with one signature `task_<name>` per task sharing one copy of the
    weights and their uint8 owner masks (a task's signature masks the
    kernels when it runs), and the `any_task` signatures, which choose the
    task from the input itself (`packnet_tf.export.any_task`) by
    `any_task_score`.

    `task_<name>` reads a float batch named `inputs`; a task with an input
    contract for pixels also gets `task_<name>_pixels` (uint8 `pixels` of
    any size) and `task_<name>_images` (encoded `image_bytes`), prepared in
    the graph as in training. Every signature returns `logits`, `outputs`
    (the same), `probabilities` and the top-k `class_ids`, `class_names`
    and `scores` (see `packnet_tf.export.signatures`). Every signature
    first checks the request against `limits` (image sizes read from the
    files' headers, batch size, request bytes, finite floats: see
    `packnet_tf.data.image_limits`), recorded in each version folder's
    `assets/image_limits.json`. `<base_dir>/models.config` is rewritten to serve every model in
    `base_dir` from one TF Serving process. Versions already there are kept
    side by side; an existing version is never overwritten. The export is
    written into a staging folder, fsynced and renamed into place, so a
    failure leaves nothing behind and a server never sees a half-written
    version.

    Args:
        model: a `PackNetModel`.
        base_dir: the export directory: absent, empty, or written by an
            earlier export.
        tasks: a name or list of names of finished tasks; default every
            finished task.
        version: the TF Serving version, an int >= 0.
        layout: "per_task" or "multi".
        limits: an `ImageLimits` (or a dict of its fields); default
            `ImageLimits()`: 16 megapixels per image, 256 images and 64 MiB
            per request.
        any_task_score: how "multi"'s `any_task` signatures choose the
            task: "entropy" (`infer_task`'s default) or "statistics" (each
            task's input density, recorded by `calibrate` when it ended;
            `infer_task(score="statistics")`). "statistics" needs
            layout="multi".

    Returns:
        For "per_task", a dict `{task name: version folder}`; for "multi",
        the version folder.

    Raises:
        ValueError: for an unknown task, a bad version or layout, a model
            name that cannot name a served model, (multi) two tasks whose
            signature keys collide (`x` and `x_pixels`), a bad
            `any_task_score`, or "statistics" with layout="per_task" or for
            a task without an input density.
        TaskStateError: for a task that has not finished.
        FileExistsError: if `base_dir` exists and is not an export
            directory, or the version exists already.

    Example:

    >>> packnet_tf.export.saved_model(model, "exported", version=2)
    {'cars': '/abs/exported/cars/2', 'birds': '/abs/exported/birds/2'}
    """
    if layout not in LAYOUTS:
        raise ValueError(
            f"Expected `layout` in {LAYOUTS}. Received: layout={layout!r}")
    checks.validate_version(version)
    limits = check_limits(limits)
    infos = checks.select_tasks(model, tasks)
    check_score(any_task_score, infos)
    if any_task_score != SCORE and layout != "multi":
        raise ValueError(
            f"any_task_score={any_task_score!r} sets how the `any_task` "
            "signatures choose a task; only layout='multi' has them. "
            f"Received: layout={layout!r}. Pass layout='multi'.")
    base_dir = checks.check_export_dir(base_dir)
    if layout == "multi":
        name = checks.validate_model_name(
            model.name, "the model's name (`PackNetModel(..., name=...)`)")
        if name in [t.name for t in model.tasks]:
            raise ValueError(
                f"The model's name {name!r} is also a task's name; in one "
                "export directory they would share a folder. Build the "
                "model with another `name=`.")
        modules = {name: SharedTasksModule(model, infos, limits=limits,
                                           any_task_score=any_task_score)}
    else:
        modules = {info.name: TaskModule(model, info, limits)
                   for info in infos}
    targets = {
        name: checks.check_new_version(base_dir, name, version)
        for name in modules}
    _write(modules, targets, base_dir)
    if layout == "multi":
        return targets[name]
    return targets


def _write(modules, targets, base_dir):
    """Saves every module to a staging folder, then renames them into place.

    Everything is fsynced before it is renamed (`packnet_tf.io.atomic`); on
    any error the folders this call created or moved are removed again.
    """
    created_base = not os.path.exists(base_dir)
    os.makedirs(base_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=checks.STAGING_PREFIX, dir=base_dir)
    created, moved = [], []
    try:
        for name, module in modules.items():
            scratch = tempfile.mkdtemp(dir=staging, prefix=".limits-")
            record_limits(module, module.limits, scratch)
            tf.saved_model.save(module, os.path.join(staging, name),
                                signatures=module.signatures())
        # TensorFlow does not fsync: the files reach the disk before the
        # renames that publish them.
        atomic.fsync_tree(staging)
        for name, target in targets.items():
            model_dir = os.path.dirname(target)
            if not os.path.isdir(model_dir):
                os.mkdir(model_dir)
                created.append(model_dir)
            os.rename(os.path.join(staging, name), target)
            moved.append(target)
            atomic.fsync_folder(model_dir)
        # Last: fsyncs `base_dir`, which holds any new model folder.
        write_models_config(base_dir)
    except BaseException:
        for target in moved:
            shutil.rmtree(target, ignore_errors=True)
        for model_dir in created:
            shutil.rmtree(model_dir, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
        if created_base:
            shutil.rmtree(base_dir, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
