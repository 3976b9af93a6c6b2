"""`packnet-tf demo`: five digit tasks packed into one CNN, then exported.

The same resumable run `packnet-tf train` makes, on scikit-learn's embedded
8x8 digits (no download): five 2-way tasks, each given an equal share of the
network, then every task exported as a TF Serving SavedModel and a LiteRT
file.
"""

import pathlib
import shutil
import time

from packnet_tf.cli.config import TASK_DEFAULTS, RunConfig, TaskConfig

#: The demo's network: the CNN of examples/digits.py.
DIGITS_NETWORK = {
    "type": "cnn",
    "input_shape": [8, 8, 1],
    "conv": [32, 32, "pool"],
    "dense": [64],
    "batch_norm": True,
    "batch_norm_momentum": 0.9,
}
#: What a demo writes into its folder (removed when a demo starts again).
DEMO_OUTPUTS = ("digits.keras", "digits.run.json", "digits.keras.lock",
                "serving", "tflite", "capacity.png", "images")


def demo_config(out, epochs=6, finetune_epochs=2, seed=0):
    """The demo's `RunConfig`: the digit tasks with an equal share each.

    Args:
        out: the output folder.
        epochs: training epochs per task.
        finetune_epochs: fine-tuning epochs after pruning.
        seed: the run's seed.

    Returns:
        A `RunConfig` whose tasks carry `ArraySource`s.
    """
    from packnet_tf.data import digit_sources

    out = pathlib.Path(out).absolute()
    # As examples/digits_folder.yaml: the same tasks from an image folder.
    options = dict(TASK_DEFAULTS, epochs=epochs,
                   finetune_epochs=finetune_epochs, learning_rate=1e-3,
                   finetune_learning_rate=1e-3, prune_fraction="equal")
    sources = digit_sources(seed)
    tasks = [TaskConfig(name, source, dict(options), index)
             for index, (name, source) in enumerate(sources)]
    return RunConfig(
        path="<packnet-tf demo>", base_dir=out, model=out / "digits.keras",
        max_tasks=len(tasks), seed=seed, network=dict(DIGITS_NETWORK),
        tasks=tasks)


def _clear(out):
    """Removes an earlier demo's outputs; refuses a folder with others."""
    if not out.exists():
        return
    others = sorted(p.name for p in out.iterdir()
                    if p.name not in DEMO_OUTPUTS
                    and not p.name.startswith("digits.keras.tmp-")
                    and not p.name.endswith(".partial"))
    if others:
        from packnet_tf.cli.commands import UsageError

        raise UsageError(
            f"--out {out} holds files the demo did not write ({others[:3]}); "
            "pick an empty or new folder.")
    for name in DEMO_OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def run_demo(out="runs/demo", epochs=6, finetune_epochs=2, export=True,
             stream=None, verbose=0):
    """Runs the demo and exports every task.

    Args:
        out: the output folder (an earlier demo's files there are replaced).
        epochs: training epochs per task.
        finetune_epochs: fine-tuning epochs per task.
        export: whether to export SavedModels and LiteRT files.
        stream: where lines go (default stdout).
        verbose: Keras progress verbosity.

    Returns:
        A dict of what was written: `model`, `record`, `plot`, and with
        `export` `serving` (folder) and `tflite` (list of files).
    """
    import sys

    from packnet_tf.cli.plot import plot_capacity
    from packnet_tf.cli.runner import train

    stream = stream or sys.stdout
    out = pathlib.Path(out).absolute()
    _clear(out)
    config = demo_config(out, epochs=epochs, finetune_epochs=finetune_epochs)
    print("packnet-tf demo: 5 two-digit tasks from scikit-learn's digits, "
          "packed into one CNN with an equal share each.", file=stream,
          flush=True)
    start = time.perf_counter()
    model, _ = train(config, stream=stream, verbose=verbose)
    seconds = time.perf_counter() - start
    from packnet_tf.cli.prepare import sidecar_path
    from packnet_tf.data import write_digit_folder

    written = {"model": config.model,
               "images": write_digit_folder(out / "images"),
               "record": sidecar_path(config.model),
               "plot": plot_capacity(model.capacity(), out / "capacity.png",
                                     title="Who owns the digits network")}
    if export:
        from packnet_tf import export as exporter

        written["serving"] = out / "serving"
        exporter.saved_model(model, written["serving"])
        written["tflite"] = [
            exporter.tflite(model, out / "tflite" / f"{t.name}.tflite",
                            task=t.name)
            for t in model.tasks]
    lines = [
        f"\nTrained {len(model.tasks)} tasks in {seconds:.1f} s. Written:",
        f"  model (all tasks, resumable):  {written['model']}",
        f"  run record:                    {written['record']}",
        f"  capacity plot:                 {written['plot']}",
    ]
    if export:
        lines += [
            (f"  TF Serving SavedModels:        {written['serving']}/<task>/1"
             " (models.config serves all)"),
            f"  LiteRT files:                  {out / 'tflite'}/<task>.tflite",
        ]
    lines += [
        (f"  the digits as an image folder: {written['images']}"
         "/<split>/<digit>/*.png"),
        (f"Next: packnet-tf info {written['model']} --plot capacity.png; "
         f"packnet-tf verify {written['model']}"),
        ("      packnet-tf train examples/digits_folder.yaml (the same tasks "
         "from the image folder)"),
    ]
    print("\n".join(lines), file=stream, flush=True)
    return written
