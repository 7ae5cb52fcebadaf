"""Training-step throughput of the Fashion-MNIST model, side by side in one process.

    .venv/bin/python benchmarks/train_step.py [--threads 2] [--batch-size 256] [--repeats 5]
                                              [--widths 0.25 0.5 1.0]

Two tables, each from variants run in alternating rounds (so machine noise hits all of them),
each variant's median step time reported:

1. The default recipe's model and optimizer (width 0.25, bf16 autocast, channels_last, batch
   256): the step as it was before 0.5.0 (each Inception module's blocks one by one, torch's
   for-loop SGD) against each change alone and both together (`Inception._fused_forward`:
   merged 1x1 convolutions, BatchNorms and ReLUs; `fused=True` SGD). All compute the same
   update.
   `--compile` adds this step with the forward compiled by Inductor; its compile time (the
   first step) is printed separately.
2. Precision and memory format by width: fp32 NCHW, fp32 channels_last and bf16 autocast +
   channels_last, with today's step.

A step is forward with aux heads, the paper's loss with the recipe's label smoothing, backward,
SGD (Nesterov, the recipe's weight decay groups). The run's JSON record (machine, versions,
commit, figures) goes to benchmarks/results/ (`_record.py`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from _record import Recorder, add_json_out_argument  # this folder's _record.py

from inception import googlenet_loss
from inception.model import GoogLeNet
from inception.modules import Inception
from inception.recipes import get_recipe
from inception.train.optim import make_optimizer

RECIPE = get_recipe("fashion-mnist")


def make_step(width: float, batch: int, bf16: bool, channels_last: bool, fused_modules: bool = True,
              fused_sgd: bool = True, compile: bool = False) -> Callable[[], None]:
    torch.manual_seed(0)
    model = GoogLeNet(RECIPE.model.replace(width=width)).train()
    for m in model.modules():
        if isinstance(m, Inception):
            m.fuse_in_training = fused_modules
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = make_optimizer(model, RECIPE)
    for group in opt.param_groups:
        group["fused"] = fused_sgd
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))
    forward = torch.compile(model.forward_aux) if compile else model.forward_aux

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = googlenet_loss(forward(x), y, RECIPE.model.aux_weight,
                                  RECIPE.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def medians(variants: dict, repeats: int, steps: int) -> dict:
    """Median seconds per step of each variant, run in alternating rounds after a warm-up."""
    for step in variants.values():
        step()
    times: dict = {k: [] for k in variants}
    for _ in range(repeats):
        for key, step in variants.items():
            for _ in range(steps):
                t0 = time.perf_counter()
                step()
                times[key].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--widths", type=float, nargs="*", default=[0.25, 0.5, 1.0],
                        help="widths for the precision table (none: skip it)")
    parser.add_argument("--compile", action="store_true",
                        help="also this step with the forward through torch.compile (Inductor)")
    add_json_out_argument(parser)
    args = parser.parse_args()
    recorder = Recorder(__file__, args)
    torch.set_num_threads(args.threads)
    batch, width = args.batch_size, RECIPE.model.width

    steps = {
        "before 0.5.0: blocks one by one, for-loop SGD": (False, False),
        "fused SGD only": (False, True),
        "fused modules only": (True, False),
        "this step: fused modules + fused SGD": (True, True),
    }
    variants = {name: make_step(width, batch, True, True, *flags) for name, flags in steps.items()}
    compile_s = None
    if args.compile:
        name = "this step, forward through torch.compile (default mode)"
        variants[name] = make_step(width, batch, True, True, compile=True)
        t0 = time.perf_counter()
        variants[name]()  # the first call compiles (forward and backward graphs)
        compile_s = time.perf_counter() - t0
    t = medians(variants, args.repeats, args.steps)
    base = t[next(iter(steps))]
    print(f"training step, the default recipe's model (width {width}, small stem, BN, aux heads), "
          f"bf16 autocast + channels_last, batch {batch}, {args.threads} threads; median of "
          f"{args.repeats * args.steps} steps, variants alternated")
    print("| step | ms | img/s | vs before 0.5.0 |")
    print("|---|---|---|---|")
    for name, seconds in t.items():
        print(f"| {name} | {1000 * seconds:.0f} | {batch / seconds:.0f} | {base / seconds:.2f}x |")
    if compile_s is not None:
        print(f"torch.compile: the first step took {compile_s:.0f} s (compiling), not counted "
              "above")
    figures: dict = {
        "batch_size": batch, "width": width, "threads": args.threads,
        "steps_per_variant": args.repeats * args.steps,
        "step": [{"variant": name, "median_step_s": seconds, "images_per_s": batch / seconds,
                  "vs_before_0_5_0": base / seconds} for name, seconds in t.items()],
        "compile_first_step_s": compile_s,
    }

    if not args.widths:
        recorder.write(figures)
        return
    variants = {(w, name): make_step(w, batch, bf16, cl)
                for w in args.widths
                for name, bf16, cl in (("fp32 NCHW", False, False),
                                       ("fp32 channels_last", False, True),
                                       ("bf16 channels_last", True, True))}
    t = medians(variants, args.repeats, args.steps)
    print()
    print(f"training step by width and precision (this step), batch {batch}, {args.threads} "
          f"threads; median of {args.repeats * args.steps} steps, variants alternated")
    print("| width | fp32 NCHW img/s | fp32 channels_last img/s | bf16 channels_last img/s | "
          "bf16 CL vs fp32 NCHW |")
    print("|---|---|---|---|---|")
    for w in args.widths:
        rate = {name: batch / t[(ww, name)] for (ww, name) in variants if ww == w}
        print(f"| {w} | {rate['fp32 NCHW']:.0f} | {rate['fp32 channels_last']:.0f} | "
              f"{rate['bf16 channels_last']:.0f} | "
              f"{rate['bf16 channels_last'] / rate['fp32 NCHW']:.1f}x |")
    figures["by_width"] = [{"width": w, "variant": name, "median_step_s": t[(w, name)],
                            "images_per_s": batch / t[(w, name)]} for (w, name) in variants]
    recorder.write(figures)


if __name__ == "__main__":
    main()
