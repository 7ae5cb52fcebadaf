"""Time to accuracy on Fashion-MNIST: run `inception train` end to end, N times, and report the
median test top-1, the median wall time, and when each run first reached the target.

    .venv/bin/python benchmarks/fashion_mnist.py --runs 3                       # the fast default
    .venv/bin/python benchmarks/fashion_mnist.py --runs 1 --recipe fashion-mnist-long

Each run is a separate `inception train` process (wall time measured around the whole process:
start-up, data loading, training, evaluation, export and plots), with 2 torch threads. The
JSON record of the whole benchmark (machine, versions, commit, every run's figures) goes to
benchmarks/results/ (`_record.py`); each run directory keeps its own results.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _record import Recorder, add_json_out_argument  # this folder's _record.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="the seeds to run (default: 0 .. runs - 1)")
    parser.add_argument("--recipe", default="fashion-mnist")
    parser.add_argument("--target", type=float, default=93.7, help="test top-1 to reach (%%)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="keep the run directories here")
    parser.add_argument("extra", nargs="*", help="more flags for inception train (after --)")
    add_json_out_argument(parser)
    args = parser.parse_args()
    recorder = Recorder(__file__, args)

    root = Path(args.out or tempfile.mkdtemp(prefix="fmnist-bench-"))
    rows = []
    seeds = args.seeds if args.seeds is not None else list(range(args.runs))
    for i in seeds:
        out = root / f"{args.recipe}-seed{i}"
        cmd = [sys.executable, "-m", "inception", "train", "--recipe", args.recipe,
               "--seed", str(i), "--out", str(out), "--threads", str(args.threads),
               "--no-progress", *args.extra]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        results = json.loads((out / "results.json").read_text())
        with open(out / "metrics.csv") as f:
            metrics = list(csv.DictReader(f))
        # metrics.csv's per-epoch split: the test set, or the validation split with --val-images
        # (its columns are named for it; runs before 0.6.0 called either one val_*).
        split = "val" if "val_top1" in results else "test"
        reached = next((float(r["wall_s"]) for r in metrics
                        if float(r.get(f"{split}_top1", r.get("val_top1"))) >= args.target), None)
        rows.append({"seed": i, "test_top1": results["test_top1"],
                     "test_top5": results["test_top5"], "process_wall_s": round(wall, 1),
                     "epochs": results["epochs"], "first_reached_target_s": reached,
                     "per_epoch_split": "val" if "val_top1" in results else "test"})
        print(json.dumps(rows[-1]), flush=True)

    print()
    print(f"recipe {args.recipe}, {len(seeds)} run(s), {args.threads} threads, "
          f"{platform.processor() or platform.machine()}, python {platform.python_version()}")
    print("| seed | test top-1 (%) | test top-5 (%) | wall (s), whole process | "
          f"first epoch >= {args.target}% at (s) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['test_top1']:.2f} | {r['test_top5']:.2f} | "
              f"{r['process_wall_s']:.0f} | {r['first_reached_target_s'] or '-'} |")
    print(f"| median | {statistics.median(r['test_top1'] for r in rows):.2f} | "
          f"{statistics.median(r['test_top5'] for r in rows):.2f} | "
          f"{statistics.median(r['process_wall_s'] for r in rows):.0f} | |")
    recorder.write({
        "recipe": args.recipe, "threads": args.threads, "target_top1": args.target,
        "train_flags": args.extra, "run_directories": str(root), "runs": rows,
        "median": {key: statistics.median(r[key] for r in rows)
                   for key in ("test_top1", "test_top5", "process_wall_s")},
    })


if __name__ == "__main__":
    main()
