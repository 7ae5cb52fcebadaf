"""PyTorch's LocalResponseNorm against ours (one banded GEMM, fp32 normaliser) in a training step
of the paper variant at 224 px, side by side in one process; with `--onnx`, the same two forms
(and none at all, as a bound) in ONNX Runtime's fp32 inference of the exported graph.

    .venv/bin/python benchmarks/lrn.py [--threads 2] [--batch-size 32] [--repeats 5] [--onnx]

The models are the paper's GoogLeNet (LRN, true 5x5; aux heads for training), channels_last,
bf16 autocast for training; one has its two LRN layers swapped for `torch.nn.LocalResponseNorm`
(which exports as ONNX's LRN operator). Alternated rounds, medians.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch
from torch import nn

import inception
from inception.bench import median_rates
from inception.modules import LocalResponseNorm


def swap_lrn(model: nn.Module, make) -> nn.Module:
    """`model` with each of our LRN layers replaced by `make(layer)`."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LocalResponseNorm):
                setattr(parent, name, make(child))
    return model


def torch_lrn(layer: LocalResponseNorm) -> nn.Module:
    return nn.LocalResponseNorm(layer.size, layer.alpha, layer.beta, layer.k)


def training_step(plain_lrn: bool, x: torch.Tensor, y: torch.Tensor):
    torch.manual_seed(0)
    model = inception.googlenet().to(memory_format=torch.channels_last)
    if plain_lrn:
        swap_lrn(model, torch_lrn)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = inception.googlenet_loss(model.forward_aux(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def onnx_rates(batch: int, repeats: int) -> dict[str, float]:
    from inception.export import onnx_session
    from inception.inference import optimize_for_inference

    torch.manual_seed(0)
    graph = optimize_for_inference(inception.googlenet(aux_logits=False).eval(), export=True)
    variants = {"ONNX LRN operator (torch.nn.LocalResponseNorm)":
                swap_lrn(copy.deepcopy(graph), torch_lrn),
                "inception LocalResponseNorm (GEMM)": graph,
                "no LRN at all (a bound, not the model)":
                swap_lrn(copy.deepcopy(graph), lambda layer: nn.Identity())}
    x = torch.randn(batch, 3, 224, 224)
    paths = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, model) in enumerate(variants.items()):
            path = Path(tmp) / f"{i}.onnx"
            program = torch.onnx.export(model, (x[:2],), dynamo=True, verbose=False,
                                        input_names=["x"], external_data=False,
                                        dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
            program.save(str(path), external_data=False)
            session = onnx_session(path)
            paths[name] = lambda s=session: s.run(None, {"x": x.numpy()})
        return median_rates(paths, batch, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--onnx", action="store_true", help="also ONNX Runtime inference")
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
    if args.onnx:
        print(f"\nONNX Runtime fp32 inference, paper variant (fused graph), 224 px, batch "
              f"{args.batch_size}, {args.threads} threads, median of {args.repeats}")
        for name, rate in onnx_rates(args.batch_size, args.repeats).items():
            print(f"| {name} | {rate:.1f} img/s |")


if __name__ == "__main__":
    main()
