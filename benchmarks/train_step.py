"""Training-step throughput of the Fashion-MNIST model variants, side by side in one process.

    .venv/bin/python benchmarks/train_step.py [--threads 2] [--batch-size 256] [--repeats 5]

For each width, it times full training steps (forward with aux heads, the paper's loss, backward,
SGD) in fp32 NCHW, fp32 channels_last and bf16 autocast + channels_last. The variants are run in
alternating rounds and each one's median step time is reported, so machine noise hits all of them.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from inception import googlenet, googlenet_loss


def make_step(width: float, batch: int, bf16: bool, channels_last: bool):
    torch.manual_seed(0)
    model = googlenet(num_classes=10, in_chans=1, stem="small", image_size=28, width=width,
                      norm="bn", aux_pool="adaptive")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = googlenet_loss(model.forward_aux(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--widths", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    variants = {(w, name): make_step(w, args.batch_size, bf16, cl)
                for w in args.widths
                for name, bf16, cl in (("fp32 NCHW", False, False),
                                       ("fp32 channels_last", False, True),
                                       ("bf16 channels_last", True, True))}
    for step in variants.values():  # warm-up
        step()
    times: dict = {k: [] for k in variants}
    for _ in range(args.repeats):
        for key, step in variants.items():
            for _ in range(args.steps):
                t0 = time.perf_counter()
                step()
                times[key].append(time.perf_counter() - t0)

    print(f"training step, 28x28 Fashion-MNIST model (small stem, BN, aux heads), batch "
          f"{args.batch_size}, {args.threads} threads; median of {args.repeats * args.steps} "
          "steps, variants alternated")
    print("| width | fp32 NCHW img/s | fp32 channels_last img/s | bf16 channels_last img/s | "
          "bf16 CL vs fp32 NCHW |")
    print("|---|---|---|---|---|")
    for w in args.widths:
        rate = {name: args.batch_size / statistics.median(times[(w, name)])
                for (ww, name) in variants if ww == w}
        print(f"| {w} | {rate['fp32 NCHW']:.0f} | {rate['fp32 channels_last']:.0f} | "
              f"{rate['bf16 channels_last']:.0f} | "
              f"{rate['bf16 channels_last'] / rate['fp32 NCHW']:.1f}x |")


if __name__ == "__main__":
    main()
