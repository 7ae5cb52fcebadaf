"""`inception bench`: our inference and training paths beside what a user would otherwise pick
(torchvision's `googlenet` in eager PyTorch and in ONNX Runtime), in one process, on the CPU or
a CUDA GPU (`--device`).

Every path runs one batch per call (on a GPU, each call ends with a device synchronisation). The
paths are alternated for `repeats` rounds after a warm-up and each one's median is reported, so
that the machine's noise hits all of them alike. The machine's peak is measured in the same run:
on the CPU one large convolution (256 -> 256 channels, 3x3, 28x28, the batch size) per dtype, on
a GPU one large matmul (8192^3) per dtype, fp32 with TF32 allowed as cuDNN's convolutions allow
it by default. Each path's fraction of it is its multiply-adds x 2 x images/s over that peak. On a
GPU, cuDNN's autotuner (`cudnn.benchmark`) is on for every path alike.

The ONNX Runtime rows (CPU only: the installed onnxruntime runs on the CPU) quantize statically
(QDQ, per-channel) after `quant_pre_process`, calibrated on random images: they measure speed
only (accuracy: `inception export --int8`). `int8` is what `inception export --int8` writes
(unsigned activations, U8S8); `int8 S8S8`, for torchvision's model only, is `quantize_static`'s
activation type by default (signed), which leaves many of its convolutions in fp32. The like-for-
like comparison is U8S8 against U8S8; our model in torchvision's layout, exported and quantized
the same way, separates what the paper's LRN and 5x5 convolutions cost from what the export
costs.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from inception.config import ConfigError, GoogLeNetConfig
from inception.cost import table1_cost
from inception.devices import autocast
from inception.model import GoogLeNet, googlenet_loss
from inception.timing import median_rates


@dataclass
class Row:
    name: str
    img_s: float
    dtype: str
    macs: int  # multiply-adds per image (forward; x3 for a training step)
    peak_fraction: float | None = None
    batch: int | None = None  # images per call, when not the report's batch (latency rows)


@torch.no_grad()
def measure_peak(batch: int, repeats: int, device: torch.device | None = None
                 ) -> dict[str, float]:
    """GFLOP/s in fp32 and bf16 of one large 3x3 convolution (CPU, channels_last) or one large
    matmul (GPU; fp32 with TF32 allowed)."""
    device = device or torch.device("cpu")
    if device.type == "cuda":
        return _gpu_peak(repeats, device)
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        x = torch.randn(batch, 256, 28, 28).to(dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(256, 256, 3, 3).to(dtype).contiguous(memory_format=torch.channels_last)
        rate = median_rates({name: lambda x=x, w=w: F.conv2d(x, w, padding=1)}, batch, repeats)
        out[name] = rate[name] * 2 * 28 * 28 * 256 * 9 * 256 / 1e9
    return out


def _gpu_peak(repeats: int, device: torch.device, n: int = 8192) -> dict[str, float]:
    out = {}
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            a = torch.randn(n, n, device=device, dtype=dtype)
            b = torch.randn(n, n, device=device, dtype=dtype)
            rate = median_rates({name: lambda a=a, b=b: a @ b}, 1, max(repeats, 5), 2, device)
            out[name] = rate[name] * 2 * n**3 / 1e9
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return out


def _torchvision(aux: bool, image_size: int) -> torch.nn.Module:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.googlenet(weights=None, aux_logits=aux, init_weights=True)


def calibration_images(image_size: int) -> torch.Tensor:
    """The 32 random images every INT8 path of `bench` is calibrated on (fixed seed), so that
    both runtimes and both models see the same ones."""
    return torch.randn(32, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))


def _onnx_paths(models: dict[str, torch.nn.Module], x: torch.Tensor, tmp: Path,
                s8s8: tuple[str, ...] = (), int8_sessions: dict[str, Any] | None = None
                ) -> dict[str, Callable[[], Any]]:
    """ORT fp32 and static INT8 (U8S8) sessions for each model, exported with torch.onnx
    (dynamo); also INT8 S8S8 for the models named in `s8s8`. The INT8 (U8S8) sessions also go
    into `int8_sessions`, by model name."""
    from inception.export import onnx_session, quantize_int8, save_onnx

    calibration = calibration_images(x.shape[-1])
    paths = {}
    xn = x.numpy()
    for i, (name, model) in enumerate(models.items()):
        fp32, int8 = tmp / f"{i}-fp32.onnx", tmp / f"{i}-int8.onnx"
        save_onnx(model, x[:2], fp32, input_name="x")
        quantize_int8(fp32, int8, calibration, input_name="x")
        kinds = [("fp32", fp32), ("int8", int8)]
        if name in s8s8:
            s8 = tmp / f"{i}-s8s8.onnx"
            quantize_int8(fp32, s8, calibration, input_name="x", unsigned_activations=False)
            kinds.insert(1, ("int8 S8S8", s8))
        for kind, path in kinds:
            session = onnx_session(path)
            if kind == "int8" and int8_sessions is not None:
                int8_sessions[name] = session
            paths[f"{name}, onnxruntime {kind}"] = (
                lambda s=session: s.run(None, {s.get_inputs()[0].name: xn}))
    return paths


def _openvino_models(models: dict[str, torch.nn.Module], x: torch.Tensor,
                     calibration: torch.Tensor) -> dict[str, tuple[Any, Any]]:
    """(fp32, INT8) OpenVINO models of each PyTorch model, converted as `inception export
    --format openvino` converts, INT8 by NNCF on `calibration`."""
    from inception.export_openvino import convert, quantize

    return {name: (base := convert(model, x[:2]), quantize(base, calibration))
            for name, model in models.items()}


def _openvino_paths(models: dict[str, tuple[Any, Any]], x: torch.Tensor,
                    ) -> dict[str, Callable[[], Any]]:
    """Each model in OpenVINO f32, bf16 (on CPUs that have it) and INT8, run as `inception eval`
    runs an exported file (`runtimes.OpenVINORunner`: the THROUGHPUT hint, requests of
    `REQUEST_BATCH` images, or of the largest divisor of the batch below it)."""
    from inception.runtimes import REQUEST_BATCH, OpenVINORunner, cpu_has_bf16

    xn = x.numpy()
    # Requests that divide the batch: padding would time images the rate does not count.
    request = max(b for b in range(1, min(REQUEST_BATCH, len(x)) + 1) if len(x) % b == 0)
    precisions = ("fp32", "bf16", "int8") if cpu_has_bf16() else ("fp32", "int8")
    paths = {}
    for name, (base, int8) in models.items():
        for precision in precisions:
            model = int8 if precision == "int8" else base
            runner = OpenVINORunner(model, precision, request_batch=request)
            paths[f"{name}, openvino {precision}"] = lambda r=runner: r(xn)
    return paths


def _forward(model: torch.nn.Module, inp: torch.Tensor, device: torch.device,
             bf16: bool = False) -> Callable[[], None]:
    """One timed path: `model(inp)` without gradients, under bf16 autocast when `bf16`."""
    def call() -> None:
        with torch.no_grad(), autocast(device, bf16):
            model(inp)
    return call


def latency_rows(image_size: int, repeats: int, openvino: dict[str, tuple[Any, Any]],
                 onnx: dict[str, Callable[[torch.Tensor], Any]]) -> list[Row]:
    """One image at a time (batch 1, one request in flight): each model's fastest CPU paths,
    OpenVINO INT8 with the LATENCY hint, ONNX Runtime INT8 and PyTorch bf16 (torchvision's
    eager model under autocast, ours through `optimize_for_inference`)."""
    from inception.inference import optimize_for_inference
    from inception.runtimes import OpenVINORunner

    x = torch.randn(1, 3, image_size, image_size)
    xn = x.numpy()
    tv = _torchvision(False, image_size).eval().to(memory_format=torch.channels_last)
    ours = optimize_for_inference(_paper(image_size, False), dtype=torch.bfloat16)

    cpu = torch.device("cpu")
    paths = {"torchvision eager bf16 autocast channels_last, batch 1":
             _forward(tv, x.contiguous(memory_format=torch.channels_last), cpu, True),
             "paper variant optimize_for_inference bf16, batch 1": _forward(ours, x, cpu, True)}
    for name, (_, int8) in openvino.items():
        runner = OpenVINORunner(int8, "int8", request_batch=1, hint="LATENCY")
        paths[f"{name}, openvino int8 LATENCY, batch 1"] = lambda r=runner: r(xn)
    for name, run in onnx.items():
        paths[f"{name}, onnxruntime int8, batch 1"] = lambda r=run: r(x)
    rates = median_rates(paths, 1, max(repeats, 5) * 4, primed=True)
    return [Row(name, rate, "int8" if "int8" in name else "bf16", _macs(name, image_size),
                batch=1) for name, rate in rates.items()]


def _macs(name: str, image_size: int) -> int:
    """Forward multiply-adds per image of the model a row's name names."""
    preset = (GoogLeNetConfig.torchvision(image_size=image_size) if "torchvision" in name
              else GoogLeNetConfig(image_size=image_size, aux_logits=False))
    return table1_cost(preset).total_ops


