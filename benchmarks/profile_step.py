"""Where a training step of the paper variant spends its time, by PyTorch operator.

    .venv/bin/python benchmarks/profile_step.py [--threads 2] [--batch-size 32] [--steps 2]
                                                [--precision bf16|fp32]

One SGD step at 224 px with aux heads (forward, the 0.3-weighted loss, backward, update),
channels_last, bf16 autocast by default, as `inception bench --train` times it; one warm-up step,
then `--steps` steps under `torch.profiler`. Prints the operators by self CPU time, with the
share of the total. The run's JSON record (machine, versions, commit, figures) goes to
benchmarks/results/ (`_record.py`).
"""

from __future__ import annotations

import argparse
import contextlib

import torch
from _record import Recorder, add_json_out_argument  # this folder's _record.py
from torch.profiler import ProfilerActivity, profile

import inception


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--rows", type=int, default=12)
    add_json_out_argument(parser)
    args = parser.parse_args()
    recorder = Recorder(__file__, args)
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = inception.googlenet().to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(args.batch_size, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (args.batch_size,))

    def step() -> None:
        with (torch.autocast("cpu", dtype=torch.bfloat16) if args.precision == "bf16"
              else contextlib.nullcontext()):
            loss = inception.googlenet_loss(model.forward_aux(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    print(f"training step, paper variant, 224 px, batch {args.batch_size}, {args.precision}, "
          f"channels_last, {args.threads} threads, {args.steps} steps profiled")
    print("| operator | self CPU share | calls per step |")
    print("|---|---|---|")
    for e in events[:args.rows]:
        print(f"| {e.key} | {100 * e.self_cpu_time_total / total:.1f}% | "
              f"{e.count // args.steps} |")
    recorder.write({"batch_size": args.batch_size, "precision": args.precision,
                    "threads": args.threads, "steps_profiled": args.steps,
                    "operators": [{"operator": e.key,
                                   "self_cpu_share": e.self_cpu_time_total / total,
                                   "calls_per_step": e.count // args.steps}
                                  for e in events[:args.rows]]})


if __name__ == "__main__":
    main()
