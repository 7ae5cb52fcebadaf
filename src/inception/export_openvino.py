"""OpenVINO export: `inception export RUN FILE.xml --format openvino --precision fp32|bf16|int8`.

The graph is `optimize_for_inference(export="openvino")` (BN folded, the LRN layers in the form
OpenVINO fuses, `inference.ConvLRN`), exported to ONNX as `inception export` exports it (a
dynamic batch, input `image`, output `logits`) and read by OpenVINO (`convert`). The
model config, preprocessing, class names, source and precision ride in the model's `rt_info`
under `inception` (JSON strings), so `inception eval` and `predict` run the file with no flags.

Every export is checked before it is written: the fp32 graph, run by OpenVINO in f32, must match
PyTorch on `check` real images within `export.check_close`'s tolerance (the ONNX export's rule);
a bf16 or INT8 export then reports its top-1 beside PyTorch's on those images and how often
its top-1 class agrees (they are written whatever it is: `inception eval FILE` measures them).
INT8 is NNCF's post-training quantization (`nncf.quantize` with its default preset and its full
bias correction, which costs seconds more than its fast one), calibrated on the model's own
training images through its evaluation transform, as `inception export --int8` calibrates ONNX
Runtime's; the default Fashion-MNIST model lost 0.02 points of test top-1 (BENCHMARKS.md,
"Deploying on a CPU").

`precision` is what the runtime computes in: "fp32" (f32 everywhere), "bf16" (the CPU plugin's
bf16, on CPUs with AVX512-BF16 or AMX; f32 elsewhere) or "int8" (quantized convolutions and
matrix products, the rest in the plugin's default precision). The weights are stored in fp32
(int8 for the quantized layers).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from inception.export import (
    ExportError,
    ExportReport,
    _example,
    check_close,
    metadata,
    sample_images,
    save_onnx,
    top1,
    torch_logits,
)
from inception.runtimes import OpenVINORunner, require_nncf, require_openvino
from inception.weights import LoadedModel

PRECISIONS = ("fp32", "bf16", "int8")


def convert(module: torch.nn.Module, example: torch.Tensor) -> Any:
    """`module` (fp32) as an OpenVINO model: exported to ONNX as `inception export` exports
    (`export.save_onnx`, the batch dynamic, input and output named `image` and `logits`) and
    read by OpenVINO's ONNX reader. That route, not `openvino.convert_model` of a `torch.export`
    program: converted from the program, the max pools carry their indices and NNCF left them
    and the layout conversions around them in floating point (OpenVINO's profile)."""
    ov = require_openvino("--format openvino")
    with tempfile.TemporaryDirectory() as tmp:
        path = save_onnx(module.eval(), example, Path(tmp) / "model.onnx")
        model = ov.Core().read_model(str(path))
        # Only the batch is dynamic: OpenVINO plans a fixed image size far better.
        model.reshape({model.inputs[0]: ov.PartialShape([-1, *example.shape[1:]])})
        return model.clone()


def to_openvino(loaded: LoadedModel) -> Any:
    """The fp32 OpenVINO model of `loaded` (not yet quantized), metadata not set: BN folded and
    the LRN layers in OpenVINO's form (`optimize_for_inference(export="openvino")`)."""
    from inception.inference import optimize_for_inference

    graph = optimize_for_inference(loaded.model, export="openvino").cpu()
    return convert(graph, _example(loaded))


def quantize(model: Any, calibration: torch.Tensor) -> Any:
    """NNCF's post-training INT8 quantization of `model`, calibrated on `calibration` (normalised
    images, one per calibration sample)."""
    # NNCF imports torch's C++-extension helper, which logs a warning about CUDA on every CPU
    # machine; it says nothing about the export.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    require_nncf()
    import nncf

    nncf.set_log_level(logging.WARNING)
    samples = [calibration[i:i + 1].numpy() for i in range(len(calibration))]
    with contextlib.redirect_stdout(sys.stderr):  # its progress bars; stdout may be --json
        return nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples),
                             fast_bias_correction=False)


def _set_metadata(model: Any, loaded: LoadedModel, precision: str,
                  quantization: dict[str, Any] | None) -> None:
    entries = {k.removeprefix("inception."): v for k, v in metadata(loaded).items()}
    entries["precision"] = json.dumps(precision)
    if quantization is not None:
        entries["quantization"] = json.dumps(quantization)
    for key, value in entries.items():
        model.set_rt_info(value, ["inception", key])


def _save(model: Any, out: Path) -> None:
    """`out` (.xml) and its .bin beside it, each replaced only once both are written."""
    ov = require_openvino()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".tmp-export-") as tmp:
        xml = Path(tmp) / out.name
        ov.save_model(model, str(xml), compress_to_fp16=False)
        os.replace(xml.with_suffix(".bin"), out.with_suffix(".bin"))
        os.replace(xml, out)


def export_openvino(loaded: LoadedModel, out: str | Path, precision: str = "fp32",
                    calibration: int = 512, check: int = 1000, data: str | None = None,
                    data_dir: str | None = None, threads: int | None = None) -> ExportReport:
    """Write `out` (OpenVINO `.xml` + `.bin`) in `precision` after the checks of the module
    docstring; an `ExportError` (nothing written) when the fp32 graph does not match PyTorch."""
    from inception.evaluation import model_data

    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}; got {precision}")
    out = Path(out)
    if out.suffix != ".xml":
        raise ExportError(f"FILE {out}: an OpenVINO model is an .xml file (with its .bin "
                          "beside it); name it .xml")
    data = model_data(loaded, data, "--data")
    model = to_openvino(loaded)
    x, labels = sample_images(loaded, "eval", check, data, data_dir)
    reference = torch_logits(loaded.model, x)
    fp32 = torch.from_numpy(OpenVINORunner(model, "fp32", threads)(x.numpy()))
    diff = check_close(fp32, reference, "OpenVINO (f32)")
    report = ExportReport(out, f"openvino-{precision}", diff, len(x))
    quantization = None
    if precision == "int8":
        calib, _ = sample_images(loaded, "train", calibration, data, data_dir)
        model = quantize(model, calib)
        report.calibration_images = len(calib)
        quantization = {"method": "nncf post-training", "calibration_images": len(calib)}
    if precision != "fp32":
        deployed = torch.from_numpy(OpenVINORunner(model, precision, threads)(x.numpy()))
        report.accuracy = {
            "pytorch_top1": top1(reference, labels), "openvino_top1": top1(deployed, labels),
            "top1_agreement": round(100.0 * (deployed.argmax(1) == reference.argmax(1))
                                    .float().mean().item(), 4),
            "max_abs_diff": round((deployed - reference).abs().max().item(), 6)}
        report.accuracy["drop"] = round(report.accuracy["pytorch_top1"]
                                        - report.accuracy["openvino_top1"], 4)
    _set_metadata(model, loaded, precision, quantization)
    _save(model, out)
    return report

