"""The LRN layers' share of the paper variant's inference time, from each runtime's own profiler.

    .venv/bin/python benchmarks/lrn_share.py [--threads 2] [--batch 32] [--repeats 5]

The paper's network at 224 px (random weights, BN folded), batch 32, before and after: OpenVINO
(bf16, and INT8 by NNCF on 32 random calibration images) running the ONNX file `inception export`
writes for ONNX Runtime (the LRN as rsqrt(s) * sqrt(rsqrt(s))), against what `inception export
--format openvino` converts (the LRN in OpenVINO's form, (s^1/4)^-3 as one chain); and ONNX
Runtime INT8 (QDQ U8S8, `inception export --int8`). Both OpenVINO graphs go through OpenVINO's
ONNX reader, as the export does.
For each, the profiler's per-node times (OpenVINO's PERF_COUNT, ONNX Runtime's session profile)
are summed over `--repeats` calls after a warm-up, and the nodes that belong to an LRN layer
are found by name: each runtime keeps the ONNX graph's node names (the exporter's scope
metadata says which are an LRN's), or names a node it inserted or fused after an LRN node or
tensor, which then counts as the LRN's. The median
wall time of the same calls is printed beside the profile. The run's JSON record goes to
benchmarks/results/ (`_record.py`).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _record import Recorder, add_json_out_argument  # this folder's _record.py

from inception.bench import _paper, calibration_images
from inception.export import quantize_int8, save_onnx
from inception.export_openvino import quantize
from inception.inference import optimize_for_inference
from inception.runtimes import ov_config


def lrn_names(path: Path) -> set[str]:
    """The node and tensor names of an exported ONNX file's LRN layers (the exporter's scope
    metadata names the module each node came from)."""
    import onnx

    return {name for node in onnx.load(str(path)).graph.node
            if "ConvLRN" in " ".join(p.value for p in node.metadata_props)
            for name in (node.name, *node.output)}


def is_lrn(profiled: str, lrn: set[str]) -> bool:
    """Whether a profiled node is one of `lrn`'s, or one a runtime named after one of them
    ("node_mul_45/fq_output_0", "conv2d_4_DequantizeLinear"): the name appears in it, not
    followed by more digits ("mul_4" is not in "mul_45")."""
    return any(re.search(rf"(?<![A-Za-z0-9]){re.escape(n)}(?![0-9]|_[0-9])", profiled)
               for n in lrn)


def export_graph(path: Path, form: str) -> set[str]:
    """The paper variant's export graph with `form`'s LRN written to `path` as ONNX (what
    `inception export` writes, and what OpenVINO's export reads); its LRN names."""
    net = optimize_for_inference(_paper(224, False), export=True if form == "onnxruntime"
                                 else form).eval()
    save_onnx(net, torch.randn(2, 3, 224, 224), path, input_name="x")
    return lrn_names(path)


def inputs(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The timed batch (`batch` random 224 px images) and the 32 random images both runtimes'
    INT8 is calibrated on (`inception bench`'s), from fixed seeds."""
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    return x, calibration_images(224)


def openvino_profile(model, x: torch.Tensor, precision: str, threads: int, repeats: int,
                     calibration: torch.Tensor, lrn: set[str]) -> dict:
    import openvino as ov

    if precision == "int8":
        model = quantize(model, calibration)
    model.reshape({model.inputs[0]: list(x.shape)})
    config = {**ov_config(precision, threads, "LATENCY"), "PERF_COUNT": "YES"}
    compiled = ov.Core().compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    xn = x.numpy()
    request.infer({0: xn})
    times, total, in_lrn = [], 0.0, 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        request.infer({0: xn})
        times.append(time.perf_counter() - t)
        for p in request.get_profiling_info():
            ms = p.real_time.total_seconds() * 1e3
            total += ms
            in_lrn += ms if is_lrn(p.node_name, lrn) else 0.0
    return {"wall_ms": 1e3 * statistics.median(times), "profiled_ms": total / repeats,
            "lrn_ms": in_lrn / repeats}


def onnxruntime_profile(fp32: Path, x: torch.Tensor, threads: int, repeats: int,
                        calibration: torch.Tensor, lrn: set[str], tmp: Path) -> dict:
    import onnxruntime as ort

    int8 = tmp / "int8.onnx"
    quantize_int8(fp32, int8, calibration, input_name="x")
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_profiling, options.log_severity_level = True, 3
    options.profile_file_prefix = str(tmp / "profile")
    session = ort.InferenceSession(str(int8), options, providers=["CPUExecutionProvider"])
    xn = x.numpy()
    session.run(None, {"x": xn})
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        session.run(None, {"x": xn})
        times.append(time.perf_counter() - t)
    events = json.loads(Path(session.end_profiling()).read_text())
    per_node: dict[str, float] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[e["name"].removesuffix("_kernel_time")] += e["dur"] / 1e3
    calls = repeats + 1  # the profile covers the warm-up call too
    total = sum(per_node.values()) / calls
    in_lrn = sum(ms for name, ms in per_node.items() if is_lrn(name, lrn)) / calls
    return {"wall_ms": 1e3 * statistics.median(times), "profiled_ms": total, "lrn_ms": in_lrn}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    add_json_out_argument(parser)
    args = parser.parse_args()
    recorder = Recorder(__file__, args)
    torch.set_num_threads(args.threads)
    x, calibration = inputs(args.batch)
    figures = {}
    print(f"paper variant, 224 px, batch {args.batch}, {args.threads} threads; per call: the "
          f"median wall time of {args.repeats} calls, the profiler's sum and the LRN's part\n")
    print("| runtime, precision | graph | wall (ms) | profiled (ms) | LRN (ms) | LRN share |")
    print("|---|---|---|---|---|---|")
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        onnx_file, ov_file = Path(tmp) / "onnxruntime.onnx", Path(tmp) / "openvino.onnx"
        graphs = {"ONNX export (rsqrt form), read by OpenVINO":
                  (onnx_file, export_graph(onnx_file, "onnxruntime")),
                  "inception export --format openvino (chain form)":
                  (ov_file, export_graph(ov_file, "openvino"))}
        for runtime in ("openvino bf16", "openvino int8", "onnxruntime int8"):
            for source, (path, lrn) in graphs.items():
                if runtime == "onnxruntime int8":
                    if path != onnx_file:
                        continue
                    source = "inception export --int8 (rsqrt form)"
                    r = onnxruntime_profile(path, x, args.threads, args.repeats, calibration,
                                            lrn, Path(tmp))
                else:
                    r = openvino_profile(ov.Core().read_model(str(path)), x, runtime.split()[1],
                                         args.threads, args.repeats, calibration, lrn)
                figures[f"{runtime}, {source}"] = r
                print(f"| {runtime} | {source} | {r['wall_ms']:.1f} | {r['profiled_ms']:.1f} | "
                      f"{r['lrn_ms']:.1f} | {100 * r['lrn_ms'] / r['profiled_ms']:.0f}% |",
                      flush=True)
    recorder.write(figures)


if __name__ == "__main__":
    main()
