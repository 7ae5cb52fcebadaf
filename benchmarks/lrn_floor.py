"""What the paper variant's LRN layers cost, piece by piece, in the fastest CPU runtimes.

    .venv/bin/python benchmarks/lrn_floor.py [--threads 2] [--batch 32] [--repeats 15]
        [--runtimes openvino-int8 openvino-bf16 onnxruntime-int8]

OpenVINO INT8 (NNCF) and bf16, and ONNX Runtime INT8 (QDQ U8S8), each run as `inception bench`
runs it (OpenVINO: THROUGHPUT hint, requests of 8 images; INT8 calibrated on `bench`'s 32 random
images), on torchvision's `googlenet` and on the paper variant (224 px, random weights, batch
32) with its LRN in each exact form, then taken apart one piece at a time:

1. "LRN as exported": what `inception export` writes for the runtime (`ConvLRN`: the squares,
   the window sum as a 1x1 convolution, the power s^-3/4 and the multiply); then the same LRN
   with its power as one `Pow`, as exp(-3/4 log s), in `ConvLRN`'s form for the other runtime,
   and as ONNX's own `LRN` operation (`torch.nn.LocalResponseNorm`);
2. "no window sum": each LRN's window shrunk to its own channel, x * (k + alpha/n * x^2)^-3/4
   with the exported form of the power; no convolution;
3. "no window sum, no power": x * (k + alpha/n * x^2), multiplies and an add;
4. "no LRN": the two LRN layers removed.

Graphs 2 and 3 are not the LRN; they say where its time goes. Graph 2 against graph 1 is the
window sum's cost; graph 3 against graph 2 is the power's (s^-3/4 needs a fourth root: two
square roots and a division in OpenVINO's fused kernel, float operations between a dequantize
and a quantize in ONNX Runtime); graph 4 against graph 3 is what remains, the element-wise
multiplies over each LRN's map. All paths are alternated in one process, each timed call after
an untimed one of the same path (`timing.median_rates(primed=True)`), the median of `--repeats`
rounds; the untimed calls, each right after the previous path's, are reported too ("cold"). The
last column is each exact form's largest |logit difference| from the paper's PyTorch model in
fp32 (4 images), before the runtime and its precision. The JSON record goes to
benchmarks/results/ (`_record.py`).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from _record import Recorder, add_json_out_argument  # this folder's _record.py
from lrn import swap_lrn, torch_lrn  # this folder's lrn.py
from lrn_share import inputs  # this folder's lrn_share.py
from torch import nn

from inception.bench import _paper, _torchvision
from inception.export import onnx_session, quantize_int8, save_onnx
from inception.export_openvino import convert, quantize
from inception.inference import ConvLRN, optimize_for_inference
from inception.runtimes import OpenVINORunner
from inception.timing import median_rates

RUNTIMES = {"openvino-int8": ("openvino", "int8"), "openvino-bf16": ("openvino", "bf16"),
            "onnxruntime-int8": ("onnxruntime", "int8")}
EXACT = ("LRN as exported", "LRN, power as Pow", "LRN, power as exp(log)",
         "LRN, the other runtime's form", "LRN as ONNX's LRN operation")
GRAPHS = (*EXACT, "no window sum", "no window sum, no power", "no LRN")


class PowerAs(nn.Module):
    """A `ConvLRN` with its power s^-beta as one `Pow` ("pow") or as exp(-beta log s)."""

    def __init__(self, lrn: ConvLRN, kind: str) -> None:
        super().__init__()
        self.window, self.beta, self.kind = lrn.window, lrn.beta, kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.window(x * x)
        if self.kind == "pow":
            return x * s.pow(-self.beta)
        return x * torch.exp(-self.beta * torch.log(s))


class OwnChannel(nn.Module):
    """A `ConvLRN` window of one channel: k + alpha/n * x^2, as an element-wise operation."""

    def __init__(self, window: nn.Conv2d) -> None:
        super().__init__()
        self.k, self.c = window.bias[0].item(), window.weight[0, 0, 0, 0].item()

    def forward(self, squares: torch.Tensor) -> torch.Tensor:
        return self.k + self.c * squares


class NoPower(nn.Module):
    """x * (k + alpha/n * x^2): graph 3's stand-in for an LRN."""

    def __init__(self, lrn: ConvLRN) -> None:
        super().__init__()
        self.own = OwnChannel(lrn.window)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.own(x * x)


