"""PyTorch's LocalResponseNorm against ours (one banded GEMM, fp32 normaliser) in a training step
of the paper variant at 224 px, side by side in one process.

    .venv/bin/python benchmarks/lrn.py [--threads 2] [--batch-size 32] [--repeats 5]

Both models are the paper's GoogLeNet (LRN, true 5x5, aux heads), channels_last, bf16 autocast;
one has its two LRN layers swapped for `torch.nn.LocalResponseNorm`. Alternated rounds, medians.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import inception
from inception.bench import median_rates
from inception.modules import LocalResponseNorm


def training_step(plain_lrn: bool, x: torch.Tensor, y: torch.Tensor):
    torch.manual_seed(0)
    model = inception.googlenet().to(memory_format=torch.channels_last)
    if plain_lrn:
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, LocalResponseNorm):
                    setattr(parent, name, nn.LocalResponseNorm(child.size, child.alpha,
                                                               child.beta, child.k))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = inception.googlenet_loss(model.forward_aux(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(args.batch_size, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (args.batch_size,))
    rates = median_rates({"torch.nn.LocalResponseNorm": training_step(True, x, y),
                          "inception LocalResponseNorm": training_step(False, x, y)},
                         args.batch_size, args.repeats)
    print(f"training step, paper variant, 224 px, batch {args.batch_size}, bf16 autocast, "
          f"channels_last, {args.threads} threads, median of {args.repeats}")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.1f} img/s |")
    ratio = rates["inception LocalResponseNorm"] / rates["torch.nn.LocalResponseNorm"]
    print(f"ratio: {ratio:.2f}x")


if __name__ == "__main__":
    main()
