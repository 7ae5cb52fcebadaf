"""The command line's flags: one per config field, and the parser of every command.

`add_config_arguments` turns a config dataclass into flags (`--field-name`, choices from its
Literal types, `--x/--no-x` for booleans), so a new config field is a new flag with no more code.
A training config is the recipe's, then a `--config` file's, then the flags' (`train_config_from_
arguments`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

from inception.config import GoogLeNetConfig, field_type
from inception.devices import DEVICE_CHOICES
from inception.train.config import TrainConfig


class UsageError(Exception):
    """A bad flag or file, reported as one line naming it; exit status 2."""


def add_config_arguments(parser: argparse.ArgumentParser, cls: type | None = None,
                         title: str = "model config (defaults: the paper)") -> None:
    """Add one `--field-name` flag per field of the dataclass `cls` (GoogLeNetConfig by default).

    Defaults are None so that a flag the user gave can be told from one left out; booleans get
    `--x/--no-x`; Literal fields get their choices. Nested dataclass fields are skipped.
    """
    cls = cls or GoogLeNetConfig
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(title)
    for f in fields(cls):
        hint = field_type(hints[f.name])
        if dataclasses.is_dataclass(hint):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f"default: {default}"
        if hint is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
        elif typing.get_origin(hint) is Literal:
            group.add_argument(flag, choices=typing.get_args(hint), default=None, help=help_text)
        else:
            group.add_argument(flag, type=hint, default=None, metavar=f.name.upper(),
                               help=help_text)


def given_arguments(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """{field: value} for every flag of `cls`'s fields that the user gave."""
    return {f.name: getattr(args, f.name) for f in fields(cls)
            if getattr(args, f.name, None) is not None}


def config_from_arguments(args: argparse.Namespace,
                          base: GoogLeNetConfig | None = None) -> GoogLeNetConfig:
    """`base` (the paper by default) with every config flag the user gave applied."""
    return (base or GoogLeNetConfig()).replace(**given_arguments(args, GoogLeNetConfig))



