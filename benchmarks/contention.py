"""Training on a CPU that another process shares: the default step with 2 and 1 torch threads,
with the machine idle and with a competing process busy on one core.

    .venv/bin/python benchmarks/contention.py [--repeats 5] [--steps 3]

The competitor is a second Python process spinning in a loop (one core's worth of work), paused
(SIGSTOP) for the idle rounds and resumed (SIGCONT) for the busy ones; within each state the
thread counts are alternated round by round, so noise hits them alike. Also prints what
`inception.devices.cpu_threads` (the thread count `inception train` starts with when --threads
is not given) chooses in each state. The run's JSON record (machine, versions, commit,
figures) goes to benchmarks/results/ (`_record.py`).
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import time

import torch
from _record import Recorder, add_json_out_argument  # this folder's _record.py
from train_step import RECIPE, make_step  # this folder's train_step.py (the script's own path)

from inception.devices import cpu_cores, cpu_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds per state")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--batch-size", type=int, default=256)
    add_json_out_argument(parser)
    args = parser.parse_args()
    recorder = Recorder(__file__, args)

    default_threads = torch.get_num_threads()
    step = make_step(RECIPE.model.width, args.batch_size, True, True)
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    competitor.send_signal(signal.SIGSTOP)
    results: dict[tuple[str, int], float] = {}
    chosen: dict[str, tuple[int, float | None]] = {}
    try:
        for state in ("idle", "one core busy"):
            if state != "idle":
                competitor.send_signal(signal.SIGCONT)
                time.sleep(0.5)
            torch.set_num_threads(default_threads)  # cpu_threads() caps at the current count
            chosen[state] = cpu_threads()
            times: dict[int, list[float]] = {2: [], 1: []}
            for threads in times:  # warm-up
                torch.set_num_threads(threads)
                step()
            for _ in range(args.repeats):
                for threads, spent in times.items():
                    torch.set_num_threads(threads)
                    for _ in range(args.steps):
                        t0 = time.perf_counter()
                        step()
                        spent.append(time.perf_counter() - t0)
            for threads, spent in times.items():
                results[(state, threads)] = args.batch_size / statistics.median(spent)
    finally:
        competitor.kill()

    base = results[("idle", 2)]
    print(f"training step of the default recipe's model, batch {args.batch_size}, bf16 "
          f"channels_last; {cpu_cores()} cores; median of {args.repeats * args.steps} steps")
    print("| machine | threads | img/s | vs idle, 2 threads |")
    print("|---|---|---|---|")
    for (state, threads), rate in results.items():
        print(f"| {state} | {threads} | {rate:.0f} | {rate / base:.2f}x |")
    for state, (threads, others) in chosen.items():
        busy = "unknown" if others is None else f"{others:.2f}"
        print(f"{state}: cores busy elsewhere {busy}; `inception train` would start with "
              f"{threads} thread(s)")
    recorder.write({
        "batch_size": args.batch_size, "cores": cpu_cores(),
        "steps_per_variant": args.repeats * args.steps,
        "rates": [{"machine": state, "threads": threads, "images_per_s": rate,
                   "vs_idle_2_threads": rate / base}
                  for (state, threads), rate in results.items()],
        "cpu_threads_chosen": [{"machine": state, "threads": threads, "cores_busy_elsewhere": o}
                               for state, (threads, o) in chosen.items()],
    })


if __name__ == "__main__":
    main()