def _paper(image_size: int, aux: bool, layout: str = "paper") -> GoogLeNet:
    torch.manual_seed(0)
    base = GoogLeNetConfig.torchvision() if layout == "torchvision" else GoogLeNetConfig()
    return GoogLeNet(base.replace(image_size=image_size, aux_logits=aux))


def inference_rows(batch: int, image_size: int, repeats: int, onnx: bool = True,
                   compile: str | None = None, device: torch.device | None = None,
                   openvino: bool = False) -> list[Row]:
    """Every inference path at `batch` x 3 x `image_size`^2, torchvision's and ours; on the CPU,
    with ONNX Runtime's or OpenVINO's rows, also the batch-1 latency of the fastest paths
    (`latency_rows`)."""
    from inception.inference import optimize_for_inference

    device = device or torch.device("cpu")
    gpu = device.type == "cuda"
    cl = torch.channels_last
    tv = _torchvision(False, image_size).eval().to(device)
    tv_cl = _torchvision(False, image_size).eval().to(device, memory_format=cl)
    paper = _paper(image_size, False).eval().to(device)
    paper_cl = _paper(image_size, False).eval().to(device, memory_format=cl)
    x = torch.randn(batch, 3, image_size, image_size).to(device)
    xc = x.contiguous(memory_format=cl)

    def eager(model, inp, bf16=False):
        return _forward(model, inp, device, bf16)

    paths = {}
    if not gpu:
        paths["torchvision eager fp32 NCHW"] = eager(tv, x)
    paths.update({
        "torchvision eager fp32 channels_last": eager(tv_cl, xc),
        "torchvision eager bf16 autocast channels_last": eager(tv_cl, xc, True),
        "paper variant eager fp32 channels_last": eager(paper_cl, xc),
        "paper variant eager bf16 autocast channels_last": eager(paper_cl, xc, True),
        "paper variant optimize_for_inference fp32": eager(optimize_for_inference(paper), x),
        "paper variant optimize_for_inference bf16": eager(
            optimize_for_inference(paper, dtype=torch.bfloat16), x),
    })
    if gpu:
        tv_layout = _paper(image_size, False, "torchvision").eval().to(device)
        paths["torchvision layout (ours) optimize_for_inference bf16"] = eager(
            optimize_for_inference(tv_layout, dtype=torch.bfloat16), x)
    if compile:
        if gpu:
            paths["torchvision bf16 autocast channels_last + torch.compile"] = eager(
                torch.compile(tv_cl, mode=compile), xc, True)
        c16 = torch.compile(optimize_for_inference(paper, dtype=torch.bfloat16), mode=compile)
        paths["paper variant optimize_for_inference bf16 + torch.compile"] = eager(c16, x)
    with tempfile.TemporaryDirectory() as tmp:
        ov_models, sessions = ({}, {}) if gpu else _runtime_paths(
            paths, tv, paper, x, Path(tmp), onnx, openvino)
        # Runtimes alternate on the CPU: each timed call follows an untimed one of its own.
        rates = median_rates(paths, batch, repeats, device=device,
                             primed=bool(ov_models or sessions))
        rows = []
        for name, rate in rates.items():
            dtype = "int8" if "int8" in name else "bf16" if "bf16" in name else "fp32"
            rows.append(Row(name, rate, dtype, _macs(name, image_size)))
        if ov_models or sessions:
            onnx_int8 = {name: lambda one, s=s: s.run(None, {s.get_inputs()[0].name: one.numpy()})
                         for name, s in sessions.items() if "layout" not in name}
            rows += latency_rows(image_size, repeats, ov_models, onnx_int8)
    return rows


