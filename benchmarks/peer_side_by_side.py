"""Our PackNet beside Avalanche's on split-cifar10-5, in turn (A-B-B-A).

Speed on this kind of machine drifts by about 10% and has a slow mode about
twice as slow (../shared/NOTES.md), so the two libraries are only compared
within one sitting, taking turns: ours (A), the peer (B), the peer, ours -
the order the issue asks for - by default. Each run is its own process:

- ours: `split_cifar10_5.py --methods packnet --seeds 0` with the library's
  defaults (`--free-init previous`), per-seed file kept in
  results/side_by_side/;
- the peer: `../shared/peer/run_avalanche_packnet.py --methods packnet`
  (Avalanche 0.6.0 PackNet, PyTorch, 2 threads) in the peer's virtual
  environment (`bash ../shared/peer/setup.sh` builds it), its JSON kept
  beside ours.

Both train the same workload (4 epochs Adam 1e-3, prune 50% per layer,
2 epochs Adam 1e-4, batch 64, five tasks of 10,000 images) and time the
same things: each epoch's wall time, the whole training, and inference
images/s at batch 256 over the five test sets. Per quantity the script
reports each run's figure, each library's median over its runs, and the
ratio ours / peer per adjacent pair (A1-B1, B2-A2) and of the medians. The
load average before each run is kept to show the machine was otherwise
idle. Not a test: about 30 minutes on 2 cores.

    PYTHONPATH=. python benchmarks/peer_side_by_side.py
    PYTHONPATH=. python benchmarks/peer_side_by_side.py --order AB --quick
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from common import RESULTS, command, machine, write_json

HERE = pathlib.Path(__file__).resolve().parent
PEER_SCRIPT = HERE.parent.parent / "shared" / "peer" / "run_avalanche_packnet.py"
PEER_PYTHON = pathlib.Path(tempfile.gettempdir()) / "peer-venv" / "bin" / "python"
FOLDER = "side_by_side"


def _ours(run, args):
    """Runs our PackNet once; returns its figures."""
    name = f"{FOLDER}/ours_run{run}{'_quick' if args.quick else ''}.json"
    cmd = [sys.executable, str(HERE / "split_cifar10_5.py"), "--methods",
           "packnet", "--seeds", "0", "--free-init", "previous",
           "--out", name] + (["--quick"] if args.quick else [])
    _run(cmd)
    stem = RESULTS / name[:-len(".json")]
    seed_file = pathlib.Path(f"{stem}_seed0.json")
    packnet = json.loads(seed_file.read_text())["methods"]["packnet"]
    # The aggregate and its plot repeat the per-seed file: not kept.
    for extra in (pathlib.Path(f"{stem}.json"),
                  pathlib.Path(f"{stem}_accuracy.png")):
        extra.unlink(missing_ok=True)
    return {"file": str(seed_file.relative_to(HERE)),
            "seconds_per_epoch": packnet["seconds_per_epoch"],
            "train_seconds": packnet["train_seconds"],
            "images_per_s": packnet["images_per_s"],
            "mean_final_acc": packnet["mean_final_acc"]}


def _peer(run, args):
    """Runs the peer once; returns its figures."""
    out = RESULTS / FOLDER / f"peer_run{run}{'_quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    cmd = [str(args.peer_python), str(args.peer_script), "--methods",
           "packnet", "--out", str(partial)] + (
               ["--quick"] if args.quick else [])
    _run(cmd)
    os.replace(partial, out)
    packnet = json.loads(out.read_text())["methods"]["packnet"]
    return {"file": str(out.relative_to(HERE)),
            "seconds_per_epoch": statistics.median(packnet["epoch_times_s"]),
            "train_seconds": packnet["total_train_wall_s"],
            "images_per_s": packnet["inference"]["images_per_s"],
            "mean_final_acc": packnet["avg_final_acc"]}


def _run(cmd):
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=HERE)


QUANTITIES = ("seconds_per_epoch", "train_seconds", "images_per_s")


def compare(runs):
    """Medians per library and ours/peer ratios, pair by pair.

    Args:
        runs: `[(side, figures)]` in the order run, side "A" (ours) or "B".

    Returns:
        `{quantity: {"ours": [...], "peer": [...], "ours_median",
        "peer_median", "ratio_of_medians", "pair_ratios"}}`; a pair is a
        run of ours next to a run of the peer (A-B-B-A: runs 1-2 and 3-4).
    """
    table = {}
    pairs = [(runs[i], runs[i + 1]) for i in range(0, len(runs) - 1, 2)
             if {runs[i][0], runs[i + 1][0]} == {"A", "B"}]
    for q in QUANTITIES:
        ours = [f[q] for side, f in runs if side == "A"]
        peer = [f[q] for side, f in runs if side == "B"]
        ratios = []
        for first, second in pairs:
            a, b = (first, second) if first[0] == "A" else (second, first)
            ratios.append(a[1][q] / b[1][q])
        table[q] = {"ours": ours, "peer": peer,
                    "ours_median": statistics.median(ours),
                    "peer_median": statistics.median(peer),
                    "ratio_of_medians": (statistics.median(ours)
                                         / statistics.median(peer)),
                    "pair_ratios": ratios}
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--order", default="ABBA",
                        help="A = ours, B = the peer, in turn (default ABBA)")
    parser.add_argument("--quick", action="store_true",
                        help="both sides' smoke runs (tiny subsets): checks "
                        "the plumbing, measures nothing")
    parser.add_argument("--peer-python", type=pathlib.Path,
                        default=PEER_PYTHON)
    parser.add_argument("--peer-script", type=pathlib.Path,
                        default=PEER_SCRIPT)
    args = parser.parse_args(argv)
    order = args.order.upper()
    if not order or set(order) - {"A", "B"} or not {"A", "B"} <= set(order):
        parser.error("--order: expected A (ours) and B (the peer) in turn, "
                     f"both present, e.g. ABBA. Received: {args.order!r}")
    for path, fix in ((args.peer_python, "bash ../shared/peer/setup.sh"),
                      (args.peer_script, "pass --peer-script")):
        if not path.exists():
            parser.error(f"the peer is needed: {path} does not exist. "
                         f"Fix: {fix}")

    started = time.perf_counter()
    runs, detail = [], []
    counts = {"A": 0, "B": 0}
    for side in order:
        counts[side] += 1
        load = os.getloadavg()[0]
        begin = time.perf_counter()
        figures = (_ours if side == "A" else _peer)(counts[side], args)
        figures.update(load_before=load,
                       wall_seconds=time.perf_counter() - begin)
        runs.append((side, figures))
        detail.append({"side": "ours" if side == "A" else "peer", **figures})
        print(f"{side}{counts[side]}: {figures}", flush=True)
    table = compare(runs)
    name = f"peer_side_by_side{'_quick' if args.quick else ''}.json"
    path = write_json(name, {
        "workload": "split-cifar10-5, PackNet: ours (library defaults) and "
                    "Avalanche 0.6.0's, in turn" + (
                        " QUICK SMOKE RUN, not the workload"
                        if args.quick else ""),
        "order": order, "runs": detail, "comparison": table,
        "machine": machine(), "command": command()})
    print(f"\n{'quantity':<20}{'ours':>10}{'peer':>10}{'ours/peer':>11}"
          "  per pair")
    for q, row in table.items():
        print(f"{q:<20}{row['ours_median']:>10.2f}{row['peer_median']:>10.2f}"
              f"{row['ratio_of_medians']:>10.2f}x  "
              + ", ".join(f"{r:.2f}x" for r in row["pair_ratios"]))
    print(f"machine: {machine()}\ntotal {time.perf_counter() - started:.0f}"
          f" s; wrote {path}")


if __name__ == "__main__":
    main()
