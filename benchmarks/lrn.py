"""PyTorch's LocalResponseNorm against ours (a banded GEMM, fp32 normaliser), whole and in
cache-sized chunks, in a training step and in `optimize_for_inference`'s bf16 inference of the
paper variant at 224 px, side by side in one process; with `--onnx`, the LRN forms (and none at
all, as a bound) in ONNX Runtime's fp32 inference of the exported graph.

    .venv/bin/python benchmarks/lrn.py [--threads 2] [--batch-size 32] [--repeats 5] [--onnx]

The models are the paper's GoogLeNet (LRN, true 5x5; aux heads for training), channels_last,
bf16 autocast for training; their two LRN layers are swapped for `torch.nn.LocalResponseNorm`
(which exports as ONNX's LRN operator) or for ours with the chunking off (all pixels as one
chunk: one GEMM, the same hand-written backward). Alternated rounds, medians. The run's JSON
record (machine, versions, commit, figures) goes to benchmarks/results/ (`_record.py`).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch
from _record import Recorder, add_json_out_argument  # this folder's _record.py
from torch import nn

import inception
from inception.export import save_onnx
from inception.modules import LocalResponseNorm, local_response_norm
from inception.timing import median_rates


def swap_lrn(model: nn.Module, make, kind: type = LocalResponseNorm) -> nn.Module:
    """`model` with each of its `kind` layers replaced by `make(layer)`."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, kind):
                setattr(parent, name, make(child))
    return model


def torch_lrn(layer: LocalResponseNorm) -> nn.Module:
    return nn.LocalResponseNorm(layer.size, layer.alpha, layer.beta, layer.k)


def unchunked(layer: LocalResponseNorm) -> LocalResponseNorm:
    layer.CPU_CHUNK = 1 << 62
    return layer


VARIANTS = {"torch.nn.LocalResponseNorm": torch_lrn,
            "inception LocalResponseNorm, one GEMM": unchunked,
            "inception LocalResponseNorm, chunked (the model's)": lambda layer: layer}


def training_step(make, x: torch.Tensor, y: torch.Tensor):
    torch.manual_seed(0)
    model = swap_lrn(inception.googlenet(), make).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = inception.googlenet_loss(model.forward_aux(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def inference(make, x: torch.Tensor):
    from inception.inference import optimize_for_inference

    torch.manual_seed(0)
    model = swap_lrn(inception.googlenet(aux_logits=False).eval(), make)
    fast = optimize_for_inference(model, dtype=torch.bfloat16)

    def run() -> None:
        with torch.no_grad():
            fast(x)

    return run


def onnx_rates(batch: int, repeats: int) -> dict[str, float]:
    from inception.export import onnx_session
    from inception.inference import ConvLRN, optimize_for_inference

    torch.manual_seed(0)
    model = inception.googlenet(aux_logits=False).eval()
    graph = optimize_for_inference(model, export=True)
    plain = optimize_for_inference(swap_lrn(copy.deepcopy(model), lambda _: nn.Identity()),
                                   export=True)
    variants = {"ONNX LRN operator (torch.nn.LocalResponseNorm)":
                swap_lrn(copy.deepcopy(graph), lambda _: torch_lrn(local_response_norm()),
                         ConvLRN),
                "inception LocalResponseNorm (GEMM)":
                swap_lrn(copy.deepcopy(graph), lambda _: local_response_norm(), ConvLRN),
                "inference.ConvLRN (the export's)": graph,
                "no LRN at all (a bound, not the model)": plain}
    x = torch.randn(batch, 3, 224, 224)
    paths = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, model) in enumerate(variants.items()):
            path = Path(tmp) / f"{i}.onnx"
            session = onnx_session(save_onnx(model, x[:2], path, input_name="x"))
            paths[name] = lambda s=session: s.run(None, {"x": x.numpy()})
        return median_rates(paths, batch, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--onnx", action="store_true", help="also ONNX Runtime inference")
    add_json_out_argument(parser)
    args = parser.parse_args()
    recorder = Recorder(__file__, args)
    torch.set_num_threads(args.threads)
    x = torch.randn(args.batch_size, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (args.batch_size,))
    rates = median_rates({name: training_step(make, x, y) for name, make in VARIANTS.items()},
                         args.batch_size, args.repeats)
    figures: dict = {"batch_size": args.batch_size, "threads": args.threads,
                     "repeats": args.repeats, "training_step_images_per_s": rates}
    print(f"training step, paper variant, 224 px, batch {args.batch_size}, bf16 autocast, "
          f"channels_last, {args.threads} threads, median of {args.repeats}")
    base = rates["torch.nn.LocalResponseNorm"]
    for name, rate in rates.items():
        print(f"| {name} | {rate:.1f} img/s | {rate / base:.2f}x |")
    ours = {k: v for k, v in VARIANTS.items() if k.startswith("inception")}  # PyTorch's LRN
    rates = median_rates({name: inference(make, x) for name, make in ours.items()},  # has no bf16
                         args.batch_size, args.repeats)
    figures["inference_bf16_images_per_s"] = rates
    print(f"\noptimize_for_inference bf16, paper variant, 224 px, batch {args.batch_size}, "
          f"{args.threads} threads, median of {args.repeats}")
    base = rates["inception LocalResponseNorm, one GEMM"]
    for name, rate in rates.items():
        print(f"| {name} | {rate:.1f} img/s | {rate / base:.2f}x |")
    if args.onnx:
        print(f"\nONNX Runtime fp32 inference, paper variant (export graph), 224 px, batch "
              f"{args.batch_size}, {args.threads} threads, median of {args.repeats}")
        figures["onnxruntime_fp32_images_per_s"] = onnx_rates(args.batch_size, args.repeats)
        for name, rate in figures["onnxruntime_fp32_images_per_s"].items():
            print(f"| {name} | {rate:.1f} img/s |")
    recorder.write(figures)


if __name__ == "__main__":
    main()