def read_config_file(path: str) -> dict:
    """A YAML or TOML file of TrainConfig fields (and a `model` table), as a dict."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise UsageError(f"--config {path}: cannot read it ({e.strerror})") from e
    try:
        if p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise UsageError(f"--config {path}: use a .toml, .yaml or .yml file")
    except (ValueError, ImportError) as e:
        raise UsageError(f"--config {path}: not valid {p.suffix[1:].upper()} ({e})") from e
    except Exception as e:  # yaml's own error types
        raise UsageError(f"--config {path}: not valid YAML ({type(e).__name__})") from e
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: expected a table of config fields at the top level")
    return data


def train_config_from_arguments(args: argparse.Namespace) -> tuple[TrainConfig, str]:
    """(config, data): the recipe's defaults (or, with --resume, the run's saved config), then the
    --config file, then flags."""
    from inception.recipes import get_recipe

    data = args.data
    if args.resume:
        saved = Path(args.out) / "config.json"
        try:
            run = json.loads(saved.read_text())
            cfg = TrainConfig.from_dict(run["train"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UsageError(f"--resume: cannot read the run's config {saved} ({e})") from e
        data = data or run.get("data", "fashion-mnist")
    else:
        data = data or "fashion-mnist"
        default = "fashion-mnist" if data == "fashion-mnist" else "paper"
        cfg = get_recipe(args.recipe or ("finetune" if args.init else default))
    if args.config:
        file_cfg = read_config_file(args.config)
        merged = cfg.to_dict()
        model = {**merged.pop("model"), **file_cfg.pop("model", {})}
        cfg = TrainConfig.from_dict({**merged, **file_cfg, "model": model})
    overrides = {**given_arguments(args, TrainConfig), **given_arguments(args, GoogLeNetConfig)}
    return cfg.replace(**overrides), data


def _summary_parser(sub) -> argparse.ArgumentParser:
    summary = sub.add_parser(
        "summary", help="print Table 1 computed from the model",
        description="Table 1 recomputed from the model (params, multiply-adds, output sizes), "
                    "beside the paper's printed figures, with the paper's slips flagged.")
    summary.add_argument("--json", action="store_true", help="machine-readable output")
    summary.add_argument("--plot", metavar="FILE", help="write per-row params and multiply-adds "
                                                        "as a PNG")
    summary.add_argument("--module-cost", action="store_true",
                         help="the 1x1-reduction argument: naive vs reduced modules in numbers")
    summary.add_argument("--preset", choices=("paper", "torchvision"), default="paper",
                         help="start from the paper's config (default) or torchvision's layout")
    add_config_arguments(summary)
    return summary


def _train_parser(sub) -> argparse.ArgumentParser:
    train = sub.add_parser(
        "train", help="train on Fashion-MNIST (default) or an image folder",
        description="Train GoogLeNet. Settings come from the recipe, then --config, then flags.")
    train.add_argument("data", nargs="?", default=None, metavar="DATA",
                       help="'fashion-mnist' (default) or a folder with train/ and val/ class "
                            "folders")
    train.add_argument("--out", help="run directory (default: runs/RECIPE-TIMESTAMP)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--config", metavar="FILE", help="YAML or TOML file of config fields")
    train.add_argument("--data-dir", help="where Fashion-MNIST's IDX files are (or go)")
    train.add_argument("--threads", type=int, default=None,
                       help="torch CPU threads (default: one per core other processes leave "
                            "free; with --resume, the count the run recorded)")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_argument("--stop-after", type=int, metavar="N",
                       help="stop after epoch N, checkpointed, to continue later with --resume")
    train.add_argument("--checkpoint-every", type=int, default=100, metavar="STEPS",
                       help="also checkpoint every STEPS optimizer steps, so that a killed run "
                            "loses at most that much (0: only at epoch ends; default 100)")
    train.add_argument("--sync-every", type=int, default=None, metavar="STEPS",
                       help="read the loss from the device every STEPS steps: NaN check, progress "
                            "bar, SIGTERM poll (default: 1 on the CPU, 50 on a GPU)")
    train.add_argument("--compile", nargs="?", const="default", default=None,
                       choices=("default", "reduce-overhead", "max-autotune"), metavar="MODE",
                       help="run the training forward through torch.compile (MODE: default, "
                            "reduce-overhead for CUDA graphs, max-autotune)")
    add_config_arguments(train, TrainConfig, "training (defaults: the recipe)")
    add_config_arguments(train, GoogLeNetConfig, "model (defaults: the recipe)")
    return train


MODEL_HELP = ("a run directory of `inception train` (or `inception import-caffe`), or its "
              "model.safetensors")


def _eval_parser(sub) -> argparse.ArgumentParser:
    ev = sub.add_parser(
        "eval", help="top-1/top-5 with 1, 10 or 144 crops, and ensembles",
        description="Evaluate a trained model (or an ensemble) as the paper's section 7 does: "
                    "softmax averaged over crops and models.")
    ev.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    ev.add_argument("data", nargs="?", default=None, metavar="DATA",
                    help="'fashion-mnist' or an image folder with val/ (default: the model's)")
    ev.add_argument("--crops", type=int, choices=(1, 10, 144), default=1)
    ev.add_argument("--ensemble", nargs="+", metavar="MODEL", help="more models to average")
    ev.add_argument("--subset", type=int, metavar="N", help="only the first N images")
    ev.add_argument("--batch-size", type=int, default=None, help="images per batch")
    ev.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    ev.add_argument("--data-dir", help="where Fashion-MNIST's IDX files are")
    ev.add_argument("--out", help="folder for the confusion PNG and JSON (default: the model's)")
    ev.add_argument("--json", action="store_true", help="machine-readable output")
    return ev


def _predict_parser(sub) -> argparse.ArgumentParser:
    pr = sub.add_parser("predict", help="classify images",
                        description="Print the top classes of each image with probabilities.")
    pr.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    pr.add_argument("images", nargs="+", metavar="IMAGE")
    pr.add_argument("--topk", type=int, default=5)
    pr.add_argument("--crops", type=int, choices=(1, 10, 144), default=1)
    pr.add_argument("--json", action="store_true", help="machine-readable output")
    return pr


def _export_parser(sub) -> argparse.ArgumentParser:
    ex = sub.add_parser("export", help="ONNX (fp32 or INT8) or a torch.export program",
                        description="Export a trained model; the file carries its config, "
                                    "preprocessing and class names.")
    ex.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    ex.add_argument("--format", choices=("onnx", "torch-export"), default="onnx")
    ex.add_argument("--int8", action="store_true",
                    help="onnxruntime static INT8 quantization (QDQ, per-channel)")
    ex.add_argument("--calibration", type=int, default=512, metavar="N",
                    help="training images to calibrate INT8 on")
    ex.add_argument("--check", type=int, default=1000, metavar="N",
                    help="evaluation images to check the export on")
    ex.add_argument("--data", default=None, help="data to check/calibrate on (default: the "
                                                 "model's)")
    ex.add_argument("--data-dir", help="where Fashion-MNIST's IDX files are")
    ex.add_argument("--out", required=True, help="the file to write")
    ex.add_argument("--force", action="store_true", help="overwrite --out")
    ex.add_argument("--json", action="store_true", help="machine-readable output")
    return ex


def _bench_parser(sub) -> argparse.ArgumentParser:
    be = sub.add_parser("bench", help="inference (and training) speed beside torchvision's",
                        description="Our paths next to torchvision's googlenet in eager PyTorch "
                                    "and ONNX Runtime, alternated in one process, medians.")
    be.add_argument("--batch-size", type=int, default=None,
                    help="images per batch (default: 32 on the CPU, 256 on a GPU)")
    be.add_argument("--image-size", type=int, default=224)
    be.add_argument("--repeats", type=int, default=5, help="alternating rounds")
    be.add_argument("--train", action="store_true", help="also a training step with aux heads")
    be.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime rows")
    be.add_argument("--compile", action="store_true", help="also torch.compile's path")
    be.add_argument("--json", action="store_true", help="machine-readable output")
    be.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 2)")
    return be


def _experiment_parser(sub) -> argparse.ArgumentParser:
    from inception.experiments.claims import DEFAULT_SEEDS, EXPERIMENTS

    exp = sub.add_parser(
        "experiment", help="test one of the paper's design claims (or all six) as an ablation",
        description="Train each arm of the experiment over several seeds (resumable: finished "
                    "runs are kept, interrupted ones resume), then print its table and write "
                    "its table, JSON and plot. Experiments: " + ", ".join(EXPERIMENTS) + ".")
    exp.add_argument("name", metavar="NAME", choices=(*EXPERIMENTS, "all"),
                     help="an experiment's name, or all")
    exp.add_argument("--out", default="runs/experiments",
                     help="folder of the runs and results (default runs/experiments)")
    exp.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, metavar="N",
                     help=f"seeds 0 .. N-1 for every arm (default {DEFAULT_SEEDS})")
    exp.add_argument("--data-dir", help="where Fashion-MNIST's IDX files are (or go)")
    exp.add_argument("--threads", type=int, default=None,
                     help="torch CPU threads (default: torch's choice)")
    exp.add_argument("--no-progress", action="store_true", help="no progress bars")
    return exp


def _import_caffe_parser(sub) -> argparse.ArgumentParser:
    ic = sub.add_parser(
        "import-caffe", help="import Caffe's bvlc_googlenet.caffemodel as a model directory",
        description="Read a bvlc_googlenet .caffemodel (either Caffe layer format; no Caffe "
                    "needed), check it layer by layer and write model.safetensors + model.json, "
                    "which eval, predict and export take like any trained model.")
    ic.add_argument("caffemodel", metavar="CAFFEMODEL", help="the downloaded .caffemodel file")
    ic.add_argument("--out", required=True, help="the model directory to write")
    ic.add_argument("--classes", metavar="FILE",
                    help="class names, one per line (default: ImageNet's, for 1000 outputs)")
    ic.add_argument("--force", action="store_true", help="replace a model already in --out")
    return ic


def build_parser(commands: dict[str, Callable[[argparse.Namespace], int]] | None = None
                 ) -> argparse.ArgumentParser:
    """The `inception` parser; `commands` maps each command to the function that runs it
    (`args.func`)."""
    parser = argparse.ArgumentParser(
        prog="inception",
        description="GoogLeNet from 'Going Deeper with Convolutions' (Szegedy et al., 2014).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    summary, train, ev = _summary_parser(sub), _train_parser(sub), _eval_parser(sub)
    pr, ex, be = _predict_parser(sub), _export_parser(sub), _bench_parser(sub)
    xp, ic = _experiment_parser(sub), _import_caffe_parser(sub)
    for name, p in (("summary", summary), ("train", train), ("eval", ev), ("predict", pr),
                    ("export", ex), ("bench", be), ("experiment", xp), ("import-caffe", ic)):
        p.set_defaults(func=(commands or {}).get(name))
    for p in (ev, pr):
        p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                       help="arithmetic of the inference path (default fp32)")
    for p in (train, ev, pr, be, xp):
        p.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                       help="auto (default): the CUDA GPU when there is one, else the CPU")
    for p in (ev, pr, ex):
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser
