"""What `inception experiment all` costs to train on this machine, without training all of it.

    .venv/bin/python benchmarks/experiment_cost.py [--threads 2] [--out DIR]

The plan (`inception.experiments.runner.plan`: 85 runs at the planned seeds) holds only a few
kinds of run: a run's cost depends on its config less the seed and the learning rate
(`runner.shape`). This script trains one run of each shape (seed 0; a grid arm at its grid's
smallest rate, so that it does not diverge and stop early) one after the other, as `inception
experiment` trains them, and prices the plan at each shape's wall time (its `results.json`)
times the plan's runs of that shape. During each run it records the cores' worth of CPU that
other processes used (`devices.CpuShare`, as each experiment run's `sharing.json` does), and
how much of that the hypervisor took from this machine (/proc/stat's steal time), so a reader
can tell a quiet measurement from a shared one. Neither sees other machines on the same host
using its memory bandwidth. The run's JSON record (machine, versions, commit, figures) goes to
benchmarks/results/ (`_record.py`).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from _record import Recorder, add_json_out_argument  # this folder's _record.py

from inception.devices import CpuShare
from inception.experiments import claims, runner
from inception.train import train
from inception.train.config import Diverged

BUDGET_H = 4.0  # issue's budget for training every claim's runs on this 2-core machine


def steal_seconds() -> float | None:
    """CPU seconds the hypervisor has taken from this machine since boot (/proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else None


def timed_run(job: runner.Job, folder: Path) -> dict:
    """Train `job`'s run (at its grid's smallest rate where it has one) into `folder`; its
    wall time and what shared the CPU meanwhile."""
    lr = min(job.experiment.lr_grid) if job.experiment.lr_grid else None
    cfg = job.arm.config(job.experiment.base(), 0, lr)
    share, steal0, t0 = CpuShare(), steal_seconds(), time.monotonic()
    diverged = False
    try:
        train(cfg, out=folder, device="cpu", progress=False)
    except Diverged:
        diverged = True
    wall = time.monotonic() - t0
    results = folder / runner.RESULTS_FILE
    steal1 = steal_seconds()
    return {"wall_s": json.loads(results.read_text())["wall_s"] if results.exists() else wall,
            "diverged": diverged, "cores_busy_elsewhere": share.others(),
            "cores_stolen": None if steal0 is None or steal1 is None
            else (steal1 - steal0) / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None,
                        help="keep the runs in this new folder (default: a temporary one)")
    add_json_out_argument(parser)
    args = parser.parse_args()
    recorder = Recorder(__file__, args)
    torch.set_num_threads(args.threads)

    runs_of: collections.Counter[str] = collections.Counter()
    first: dict[str, runner.Job] = {}
    for job in runner.plan(claims.select("all")):
        key = runner.shape(job.config)
        runs_of[key] += 1
        first.setdefault(key, job)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        for i, (key, job) in enumerate(first.items()):
            name = f"{job.experiment.regime}/{job.arm.run_name()}"
            timing = timed_run(job, out / f"{i:02d}-{name.replace('/', '-')}")
            rows.append({"shape": name, "runs": runs_of[key], **timing})
            print(f"{name}: {timing['wall_s'] / 60:.1f} min", flush=True)

    total = sum(r["runs"] * r["wall_s"] for r in rows)
    print(f"\n`inception experiment all`'s plan priced by one run of each shape, "
          f"{args.threads} threads, one run after the other")
    print("| regime/arm | runs in the plan | minutes a run | minutes in all | "
          "cores busy elsewhere | cores stolen |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        busy, stolen = r["cores_busy_elsewhere"], r["cores_stolen"]
        print(f"| {r['shape']}{' (diverged)' if r['diverged'] else ''} | {r['runs']} | "
              f"{r['wall_s'] / 60:.1f} | {r['runs'] * r['wall_s'] / 60:.0f} | "
              f"{'-' if busy is None else f'{busy:.2f}'} | "
              f"{'-' if stolen is None else f'{stolen:.2f}'} |")
    # a diverged run stopped early: its shape's price is then only a lower bound
    bound = "at least " if any(r["diverged"] for r in rows) else ""
    print(f"| all | {sum(r['runs'] for r in rows)} | | {bound}{total / 60:.0f} "
          f"({bound}{total / 3600:.2f} hours; budget {BUDGET_H:g}) | | |")
    recorder.write({"threads": args.threads, "shapes": rows, "total_s": total,
                    "budget_h": BUDGET_H})


if __name__ == "__main__":
    main()
