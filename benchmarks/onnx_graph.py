"""Which arrangement of the paper variant ONNX Runtime runs fastest, and which INT8 form.

    .venv/bin/python benchmarks/onnx_graph.py [--threads 2] [--batch-size 32] [--repeats 5]

The paper's network (LRN, true 5x5, 224 px, random weights: speed only) is exported three ways,
each checked against PyTorch:

- fused: the three input-side 1x1 convolutions of every Inception module as one, split after
  (what `optimize_for_inference` does for PyTorch), LRN as one GEMM (`modules.LocalResponseNorm`);
- unfused: the 1x1 convolutions apart, LRN as one GEMM;
- export graph: what `inception export` writes, `optimize_for_inference(export=True)`: the 1x1
  convolutions apart, LRN as `inference.ConvLRN` (a 1x1 convolution of the squares).

The export graph and torchvision's `googlenet` are also quantized both ways (static, QDQ,
per-channel weights): signed activations (S8S8, `quantize_static`'s default) and unsigned
(U8S8, what `inception export --int8` writes). For every file the table gives ONNX Runtime's
layout conversions (ReorderInput/ReorderOutput), its int8 and fp32 convolutions after graph
optimisation, and images/s, all paths alternated for `--repeats` rounds, medians. The run's
JSON record (machine, versions, commit, figures) goes to benchmarks/results/ (`_record.py`).
"""

from __future__ import annotations

import argparse
import collections
import copy
import tempfile
from pathlib import Path

import onnx
import torch
import torchvision
from _record import Recorder, add_json_out_argument  # this folder's _record.py

import inception
from inception.export import onnx_session, quantize_int8, save_onnx
from inception.inference import InferenceGoogLeNet, optimize_for_inference
from inception.timing import median_rates


def optimised_ops(path: Path, threads: int) -> collections.Counter:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.optimized_model_filepath = str(path.with_suffix(".opt.onnx"))
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath)
                               .graph.node)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    add_json_out_argument(parser)
    args = parser.parse_args()
    recorder = Recorder(__file__, args)
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    paper = inception.googlenet(aux_logits=False).eval()
    torch.manual_seed(0)
    tv = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).eval()
    x = torch.randn(args.batch_size, 3, 224, 224)
    calibration = torch.randn(32, 3, 224, 224, generator=torch.Generator().manual_seed(1))

    fused_net = optimize_for_inference(paper).net.to(memory_format=torch.contiguous_format)
    graphs = {
        "paper variant, fused": InferenceGoogLeNet(fused_net, torch.float32, stem_chunk=None,
                                                   cast=False),
        "paper variant, unfused": InferenceGoogLeNet(copy.deepcopy(paper), torch.float32,
                                                     stem_chunk=None, cast=False),
        "paper variant, export graph": optimize_for_inference(paper, export=True),
    }
    with torch.no_grad():
        reference = paper(x[:4])
    with tempfile.TemporaryDirectory() as tmp:
        files: dict[str, Path] = {}
        for i, (name, graph) in enumerate(graphs.items()):
            with torch.no_grad():
                diff = (graph(x[:4]) - reference).abs().max().item()
            assert diff < 1e-4, (name, diff)
            files[name + " fp32"] = save_onnx(graph, x[:2], Path(tmp) / f"p{i}.onnx",
                                              input_name="x")
        files["torchvision fp32"] = save_onnx(tv, x[:2], Path(tmp) / "tv.onnx", input_name="x")
        for name in ("paper variant, export graph", "torchvision"):
            fp32 = files[name + " fp32"]
            for unsigned, kind in ((False, "int8 S8S8"), (True, "int8 U8S8")):
                out = fp32.with_name(f"{fp32.stem}-{kind[-4:]}.onnx")
                quantize_int8(fp32, out, calibration, input_name="x",
                              unsigned_activations=unsigned)
                files[f"{name} {kind}"] = out
        xn = x.numpy()
        sessions = {name: onnx_session(path, args.threads) for name, path in files.items()}
        rates = median_rates({name: lambda s=s: s.run(None, {"x": xn})
                              for name, s in sessions.items()}, len(x), args.repeats)
        print(f"ONNX Runtime, batch {len(x)}, 224x224, {args.threads} threads, "
              f"median of {args.repeats} alternating rounds")
        print("| file | layout conversions | int8 convs | fp32 convs | img/s |")
        print("|---|---|---|---|---|")
        rows = []
        for name, path in files.items():
            ops = optimised_ops(path, args.threads)
            reorders = ops["ReorderInput"] + ops["ReorderOutput"]
            print(f"| {name} | {reorders} | {ops['QLinearConv']} | {ops['Conv']} "
                  f"| {rates[name]:.1f} |")
            rows.append({"file": name, "layout_conversions": reorders,
                         "int8_convs": ops["QLinearConv"], "fp32_convs": ops["Conv"],
                         "images_per_s": rates[name]})
    recorder.write({"batch_size": len(x), "threads": args.threads, "repeats": args.repeats,
                    "files": rows})


if __name__ == "__main__":
    main()