def _runtime_paths(paths: dict[str, Callable[[], Any]], tv: torch.nn.Module, paper: GoogLeNet,
                   x: torch.Tensor, tmp: Path, onnx: bool, openvino: bool
                   ) -> tuple[dict[str, tuple[Any, Any]], dict[str, Any]]:
    """Add the CPU runtimes' paths to `paths`: ONNX Runtime (`onnx`) and OpenVINO (`openvino`);
    returns the OpenVINO models and the ONNX Runtime INT8 sessions, for the latency rows."""
    from inception.inference import optimize_for_inference

    sessions: dict[str, Any] = {}
    if onnx:
        # Our model in torchvision's layout (BN, no LRN, 3x3 "5x5", 2x2 pool) isolates what the
        # paper's LRN, 5x5 convolutions and 3x3 pool cost under the same export.
        tv_layout = _paper(x.shape[-1], False, "torchvision").eval()
        exports = {"torchvision": tv,
                   "torchvision layout (ours, export graph)":
                       optimize_for_inference(tv_layout, export=True),
                   "paper variant (export graph)": optimize_for_inference(paper, export=True)}
        paths.update(_onnx_paths(exports, x, tmp, s8s8=("torchvision",), int8_sessions=sessions))
    ov_models = {}
    if openvino:
        graph = optimize_for_inference(paper, export="openvino")
        ov_models = _openvino_models(
            {"torchvision": tv, "paper variant (openvino graph)": graph}, x,
            calibration_images(x.shape[-1]))
        paths.update(_openvino_paths(ov_models, x))
    return ov_models, sessions


