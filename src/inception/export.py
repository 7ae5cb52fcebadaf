"""Deployment formats: ONNX (fp32, or INT8 by onnxruntime's static quantization) and torch.export.

The ONNX graph comes from `torch.onnx.export` (the torch.export-based exporter) with a dynamic
batch dimension. Its input `image` is the normalised N x C x S x S float tensor and its output
`logits`; the model config, the preprocessing (resize, crop, mean, std) and the class names go
into the ONNX metadata (`inception.model`, `inception.preprocessing`, `inception.classes`, JSON),
so the file is self-describing. Every export is run by onnxruntime on real images and compared
with PyTorch before it is kept.

INT8 is onnxruntime's post-training static quantization in QDQ format (per-channel weights),
after `quant_pre_process`, calibrated on N training images through the model's own evaluation
transform (`Preprocessing.views`, the one `inception eval` and training's validation use).
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inception.weights import LoadedModel

INPUT_NAME, OUTPUT_NAME = "image", "logits"
ONNX_TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """An export that cannot be produced or does not match PyTorch; the message says why."""


@dataclass
class ExportReport:
    path: Path
    format: str
    max_abs_diff: float | None = None
    checked_images: int = 0
    calibration_images: int = 0  # INT8 only; fewer than asked when the data has fewer
    accuracy: dict[str, Any] | None = None
    speed: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def metadata(loaded: LoadedModel) -> dict[str, str]:
    """What travels inside an exported file: config, preprocessing, classes (JSON strings)."""
    return {
        "inception.model": json.dumps(loaded.config.to_dict()),
        "inception.preprocessing": json.dumps(loaded.preprocessing.to_dict()),
        "inception.classes": json.dumps(loaded.classes),
        "inception.source": json.dumps({k: v for k, v in loaded.meta.items()
                                        if isinstance(v, str | int | float)}),
    }


def _example(loaded: LoadedModel, batch: int = 2) -> torch.Tensor:
    s = loaded.image_size
    return torch.randn(batch, loaded.config.in_chans, s, s)


def _atomic_target(out: Path) -> Path:
    """A temporary file beside `out` (same suffix, which torch.export insists on)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.with_name(f".tmp-{os.getpid()}-{out.name}")


def _plain(loaded: LoadedModel) -> torch.nn.Module:
    """A CPU copy of the model with contiguous (NCHW) weights: exporters serialise it as it
    is, and an exported file is device-independent (a model loaded on a GPU exports the same)."""
    return copy.deepcopy(loaded.model).to("cpu", memory_format=torch.contiguous_format).eval()


def _fused(loaded: LoadedModel) -> torch.nn.Module:
    """The inference graph for ONNX (`optimize_for_inference(export=True)`): BN folded, the 1x1
    convolutions left apart and the LRN layers as `ConvLRN`, the arrangement ONNX Runtime runs
    fastest."""
    from inception.inference import optimize_for_inference

    return optimize_for_inference(loaded.model, export=True).cpu()


def to_onnx_model(loaded: LoadedModel):
    """The model as an `onnx.ModelProto`, metadata included."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = save_onnx(_fused(loaded), _example(loaded), Path(tmp) / "model.onnx")
        proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, metadata(loaded))
    return proto


def save_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path,
              input_name: str = INPUT_NAME, output_name: str = OUTPUT_NAME) -> Path:
    """`model` written to `path` by `torch.onnx.export` (the torch.export-based exporter, graph
    optimisation on), traced on `example`, with a dynamic batch dimension. The one place this
    project calls the exporter (`inception export`, `inception bench`, the benchmarks)."""
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        program = torch.onnx.export(model.eval(), (example,), dynamo=True, verbose=False,
                                    input_names=[input_name], output_names=[output_name],
                                    dynamic_shapes={"x": {0: batch}}, external_data=False,
                                    optimize=True, report=False)
        program.save(str(path), external_data=False)
    except Exception as e:  # the exporter's own error types vary between versions
        raise ExportError(f"torch.onnx.export failed: {type(e).__name__}: {e}") from e
    return path


def onnx_session(path: str | Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The inception metadata of an exported ONNX file, decoded."""
    meta = onnx_session(path, threads=1).get_modelmeta().custom_metadata_map
    return {k.removeprefix("inception."): json.loads(v) for k, v in meta.items()
            if k.startswith("inception.")}


def sample_images(loaded: LoadedModel, split: str, n: int, data: str | None = None,
                  data_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised images, labels): the first `n` images of the model's own data, `split` "train"
    (calibration) or "eval" (checks), each through the model's 1-crop evaluation transform
    (`Preprocessing.views`, as `inception eval` feeds it)."""
    from inception import data as data_lib
    from inception.evaluation import eval_images, model_data, view_batches

    data = model_data(loaded, data, "--data")
    if split == "eval":
        images, _ = eval_images(data, [loaded], subset=n, data_dir=data_dir, crops=1)
    elif data == "fashion-mnist":
        train, _ = data_lib.fashion_mnist(data_dir)
        images = data_lib.LabelledImages.from_split(train.subset(n), loaded.channels)
    else:
        train_dir, _, classes = data_lib.image_folder_splits(data)
        folder = data_lib.LabelledImages.from_folder(train_dir, classes, loaded.channels,
                                                     loaded.preprocessing.decode_side(1))
        # Spread calibration images over the classes: ImageFolder lists them class by class.
        step = max(1, len(folder) // n)
        subset = torch.utils.data.Subset(folder.folder, range(0, len(folder), step)[:n])
        images = data_lib.LabelledImages(folder=subset)
    xs, ys = zip(*view_batches(images, [loaded.preprocessing], crops=1, batch_size=256),
                 strict=True)
    return torch.cat([x[0].flatten(0, 1) for x in xs]), torch.cat(ys)


def _batches(x: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    for i in range(0, len(x), size):
        yield x[i:i + size]


def onnx_logits(session, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    outs = [session.run([OUTPUT_NAME], {INPUT_NAME: b.numpy()})[0] for b in _batches(x, batch)]
    return torch.from_numpy(np.concatenate(outs))


@torch.no_grad()
def torch_logits(model: torch.nn.Module, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """`model`'s logits for `x` (on the CPU), in batches on the model's device."""
    device = next(model.parameters()).device
    return torch.cat([model(b.to(device)).float().cpu() for b in _batches(x, batch)])


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return round(100.0 * (logits.argmax(1) == labels).float().mean().item(), 4)


def quantize_int8(fp32_path: Path, out: Path, calibration: torch.Tensor,
                  input_name: str = INPUT_NAME, unsigned_activations: bool = True) -> None:
    """onnxruntime static INT8 (QDQ, per-channel signed weights) of the fp32 file.

    Activations are unsigned (U8S8) by default: on x86 ONNX Runtime then runs every convolution
    as an NHWC `QLinearConv` and every pool and concatenation in int8, where with signed
    activations (S8S8, `quantize_static`'s default) it fell back to fp32 for 27 of
    torchvision's 57 convolutions here. U8S8's known risk, saturation in AVX2's `vpmaddubsw`, does
    not arise on CPUs with AVX512-VNNI; `inception export --int8` reports the accuracy either
    way."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        """Calibration batches of 32 images, once."""

        def __init__(self) -> None:
            self.batches = iter(list(_batches(calibration, 32)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            b = next(self.batches, None)
            return None if b is None else {input_name: b.numpy()}

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre))
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True,
                        activation_type=(QuantType.QUInt8 if unsigned_activations
                                         else QuantType.QInt8),
                        weight_type=QuantType.QInt8)


def export_onnx(loaded: LoadedModel, out: str | Path, int8: bool = False, calibration: int = 512,
                check: int = 1000, data: str | None = None, data_dir: str | None = None,
                speed_batch: int = 32) -> ExportReport:
    """Write `out` (ONNX, fp32 or INT8) after checking it against PyTorch on `check` real images.

    fp32: onnxruntime's logits must equal PyTorch's (`check_close`). INT8: its top-1 on the
    `check` images is reported next to fp32 onnxruntime's, with both speeds side by side.
    """
    import onnx

    from inception.evaluation import model_data
    from inception.timing import median_rates

    data = model_data(loaded, data, "--data")  # before the export, which takes seconds
    out = Path(out)
    tmp = _atomic_target(out)
    fp32_path = tmp.with_name(tmp.name + "-fp32.onnx")
    try:
        onnx.save(to_onnx_model(loaded), str(fp32_path))
        x, labels = sample_images(loaded, "eval", check, data, data_dir)
        fp32 = onnx_session(fp32_path)
        ort_logits = onnx_logits(fp32, x)
        pt_logits = torch_logits(loaded.model, x)
        diff = check_close(ort_logits, pt_logits, "onnxruntime")
        report = ExportReport(out, "onnx-int8" if int8 else "onnx", diff, len(x))
        if not int8:
            os.replace(fp32_path, out)
            return report
        calib, _ = sample_images(loaded, "train", calibration, data, data_dir)
        quantize_int8(fp32_path, tmp, calib)
        report.calibration_images = len(calib)
        proto = onnx.load(str(tmp))
        onnx.helper.set_model_props(proto, {**metadata(loaded),
                                            "inception.quantization": json.dumps(
                                                {"method": "static", "format": "QDQ",
                                                 "activations": "uint8", "weights": "int8",
                                                 "calibration_images": len(calib)})})
        onnx.save(proto, str(tmp))
        int8_session = onnx_session(tmp)
        int8_logits = onnx_logits(int8_session, x)
        report.accuracy = {"fp32_top1": top1(ort_logits, labels),
                           "int8_top1": top1(int8_logits, labels)}
        report.accuracy["drop"] = round(report.accuracy["fp32_top1"]
                                        - report.accuracy["int8_top1"], 4)
        b = x[:speed_batch].numpy()
        report.speed = median_rates(
            {"fp32_img_s": lambda: fp32.run([OUTPUT_NAME], {INPUT_NAME: b}),
             "int8_img_s": lambda: int8_session.run([OUTPUT_NAME], {INPUT_NAME: b})}, len(b), 7)
        report.speed = {k: round(v, 1) for k, v in report.speed.items()}
        report.speed["speedup"] = round(report.speed["int8_img_s"] / report.speed["fp32_img_s"],
                                        2)
        report.speed["batch"] = len(b)
        os.replace(tmp, out)
        return report
    finally:
        for p in (tmp, fp32_path):
            p.unlink(missing_ok=True)


def check_close(exported: torch.Tensor, reference: torch.Tensor, what: str) -> float:
    """The largest |exported - reference| over the logits; `ExportError` when it exceeds
    `ONNX_TOLERANCE` x max(1, the largest |reference logit|): relative for large logits,
    absolute for small ones."""
    diff = (exported - reference).abs().max().item()
    bound = ONNX_TOLERANCE * max(1.0, reference.abs().max().item())
    if diff > bound:
        raise ExportError(f"{what}'s logits differ from PyTorch's by {diff:.2e} (allowed "
                          f"{bound:.2e}); the export was not written")
    return diff


def export_program(loaded: LoadedModel, out: str | Path) -> ExportReport:
    """A `torch.export` program (`.pt2`) with a dynamic batch dimension; the metadata rides in
    the archive as `inception.json`. Checked against the eager model on random input
    (`check_close`)."""
    out = Path(out)
    tmp = _atomic_target(out)
    model = _plain(loaded)
    batch = torch.export.Dim("batch", min=1, max=65536)
    x = _example(loaded, 3)
    try:
        program = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}})
        with torch.no_grad():
            diff = check_close(program.module()(x), model(x), "the torch.export program")
        torch.export.save(program, str(tmp),
                          extra_files={"inception.json": json.dumps(metadata(loaded))})
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportReport(out, "torch-export", diff, len(x))
