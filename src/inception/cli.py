"""The `inception` command line. Thin: parse flags, call the library, print."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from inception.config import (
    ConfigError,
    GoogLeNetConfig,
    TrainConfig,
    add_config_arguments,
    config_from_arguments,
    given_arguments,
)
from inception.devices import DEVICE_CHOICES


class UsageError(Exception):
    """A bad flag or file, reported as one line naming it; exit status 2."""


def _summary(args: argparse.Namespace) -> int:
    from inception import cost

    base = GoogLeNetConfig.torchvision() if args.preset == "torchvision" else GoogLeNetConfig()
    config = config_from_arguments(args, base)
    if args.module_cost:
        text = cost.format_module_cost(cost.classic_example(), cost.module_comparisons(),
                                       cost.table1_cost(config.replace(module="naive")),
                                       cost.table1_cost(config.replace(module="reduced")))
        print(text)
        return 0
    report = cost.table1_cost(config)
    if args.plot:
        try:
            cost.plot_cost(report, args.plot)
        except OSError as e:
            raise UsageError(f"--plot {args.plot}: cannot write the PNG ({e.strerror})") from e
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(format_config_line(config))
        print(cost.format_table(report))
        if args.plot:
            print(f"plot: {args.plot}")
    return 0


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


def _train(args: argparse.Namespace) -> int:
    from inception.data import DataError
    from inception.devices import resolve_device
    from inception.training import Interrupted, RunError, train
    from inception.weights import WeightsError

    if args.resume and args.out is None:
        raise UsageError("--resume needs --out DIR, the run directory to continue")
    resolve_device(args.device)  # refuse a missing GPU before anything is read or printed
    cfg, data = train_config_from_arguments(args)
    if data != "fashion-mnist" and not Path(data).is_dir():
        raise UsageError(f"DATA {data}: not 'fashion-mnist' and not a folder; give an image "
                         "folder with train/ and val/ subfolders")
    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 reports
    if main_process:
        print(json.dumps({"train": cfg.to_dict(), "data": data}, indent=2))
    try:
        run = train(cfg, data, out=args.out, data_dir=args.data_dir, device=args.device,
                    resume=args.resume, progress=not args.no_progress,
                    stop_after=args.stop_after,
                    checkpoint_every=args.checkpoint_every or None,
                    sync_every=args.sync_every, compile=args.compile)
    except Interrupted as e:
        print(f"inception train: interrupted by {e}", file=sys.stderr)
        return 128 + e.signum
    except (DataError, RunError, WeightsError) as e:
        raise UsageError(str(e)) from e
    if not main_process:
        return 0
    if run is None:
        print(f"stopped after epoch {args.stop_after}; continue with: inception train "
              f"--resume --out {args.out}")
        return 0
    r = run.results
    split = "test" if "test_top1" in r else "val"
    print(f"\n{split} top-1 {r[split + '_top1']:.2f}%  top-5 {r[split + '_top5']:.2f}%  "
          f"({r['epochs']} epochs, {r['wall_s']:.0f} s on {r['device']})")
    print(f"run directory: {run.run_dir}")
    print(f"model:         {r['model']} (+ model.json)")
    print(f"plots:         {', '.join(r['plots'])}")
    print(f"metrics:       {run.run_dir / 'metrics.csv'}, {run.run_dir / 'results.json'}")
    return 0


def _load_models(paths: Sequence[str], device: str = "cpu"):
    """The models at `paths` on `--device` (resolved: `auto` is the GPU when there is one)."""
    from inception.devices import resolve_device
    from inception.weights import WeightsError, load

    dev = resolve_device(device)
    try:
        return [load(p, dev) for p in paths]
    except WeightsError as e:
        raise UsageError(str(e)) from e


def _eval(args: argparse.Namespace) -> int:
    from inception import evaluation
    from inception.data import DataError

    models = _load_models([args.model, *(args.ensemble or [])], args.device)
    data = args.data or models[0].meta.get("data", "fashion-mnist")
    if data != "fashion-mnist" and not Path(data).is_dir():
        raise UsageError(f"DATA {data}: not 'fashion-mnist' and not a folder with val/")
    try:
        result = evaluation.evaluate(models, data, crops=args.crops, subset=args.subset,
                                     batch_size=args.batch_size, workers=args.workers,
                                     data_dir=args.data_dir, progress=not args.json,
                                     precision=args.precision)
    except (DataError, ValueError) as e:
        raise UsageError(str(e)) from e
    out = Path(args.out) if args.out else models[0].path.parent
    name = f"eval-{args.crops}crop" + (f"-{len(models)}models" if len(models) > 1 else "")
    try:
        out.mkdir(parents=True, exist_ok=True)
        result["confusion_png"] = str(evaluation.save_confusion(out / f"{name}.png", result))
        (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write the results ({e.strerror})") from e
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(evaluation.format_result(result))
    print(f"confusion matrix: {result['confusion_png']}")
    print(f"results:          {out / (name + '.json')}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from inception.predict import PredictError, predict

    (model,) = _load_models([args.model], args.device)
    try:
        results = predict(model, args.images, topk=args.topk, crops=args.crops,
                          precision=args.precision)
    except PredictError as e:
        raise UsageError(str(e)) from e
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(r["image"])
        for p in r["predictions"]:
            print(f"  {p['probability'] * 100:6.2f}%  {p['class']}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from inception import export
    from inception.data import DataError

    (model,) = _load_models([args.model])
    out = Path(args.out)
    if out.exists() and not args.force:
        raise UsageError(f"--out {out} already exists; choose another file or pass --force")
    if args.int8 and args.format != "onnx":
        raise UsageError("--int8 needs --format onnx")
    try:
        if args.format == "onnx":
            report = export.export_onnx(model, out, int8=args.int8, calibration=args.calibration,
                                        check=args.check, data=args.data,
                                        data_dir=args.data_dir)
        else:
            report = export.export_program(model, out)
    except (export.ExportError, DataError) as e:
        raise UsageError(str(e)) from e
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write it ({e.strerror})") from e
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 0
    print(f"{report.format}: {report.path}")
    print(f"checked on {report.checked_images} images: max |logits - PyTorch's| = "
          f"{report.max_abs_diff:.2e}")
    if report.accuracy:
        a, sp = report.accuracy, report.speed
        print(f"top-1 fp32 {a['fp32_top1']:.2f}%  int8 {a['int8_top1']:.2f}%  "
              f"(drop {a['drop']:.2f} points)")
        print(f"onnxruntime, batch {sp['batch']}: fp32 {sp['fp32_img_s']:.0f} img/s, int8 "
              f"{sp['int8_img_s']:.0f} img/s ({sp['speedup']:.2f}x)")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import torch

    from inception import bench
    from inception.devices import resolve_device

    device = resolve_device(args.device)
    if not args.threads:
        torch.set_num_threads(2)
    batch = args.batch_size or (256 if device.type == "cuda" else 32)
    report = bench.run(batch, args.image_size, args.repeats, train=args.train,
                       onnx=not args.no_onnx, compile=args.compile, device=device)
    print(json.dumps(report, indent=2) if args.json else bench.format_report(report))
    return 0


def format_config_line(config: GoogLeNetConfig) -> str:
    diffs = config.differences_from_paper()
    if not diffs:
        return "GoogLeNet, the paper's configuration (Table 1)\n"
    changed = ", ".join(f"{k}={v!r} (paper {p!r})" for k, (v, p) in diffs.items())
    return f"GoogLeNet with {changed}\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inception",
        description="GoogLeNet from 'Going Deeper with Convolutions' (Szegedy et al., 2014).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    summary.set_defaults(func=_summary)

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
                       help="torch CPU threads (default: torch's choice)")
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
    train.set_defaults(func=_train)

    model_help = "a run directory of `inception train`, or its model.safetensors"
    ev = sub.add_parser(
        "eval", help="top-1/top-5 with 1, 10 or 144 crops, and ensembles",
        description="Evaluate a trained model (or an ensemble) as the paper's section 7 does: "
                    "softmax averaged over crops and models.")
    ev.add_argument("model", metavar="MODEL", help=model_help)
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
    ev.set_defaults(func=_eval)

    pr = sub.add_parser("predict", help="classify images",
                        description="Print the top classes of each image with probabilities.")
    pr.add_argument("model", metavar="MODEL", help=model_help)
    pr.add_argument("images", nargs="+", metavar="IMAGE")
    pr.add_argument("--topk", type=int, default=5)
    pr.add_argument("--crops", type=int, choices=(1, 10, 144), default=1)
    pr.add_argument("--json", action="store_true", help="machine-readable output")
    pr.set_defaults(func=_predict)

    ex = sub.add_parser("export", help="ONNX (fp32 or INT8) or a torch.export program",
                        description="Export a trained model; the file carries its config, "
                                    "preprocessing and class names.")
    ex.add_argument("model", metavar="MODEL", help=model_help)
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
    ex.set_defaults(func=_export)
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
    be.set_defaults(func=_bench)
    for p in (ev, pr):
        p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                       help="arithmetic of the inference path (default fp32)")
    for p in (train, ev, pr, be):
        p.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                       help="auto (default): the CUDA GPU when there is one, else the CPU")
    for p in (ev, pr, ex):
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    be.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 2)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = os.environ.get("RANK", "0") != "0"  # torchrun's other ranks: warnings only
    level = logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO
    # Other libraries' INFO lines (ONNX Runtime's quantizer logs one per weight) only on -v.
    logging.basicConfig(level=level if args.verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("inception").setLevel(level)
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except (ConfigError, UsageError) as e:
        print(f"inception {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