def training_rows(batch: int, image_size: int, repeats: int, compile: str | None = None,
                  device: torch.device | None = None) -> list[Row]:
    """One SGD step with aux heads (forward, the 0.3-weighted loss, backward, update)."""
    device = device or torch.device("cpu")
    gpu = device.type == "cuda"
    x = torch.randn(batch, 3, image_size, image_size).to(device)
    y = torch.randint(0, 1000, (batch,)).to(device)

    def step(model, channels_last: bool, bf16: bool, ours: bool, compiled: bool = False):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model = model.train().to(device, memory_format=fmt)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        inp = x.contiguous(memory_format=fmt)
        forward = model.forward_aux if ours else model
        if compiled:
            forward = torch.compile(forward, mode=compile)

        def call():
            with autocast(device, bf16):
                if ours:
                    loss = googlenet_loss(forward(inp), y)
                else:
                    out = forward(inp)
                    loss = F.cross_entropy(out.logits, y) + 0.3 * (
                        F.cross_entropy(out.aux_logits1, y) + F.cross_entropy(out.aux_logits2, y))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return call

    paths = {}
    if not gpu:
        paths["train torchvision fp32 NCHW"] = step(_torchvision(True, image_size), False, False,
                                                    False)
    paths.update({
        "train torchvision fp32 channels_last": step(_torchvision(True, image_size), True, False,
                                                     False),
        "train torchvision bf16 autocast channels_last": step(_torchvision(True, image_size),
                                                              True, True, False),
        "train paper variant fp32 channels_last": step(_paper(image_size, True), True, False,
                                                       True),
        "train paper variant bf16 autocast channels_last": step(_paper(image_size, True), True,
                                                                True, True),
    })
    if gpu:
        paths["train torchvision layout (ours) bf16 autocast channels_last"] = step(
            _paper(image_size, True, "torchvision"), True, True, True)
        if compile:
            paths["train torchvision bf16 autocast channels_last + torch.compile"] = step(
                _torchvision(True, image_size), True, True, False, compiled=True)
            paths["train paper variant bf16 autocast channels_last + torch.compile"] = step(
                _paper(image_size, True), True, True, True, compiled=True)
    rates = median_rates(paths, batch, repeats, device=device)
    return [Row(name, rate, "bf16" if "bf16" in name else "fp32",
                3 * _macs(name, image_size)) for name, rate in rates.items()]