def paper_graph(form: str, graph: str) -> nn.Module:
    """The paper variant's export graph for `form` ("onnxruntime", "openvino"), its LRN layers
    taken apart as `graph` says."""
    paper = _paper(224, False)
    if graph == EXACT[4]:  # torch's LRN, which the export leaves as it is
        paper = swap_lrn(paper, torch_lrn)
    net = optimize_for_inference(paper, export=True if form == "onnxruntime" else form)
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, ConvLRN) or graph == EXACT[0]:
                continue
            if graph in EXACT[1:3]:
                setattr(parent, name, PowerAs(child, "pow" if graph == EXACT[1] else "exp"))
            elif graph == EXACT[3]:
                child.form = "openvino" if form == "onnxruntime" else "onnxruntime"
            elif graph == "no window sum":
                child.window = OwnChannel(child.window)
            else:
                setattr(parent, name, NoPower(child) if graph == GRAPHS[6] else nn.Identity())
    return net.eval()


def openvino_path(model: nn.Module, x: torch.Tensor, calibration: torch.Tensor,
                  threads: int, precision: str) -> Callable[[], object]:
    """`model` on `x` in OpenVINO `precision`, converted (and for INT8 quantized) as
    `inception export --format openvino` does and run as `inception bench` runs it."""
    ov_model = convert(model, x[:2])
    if precision == "int8":
        ov_model = quantize(ov_model, calibration)
    runner = OpenVINORunner(ov_model, precision, threads)
    xn = x.numpy()
    return lambda: runner(xn)


def onnxruntime_path(model: nn.Module, x: torch.Tensor, calibration: torch.Tensor,
                     threads: int, tmp: Path, i: int) -> Callable[[], object]:
    """`model` on `x` in ONNX Runtime INT8, exported and quantized as `inception export --int8`
    does (files `i`-fp32.onnx and `i`-int8.onnx in `tmp`)."""
    fp32, int8 = tmp / f"{i}-fp32.onnx", tmp / f"{i}-int8.onnx"
    save_onnx(model, x[:2], fp32, input_name="x")
    quantize_int8(fp32, int8, calibration, input_name="x")
    session, xn = onnx_session(int8, threads), x.numpy()
    return lambda: session.run(None, {"x": xn})


def main() -> None:
    """Build every path, time them alternated, print the table and write the record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES))
    add_json_out_argument(parser)
    args = parser.parse_args()
    recorder = Recorder(__file__, args)
    torch.set_num_threads(args.threads)
    x, calibration = inputs(args.batch)
    paths: dict[tuple[str, str], Callable[[], object]] = {}
    diffs: dict[tuple[str, str], float] = {}
    with torch.no_grad():
        reference = _paper(224, False).eval()(x[:4])
    with tempfile.TemporaryDirectory() as tmp:
        for runtime in args.runtimes:
            form, precision = RUNTIMES[runtime]
            models = {"torchvision googlenet": _torchvision(False, 224).eval()}
            models |= {f"paper, {g}": paper_graph(form, g) for g in GRAPHS}
            with torch.no_grad():  # each exact form's fp32 graph against the paper's model
                for g in EXACT:
                    diffs[runtime, f"paper, {g}"] = (
                        models[f"paper, {g}"](x[:4]) - reference).abs().max().item()
            for i, (name, model) in enumerate(models.items()):
                paths[runtime, name] = (
                    openvino_path(model, x, calibration, args.threads, precision)
                    if form == "openvino"
                    else onnxruntime_path(model, x, calibration, args.threads, Path(tmp), i))
        cold: dict[str, float] = {}
        rates = median_rates({" | ".join(key): call for key, call in paths.items()},
                             args.batch, args.repeats, primed=True, cold=cold)
    print(f"batch {args.batch}, 224 px, {args.threads} threads; median of {args.repeats} "
          "alternating rounds\n")
    print("| runtime | graph | img/s | ms per batch | / torchvision | img/s cold | "
          "fp32 graph vs model |")
    print("|---|---|---|---|---|---|---|")
    figures: dict[str, dict[str, float]] = {}
    for key, rate in rates.items():
        runtime, name = key.split(" | ")
        ratio = rate / rates[f"{runtime} | torchvision googlenet"]
        diff = diffs.get((runtime, name))
        figures[f"{runtime}, {name}"] = {"img_per_s": rate, "ratio_to_torchvision": ratio,
                                         "img_per_s_cold": cold[key], "max_abs_diff_fp32": diff}
        print(f"| {runtime} | {name} | {rate:.1f} | {1e3 * args.batch / rate:.1f} | "
              f"{ratio:.2f}x | {cold[key]:.1f} | {'-' if diff is None else f'{diff:.1e}'} |")
    recorder.write(figures)


if __name__ == "__main__":
    main()
