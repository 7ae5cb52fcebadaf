"""The deployment side of the command line: loading a model for `eval` and `predict` (a run
directory in PyTorch, or an exported file in its runtime) and `inception export`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from inception.flags import UsageError

if TYPE_CHECKING:
    from inception.weights import LoadedModel


def load_models(paths: Sequence[str], device: str = "cpu",
                runtime: str | None = None) -> list[LoadedModel]:
    """The models at `paths` on `--device` (resolved: `auto` is the GPU when there is one), each
    run directory in PyTorch and each exported file (`.onnx`, `.xml`) in `--runtime` or its own
    runtime, on the CPU."""
    from inception.devices import resolve_device
    from inception.runtimes import is_exported, load_exported, runtime_for
    from inception.weights import WeightsError, load

    try:
        exported = [p for p in paths if is_exported(p)]
        if exported and device not in ("auto", "cpu"):
            raise UsageError(f"--device {device}: MODEL {exported[0]} is an exported model, "
                             "which runs on the CPU; leave --device out or pass --device cpu")
        dev = resolve_device("cpu" if exported else device)
        models = []
        for p in paths:
            if is_exported(p):
                models.append(load_exported(p, runtime))
            else:
                runtime_for(p, runtime)  # refuses any runtime but torch
                models.append(load(p, dev))
        return models
    except WeightsError as e:
        raise UsageError(str(e)) from e


def _precision(args: argparse.Namespace) -> str:
    if args.int8 and args.precision not in (None, "int8"):
        raise UsageError(f"--int8 with --precision {args.precision}: pass one of them")
    precision = "int8" if args.int8 else args.precision or "fp32"
    flag = "--int8" if args.int8 else f"--precision {precision}"
    if args.format == "torch-export" and precision != "fp32":
        raise UsageError(f"{flag} needs --format onnx or openvino")
    if args.format == "onnx" and precision == "bf16":
        raise UsageError("--precision bf16 needs --format openvino (ONNX Runtime's CPU kernels "
                         "have no bf16 convolutions)")
    return precision


def export_command(args: argparse.Namespace) -> int:
    from inception import export
    from inception.data import DataError
    from inception.runtimes import (
        RuntimeUnavailable,
        is_exported,
        require_nncf,
        require_openvino,
    )

    precision = _precision(args)
    if is_exported(args.model):
        raise UsageError(f"MODEL {args.model} is an exported file already; export the run "
                         "directory it came from")
    out = Path(args.file)
    if args.format != "openvino" and out.suffix == ".xml":
        raise UsageError(f"FILE {out}: .xml is an OpenVINO model; pass --format openvino, or "
                         "name the file .onnx")
    written = [out, out.with_suffix(".bin")] if args.format == "openvino" else [out]
    for path in written:
        if path.exists() and not args.force:
            raise UsageError(f"FILE {path} already exists; choose another file or pass --force")
    try:
        if args.format == "openvino":  # before any work: what is missing, in one line
            require_openvino("--format openvino")
            if precision == "int8":
                require_nncf()
    except RuntimeUnavailable as e:
        raise UsageError(str(e)) from e
    (model,) = load_models([args.model])
    try:
        if args.format == "openvino":
            from inception.export_openvino import export_openvino

            report = export_openvino(model, out, precision, calibration=args.calibration,
                                     check=args.check, data=args.data, data_dir=args.data_dir)
        elif args.format == "onnx":
            report = export.export_onnx(model, out, int8=precision == "int8",
                                        calibration=args.calibration, check=args.check,
                                        data=args.data, data_dir=args.data_dir)
        else:
            report = export.export_program(model, out)
    except (export.ExportError, DataError, RuntimeUnavailable) as e:
        raise UsageError(str(e)) from e
    except OSError as e:
        raise UsageError(f"FILE {out}: cannot write it ({e.strerror})") from e
    except RuntimeError as e:  # OpenVINO's errors, writing included, are RuntimeErrors
        raise UsageError(f"FILE {out}: OpenVINO failed ({str(e).splitlines()[0]})") from e
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 0
    _print_report(args, report)
    return 0


def _print_report(args: argparse.Namespace, report) -> None:
    print(f"{report.format}: {report.path}")
    every = (f" (all the data has; --check asked for {args.check})"
             if report.checked_images < args.check and args.format != "torch-export" else "")
    graph = "the fp32 graph, " if report.accuracy else ""
    print(f"checked {graph}on {report.checked_images} images{every}: max |logits - PyTorch's| = "
          f"{report.max_abs_diff:.2e}")
    a = report.accuracy
    if a and "int8_top1" in a:  # ONNX Runtime INT8
        print(f"top-1 fp32 {a['fp32_top1']:.2f}%  int8 {a['int8_top1']:.2f}%  "
              f"({-a['drop']:+.2f} points)")
    elif a:
        print(f"top-1 PyTorch {a['pytorch_top1']:.2f}%  OpenVINO {args.precision or 'int8'} "
              f"{a['openvino_top1']:.2f}% ({-a['drop']:+.2f} points); the same top-1 class as "
              f"PyTorch on {a['top1_agreement']:.2f}% of the images")
    if report.calibration_images:
        every = (f" (all the data has; --calibration asked for {args.calibration})"
                 if report.calibration_images < args.calibration else "")
        print(f"calibrated on {report.calibration_images} training images{every}")
    if report.speed:
        sp = report.speed
        print(f"onnxruntime, batch {sp['batch']}: fp32 {sp['fp32_img_s']:.0f} img/s, int8 "
              f"{sp['int8_img_s']:.0f} img/s ({sp['speedup']:.2f}x)")