def run(batch: int = 32, image_size: int = 224, repeats: int = 5, train: bool = False,
        onnx: bool = True, compile: str | None = None, device: torch.device | None = None,
        openvino: bool | None = None) -> dict[str, Any]:
    """Every path's median img/s side by side; `compile` is a torch.compile mode (None: none);
    `openvino` adds the OpenVINO rows (None: when the openvino extra, OpenVINO and NNCF, is
    installed)."""
    device = device or torch.device("cpu")
    if train:  # the training rows build the paper's aux heads: refuse a size they cannot take
        try:
            with torch.device("meta"):
                _paper(image_size, True)
        except ConfigError as e:
            size = re.search(r"(?:on the|gives) (\d+x\d+)", str(e))
            where = f"the {size.group(1)} map" if size else "the map"
            raise ConfigError(f"--image-size {image_size} with --train: the paper's aux heads "
                              f"pool 5x5/3 on {where} at 4a and 4d, which covers only maps "
                              "3k+5 wide; use an image size that gives one, such as 224 "
                              "(14x14)") from e
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = before or device.type == "cuda"  # for every path alike
    try:
        peak = measure_peak(batch, repeats, device)
        if openvino is None:
            from inception.runtimes import openvino_installed

            openvino = openvino_installed()
        rows = inference_rows(batch, image_size, repeats, onnx, compile, device, openvino)
        if train:
            rows += training_rows(batch, image_size, repeats, compile, device)
    finally:
        torch.backends.cudnn.benchmark = before
    for r in rows:
        if r.dtype in peak:
            r.peak_fraction = 2 * r.macs * r.img_s / 1e9 / peak[r.dtype]
    return {"batch": batch, "image_size": image_size, "repeats": repeats,
            "device": describe(device), "threads": torch.get_num_threads(),
            "peak_gflops": peak, "rows": [asdict(r) for r in rows]}


def describe(device: torch.device) -> str:
    """The device in words, with torch's version: what a benchmark figure was measured on."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return f"CPU (torch {torch.__version__})"


def format_report(report: dict[str, Any]) -> str:
    peak = report["peak_gflops"]
    device = report.get("device", "CPU")
    what = ("one 8192^3 matmul, fp32 with TF32" if not device.startswith("CPU")
            else "one 256->256 3x3 convolution")
    lines = [f"{device}, batch {report['batch']}, {report['image_size']}x{report['image_size']}, "
             f"{report['threads']} threads, median of {report['repeats']} alternating rounds",
             f"machine peak ({what}): fp32 {peak['fp32']:.0f} GFLOP/s, "
             f"bf16 {peak['bf16']:.0f} GFLOP/s",
             "",
             "| path | img/s | ms per call | multiply-adds/img | fraction of the dtype's peak |",
             "|---|---|---|---|---|"]
    for r in report["rows"]:
        frac = f"{100 * r['peak_fraction']:.0f}%" if r["peak_fraction"] is not None else "-"
        ms = 1000 * (r.get("batch") or report["batch"]) / r["img_s"]
        lines.append(f"| {r['name']} | {r['img_s']:.1f} | {ms:.1f} | {r['macs'] / 1e9:.2f}G | "
                     f"{frac} |")
    return "\n".join(lines)
