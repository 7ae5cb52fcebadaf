"""Exported models in the runtimes that run them on the CPU: ONNX Runtime and OpenVINO.

`load_exported(FILE)` gives a `LoadedModel` like `weights.load` does for a run directory, so that
`inception eval` and `predict` measure the deployed form itself, not the PyTorch model it came
from. Its `model` is an `ExportedModel`: normalised float32 N x C x S x S in, float32 logits out,
on the CPU; the config, preprocessing and class names come from the file's own metadata.

Which runtime runs a file: `.xml` (an OpenVINO model, `inception export --format openvino`) runs
in OpenVINO; `.onnx` in ONNX Runtime by default, or in OpenVINO (which reads ONNX) with
`--runtime openvino`.

OpenVINO runs the way its documentation recommends for throughput on a CPU: the THROUGHPUT hint (one
inference stream per few cores) fed by an `AsyncInferQueue` of fixed-size requests (`REQUEST_BATCH`
images; the images left over run one at a time), so that every stream is busy and each request's
activations stay in the core's cache. Static shapes: the model is reshaped to the request's batch
before it is compiled, which OpenVINO's CPU plugin runs faster than a dynamic batch. OpenVINO is an
optional extra (`pip install 'inception[openvino]'`, or `pip install -e '.[openvino]'` in a
checkout); without it every other runtime works and asking for OpenVINO says in one line what to
install.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from inception.config import GoogLeNetConfig
from inception.weights import LoadedModel, WeightsError

log = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnxruntime", "openvino")
# The runtimes each exported file type runs in, its own first.
EXPORTED_RUNTIMES = {".xml": ("openvino",), ".onnx": ("onnxruntime", "openvino")}
OPENVINO_INSTALL = ("pip install 'inception[openvino]' (openvino and nncf; in a checkout, "
                    "pip install -e '.[openvino]')")
REQUEST_BATCH = 8
# OpenVINO's names for our precisions; "int8" runs the quantized model with the plugin's default
# for what stays in floating point (bf16 where the CPU has it, else f32).
OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": None}


class RuntimeUnavailable(ImportError):
    """A runtime that is not installed; the message says what to install."""


def require_openvino(what: str = "OpenVINO"):
    """The `openvino` module, or `RuntimeUnavailable` saying what to install."""
    try:
        import openvino
    except ImportError as e:
        raise RuntimeUnavailable(f"{what} needs OpenVINO, which is not installed: "
                                 f"{OPENVINO_INSTALL}") from e
    return openvino


def require_nncf() -> None:
    """NNCF (OpenVINO's INT8 quantization), or `RuntimeUnavailable` saying what to install."""
    try:
        import nncf  # noqa: F401
    except ImportError as e:
        raise RuntimeUnavailable(f"--precision int8 with --format openvino needs NNCF, which is "
                                 f"not installed: {OPENVINO_INSTALL}") from e


def openvino_installed() -> bool:
    """Whether the openvino extra (OpenVINO and NNCF) is installed."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("openvino", "nncf"))


def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes in bf16 on this CPU (AVX512-BF16 or AMX)."""
    ov = require_openvino()
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def effective_precision(precision: str) -> str:
    """The precision OpenVINO's CPU plugin runs `precision` in here: "bf16" is "fp32" on a CPU
    without bf16 (the plugin would refuse the hint)."""
    return "fp32" if precision == "bf16" and not cpu_has_bf16() else precision


def ov_config(precision: str, threads: int | None, hint: str = "THROUGHPUT") -> dict[str, Any]:
    """OpenVINO compile properties for `precision` ("fp32", "bf16", "int8"), as
    `effective_precision` runs it."""
    config: dict[str, Any] = {"PERFORMANCE_HINT": hint,
                              "INFERENCE_NUM_THREADS": threads or torch.get_num_threads()}
    ov_precision = OV_PRECISION[effective_precision(precision)]
    if ov_precision is not None:
        config["INFERENCE_PRECISION_HINT"] = ov_precision
    return config


class OpenVINORunner:
    """An OpenVINO model compiled for the CPU, called on a whole batch (numpy in, numpy out):
    `request_batch` images per request through an `AsyncInferQueue` (module docstring).
    `hint="LATENCY"` with `request_batch=1` is the one-image-at-a-time deployment. `precision`
    is what it runs in (`effective_precision`).

    The images that do not fill a last request (all of them when fewer than `request_batch`,
    as `predict` on one photo) run one at a time in a second compilation of the model, for
    batch 1 with the LATENCY hint, made on first need: a padded request would compute
    `request_batch` images for each of them."""

    def __init__(self, model: Any, precision: str = "fp32", threads: int | None = None,
                 request_batch: int = REQUEST_BATCH, hint: str = "THROUGHPUT") -> None:
        ov = require_openvino()
        shape = model.inputs[0].get_partial_shape()
        if shape.rank.is_dynamic or any(d.is_dynamic for d in list(shape)[1:]):
            raise ValueError(f"the model's input shape {shape} is dynamic beyond the batch; "
                             "export it with `inception export`, which fixes the image size")
        self.image_shape = [d.get_length() for d in list(shape)[1:]]
        self.model, self.threads = model, threads
        self.precision = effective_precision(precision)
        self.compiled = self._compile(request_batch, hint)
        self.batch = request_batch
        self.queue = ov.AsyncInferQueue(self.compiled)
        self.queue.set_callback(self._done)
        self._single: Any = None  # the batch-1 request for leftover images, made on first need

    def _compile(self, batch: int, hint: str) -> Any:
        """`self.model` compiled for requests of `batch` images (a reshaped copy: the caller's
        model is left as it is)."""
        ov = require_openvino()
        model = self.model.clone()
        model.reshape({model.inputs[0]: [batch, *self.image_shape]})
        return ov.Core().compile_model(model, "CPU", ov_config(self.precision, self.threads,
                                                               hint))

    def _done(self, request: Any, userdata: tuple[np.ndarray, int]) -> None:
        out, start = userdata
        out[start:start + self.batch] = request.get_output_tensor(0).data

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n, b = len(x), self.batch
        whole = n - n % b
        x = np.ascontiguousarray(x, dtype=np.float32)
        classes = self.compiled.outputs[0].get_partial_shape()[1].get_length()
        out = np.empty((n, classes), np.float32)
        try:
            for start in range(0, whole, b):
                self.queue.start_async({0: x[start:start + b]}, (out, start))
        finally:  # no request may still write into `out` once this call is over
            self.queue.wait_all()
        if whole < n and self._single is None:
            self._single = self._compile(1, "LATENCY").create_infer_request()
        for i in range(whole, n):
            out[i] = self._single.infer({0: x[i:i + 1]})[0][0]
        return out


def ov_metadata(model: Any) -> dict[str, Any]:
    """The inception metadata an OpenVINO model carries (`export_openvino`), decoded."""
    info = model.get_rt_info()
    if "inception" not in info:
        return {}
    section = info["inception"]
    return {key: json.loads(section[key].astype(str)) for key in section}


class ExportedModel(nn.Module):
    """An exported file as a module: float32 N x C x S x S in, float32 logits out, run by its
    runtime on the CPU (whatever device the input is on). `config` is the file's model config,
    `runtime` and `precision` say what runs it."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], config: GoogLeNetConfig,
                 runtime: str, precision: str) -> None:
        super().__init__()
        self.run, self.config, self.runtime, self.precision = run, config, runtime, precision
        # The evaluation reads a model's device from its parameters: this one is on the CPU.
        self.anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.detach().float().cpu().contiguous().numpy()
        return torch.from_numpy(np.ascontiguousarray(self.run(batch)))


def runtime_for(path: str | Path, runtime: str | None) -> str:
    """The runtime that runs `path`: `runtime` (None: the file's own); a `WeightsError` naming
    both when the file cannot run in it."""
    suffix = Path(path).suffix
    allowed = EXPORTED_RUNTIMES.get(suffix, ("torch",))
    own = allowed[0]
    if runtime is None:
        return own
    if runtime not in allowed:
        kind = {".xml": "an OpenVINO model", ".onnx": "an ONNX file"}.get(
            suffix, "a PyTorch model (run directory or .safetensors)")
        fix = ("export it first (`inception export`)" if own == "torch"
               else "run the run directory it was exported from")
        raise WeightsError(f"--runtime {runtime}: MODEL {path} is {kind}, which runs in "
                           f"{' or '.join(allowed)}; {fix} to run it in {runtime}")
    return runtime


def is_exported(path: str | Path) -> bool:
    return Path(path).suffix in EXPORTED_RUNTIMES


def load_exported(path: str | Path, runtime: str | None = None,
                  threads: int | None = None) -> LoadedModel:
    """An exported file (`.onnx` or OpenVINO `.xml`) as a `LoadedModel` on the CPU (module
    docstring). Refused with a `WeightsError` naming the file when it does not exist or lacks
    the metadata `inception export` writes."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"MODEL {path} does not exist")
    runtime = runtime_for(path, runtime)
    model = None
    if runtime == "openvino":
        try:
            ov = require_openvino(f"MODEL {path}")
            model = ov.Core().read_model(str(path))
        except RuntimeUnavailable as e:
            raise WeightsError(str(e)) from e
        except RuntimeError as e:
            raise WeightsError(f"MODEL {path}: OpenVINO cannot read it ({str(e).splitlines()[0]})"
                               ) from e
    try:
        meta = ov_metadata(model) if path.suffix == ".xml" else _onnx_meta(path)
    except ValueError as e:  # a metadata entry that is not JSON
        raise WeightsError(f"MODEL {path}: its metadata is not what `inception export` writes "
                           f"({e})") from e
    missing = [k for k in ("model", "preprocessing", "classes") if k not in meta]
    if missing:
        raise WeightsError(f"MODEL {path}: its metadata lacks {', '.join(missing)}; export it "
                           "with `inception export`, which writes them")
    precision = meta.get("precision", "int8" if "quantization" in meta else "fp32")
    try:
        config = GoogLeNetConfig.from_dict(meta["model"])
        if model is None:
            run: Callable[[np.ndarray], np.ndarray] = _onnxruntime_runner(path, threads)
        else:
            run = OpenVINORunner(model, precision, threads)
            if run.precision != precision:
                log.warning("MODEL %s: this CPU has no %s; OpenVINO runs it in %s", path,
                            precision, run.precision)
                precision = run.precision
    except (RuntimeError, ValueError, TypeError) as e:
        raise WeightsError(f"MODEL {path}: {runtime} cannot run it "
                           f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
    source = meta.get("source", {})
    return LoadedModel(ExportedModel(run, config, runtime, precision), meta["preprocessing"],
                       meta["classes"], path,
                       {**source, "runtime": runtime, "precision": precision,
                        "trained_precision": source.get("precision")})


def _onnx_meta(path: Path) -> dict[str, Any]:
    from inception.export import read_onnx_metadata

    try:
        return read_onnx_metadata(path)
    except Exception as e:  # onnxruntime's load errors have no common type
        raise WeightsError(f"MODEL {path}: not a readable ONNX file ({str(e).splitlines()[0]})"
                           ) from e


def _onnxruntime_runner(path: Path, threads: int | None) -> Callable[[np.ndarray], np.ndarray]:
    from inception.export import INPUT_NAME, OUTPUT_NAME, onnx_session

    session = onnx_session(path, threads)
    return lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
