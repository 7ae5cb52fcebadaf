"""Where one epoch of a Fashion-MNIST recipe spends its time: phase by phase, then by operator.

    .venv/bin/python benchmarks/epoch_profile.py [--recipe fashion-mnist] [--threads 2]
                                                 [--steps N] [--rows 15]

Runs the recipe's real pieces in one process (its batch pipeline, model, optimizer, schedule,
parameter average and per-epoch evaluation on the 10,000 test images) and times each phase of
every step with `time.perf_counter` (on the CPU every operation has finished when it returns):

- augmentation: drawing the next batch (shuffle, translation, flip, erasing, normalisation);
- forward: the model with aux heads and the loss, under the recipe's autocast;
- backward: zeroing the gradients and back-propagation;
- optimizer: the SGD step and the learning-rate schedule;
- averaging: the EMA / Polyak update of the weights;
- evaluation: one pass over the test set as training does it after every epoch (the average's
  weights, the training model's form and autocast), and the same pass with the inference form
  (`optimize_for_inference`, BN folded) for comparison.

`--steps N` times the first N steps and scales them to the whole epoch. Then one step, after
the timed ones, runs under `torch.profiler`: its operators by self CPU time. The run's JSON
record (machine, versions, commit, figures) goes to benchmarks/results/ (`_record.py`).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _record import Recorder, add_json_out_argument  # this folder's _record.py
from torch.profiler import ProfilerActivity, profile

from inception import googlenet_loss
from inception.evaluation import view_batches
from inception.inference import optimize_for_inference
from inception.model import GoogLeNet
from inception.recipes import get_recipe
from inception.train.engine import evaluate
from inception.train.loaders import load_data
from inception.train.optim import make_average, make_optimizer, make_scheduler

PHASES = ("augmentation", "forward", "backward", "optimizer", "averaging")
EVALUATION = "evaluation (as training does it)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="fashion-mnist")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="default: the whole epoch")
    parser.add_argument("--rows", type=int, default=15, help="operators listed")
    parser.add_argument("--data-dir", default=None)
    add_json_out_argument(parser)
    args = parser.parse_args()
    recorder = Recorder(__file__, args)
    torch.set_num_threads(args.threads)

    cfg = get_recipe(args.recipe)
    cpu = torch.device("cpu")
    data = load_data(cfg, "fashion-mnist", args.data_dir, cpu)
    torch.manual_seed(cfg.seed)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = GoogLeNet(cfg.model).to(memory_format=fmt).train()
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, data.train.num_batches)
    average = make_average(model, cfg)
    bf16 = cfg.precision == "bf16"

    batches = data.train.epoch(0).batches
    steps = min(args.steps or data.train.num_batches, data.train.num_batches)
    spent = {p: 0.0 for p in PHASES}
    step_s = []

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = googlenet_loss(model.forward_aux(x.contiguous(memory_format=fmt)), y,
                                  cfg.model.aux_weight, cfg.label_smoothing)
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        scheduler.step()
        t3 = time.perf_counter()
        if average is not None:
            average.update_parameters(model)
        t4 = time.perf_counter()
        for phase, seconds in zip(PHASES[1:], (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            spent[phase] += seconds
        step_s.append(t4 - t0)

    for _ in range(steps):
        t = time.perf_counter()
        x, y = next(batches)
        spent["augmentation"] += time.perf_counter() - t
        step(x, y)

    scale = data.train.num_batches / steps
    evaluated = average.module if average is not None else model
    rows = {p: spent[p] * scale for p in PHASES}
    t = time.perf_counter()
    split = data.every_epoch
    metrics = evaluate(evaluated, split, data.preprocessing, data.classes, cfg, cpu)
    rows[EVALUATION] = time.perf_counter() - t
    fast = optimize_for_inference(evaluated.eval(), dtype=torch.bfloat16 if bf16 else
                                  torch.float32)
    t = time.perf_counter()
    with torch.no_grad():
        for views, _ in view_batches(split.images, [data.preprocessing], 1, cfg.eval_batch_size,
                                     0, cpu):
            fast(views[0][:, 0])
    inference_form = time.perf_counter() - t

    total = sum(rows.values())
    print(f"recipe {cfg.recipe}: one epoch = {data.train.num_batches} steps of "
          f"{cfg.batch_size} images ({data.train.num_images} images), evaluation on "
          f"{split.num_images} {split.name} images; {args.threads} threads; "
          f"{steps} steps timed" + (f", scaled x{scale:.2f}" if steps < data.train.num_batches
                                    else ""))
    print("| phase | s per epoch | share |")
    print("|---|---|---|")
    for phase, seconds in rows.items():
        print(f"| {phase} | {seconds:.1f} | {100 * seconds / total:.1f}% |")
    print(f"| **epoch** | **{total:.1f}** | |")
    print(f"median step (forward to averaging): {1000 * statistics.median(step_s):.0f} ms, "
          f"{cfg.batch_size / statistics.median(step_s):.0f} img/s; evaluation in the "
          f"inference form: {inference_form:.1f} s "
          f"({rows[EVALUATION] / inference_form:.1f}x faster); "
          f"{split.name} top-1 after {steps} steps: {metrics.top1:.2f}%")

    x, y = next(iter(data.train.epoch(1).batches))  # a fresh batch: the epoch may be spent
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(x, y)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total_us = sum(e.self_cpu_time_total for e in events)
    print()
    print("one training step by operator (self CPU time)")
    print("| operator | share | calls |")
    print("|---|---|---|")
    for e in events[:args.rows]:
        print(f"| {e.key} | {100 * e.self_cpu_time_total / total_us:.1f}% | {e.count} |")
    recorder.write({
        "recipe": cfg.recipe, "threads": args.threads, "steps_per_epoch": data.train.num_batches,
        "steps_timed": steps, "batch_size": cfg.batch_size,
        "evaluation_images": split.num_images, "evaluation_split": split.name,
        "phases_s_per_epoch": rows, "epoch_s": total,
        "median_step_s": statistics.median(step_s),
        "images_per_s": cfg.batch_size / statistics.median(step_s),
        "evaluation_inference_form_s": inference_form, "top1_after_steps": metrics.top1,
        "operators": [{"operator": e.key, "self_cpu_share": e.self_cpu_time_total / total_us,
                       "calls": e.count} for e in events[:args.rows]],
    })


if __name__ == "__main__":
    main()
