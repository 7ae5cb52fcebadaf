"""The `inception` command line. Thin: parse flags, call the library, print."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from inception.config import ConfigError, GoogLeNetConfig
from inception.flags import (
    UsageError,
    build_parser,
    config_from_arguments,
    train_config_from_arguments,
)

if TYPE_CHECKING:
    from inception.weights import LoadedModel


def _summary(args: argparse.Namespace) -> int:
    from inception import cost
    from inception.plots import plot_cost

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
            plot_cost(report, args.plot)
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


def _train(args: argparse.Namespace) -> int:
    from inception.data import DataError
    from inception.devices import resolve_device
    from inception.train import Interrupted, RunError, train
    from inception.weights import WeightsError

    if args.resume and args.out is None:
        raise UsageError("--resume needs --out DIR, the run directory to continue")
    device = resolve_device(args.device)  # refuse a missing GPU before anything is read
    cfg, data = train_config_from_arguments(args)
    if data != "fashion-mnist" and not Path(data).is_dir():
        raise UsageError(f"DATA {data}: not 'fashion-mnist' and not a folder; give an image "
                         "folder with train/ and val/ subfolders")
    if device.type == "cpu" and not args.threads and os.environ.get("WORLD_SIZE", "1") == "1":
        _cpu_threads(Path(args.out) if args.resume else None)
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
    if "test_top1" in r and "val_top1" in r:  # a held-out validation split (--val-images)
        print(f"\nval top-1 {r['val_top1']:.2f}%  top-5 {r['val_top5']:.2f}% (the split to tune "
              "on)", end="")
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
    try:
        data = evaluation.model_data(models[0], args.data, "DATA")
    except DataError as e:
        raise UsageError(str(e)) from e
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


def _import_caffe(args: argparse.Namespace) -> int:
    from inception.caffe import MODEL_ZOO_SHA1, CaffeError, from_caffe

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give the folder to write the model into")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise UsageError(f"--out {out} is not empty; choose a new folder or pass --force to "
                         "replace the model in it")
    classes = None
    if args.classes:
        try:
            text = Path(args.classes).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"--classes {args.classes}: cannot read it as UTF-8 text ({e})"
                             ) from e
        classes = [line.strip() for line in text.splitlines() if line.strip()]
    try:
        loaded = from_caffe(args.caffemodel, classes)
    except CaffeError as e:
        raise UsageError(str(e)) from e
    path = _write_model_dir(out, loaded)
    source = loaded.meta["source"]
    zoo = "the model zoo's file" if source["sha1"] == MODEL_ZOO_SHA1 else "not the model zoo's file"
    print(f"read {source['caffemodel']!r} ({source['format']} format, sha1 {source['sha1']}: "
          f"{zoo})")
    print(f"{loaded.config.num_classes} classes, aux heads: "
          f"{'yes' if loaded.config.aux_logits else 'no'}; input RGB, 255 x - (123, 117, 104), "
          "conv1's channels reversed from Caffe's BGR")
    print(f"model: {path} (+ model.json)")
    print(f"next:  inception predict {out} IMAGE.jpg")
    return 0


def _write_model_dir(out: Path, loaded: LoadedModel) -> Path:
    """`save_model` into `out`. A new folder is written beside it under a temporary name and
    renamed into place, so a failed write leaves no folder behind."""
    import shutil

    from inception.weights import MODEL_FILE, save_model

    target = out if out.is_dir() else out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        target.mkdir(parents=True, exist_ok=True)
        save_model(target, loaded.config, loaded.model.state_dict(), loaded.preprocessing,
                   loaded.classes, loaded.meta)
        if target != out:
            os.replace(target, out)
    except OSError as e:
        if target != out:
            shutil.rmtree(target, ignore_errors=True)
        raise UsageError(f"--out {out}: cannot write the model ({e.strerror or e})") from e
    return out / MODEL_FILE


def _cpu_threads(resumed: Path | None) -> None:
    """A new run: one torch thread per core that other processes leave free
    (`devices.cpu_threads`). A resumed one: the threads its `config.json` records, since the
    thread count changes the arithmetic's rounding and a resumed run should end on the bytes an
    uninterrupted one would (torch's default where none is recorded, as before 0.5.0)."""
    import torch

    from inception.devices import cpu_cores, cpu_threads

    if resumed is not None:
        try:
            recorded = json.loads((resumed / "config.json").read_text()).get("threads")
        except (OSError, ValueError, AttributeError):
            recorded = None  # train() says what is wrong with the run directory
        if isinstance(recorded, int) and recorded >= 1:
            torch.set_num_threads(recorded)
        return
    threads, others = cpu_threads()
    if threads < torch.get_num_threads():
        print(f"inception train: other processes keep {others:.1f} of {cpu_cores()} cores busy: "
              f"training with {threads} thread(s) (--threads N to choose)", file=sys.stderr)
    torch.set_num_threads(threads)


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


def _experiment(args: argparse.Namespace) -> int:
    from inception.data import DataError
    from inception.devices import resolve_device
    from inception.experiments import claims, report, runner
    from inception.train import Interrupted, RunError
    from inception.weights import WeightsError

    resolve_device(args.device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("runs its arms one after another in one process; launch it without "
                         "torchrun")
    if args.seeds < 1:
        raise UsageError(f"--seeds {args.seeds}: must be at least 1")
    experiments, seeds, out = claims.select(args.name), list(range(args.seeds)), Path(args.out)
    try:
        runner.train_arms(experiments, out, seeds, device=args.device,
                          progress=not args.no_progress, data_dir=args.data_dir)
        for experiment in experiments:
            result = report.build_report(experiment, out, seeds, data_dir=args.data_dir)
            paths = report.write_report(result, out)
            print(result.text())
            print("written: " + ", ".join(str(p) for p in paths) + "\n")
    except Interrupted as e:
        print(f"inception experiment: interrupted ({e.signal_name}); the finished runs "
              "are kept: the same command goes on from there", file=sys.stderr)
        return 128 + e.signum
    except (RunError, DataError, WeightsError, FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from e
    return 0


def format_config_line(config: GoogLeNetConfig) -> str:
    diffs = config.differences_from_paper()
    if not diffs:
        return "GoogLeNet, the paper's configuration (Table 1)\n"
    changed = ", ".join(f"{k}={v!r} (paper {p!r})" for k, (v, p) in diffs.items())
    return f"GoogLeNet with {changed}\n"


COMMANDS = {"summary": _summary, "train": _train, "eval": _eval, "predict": _predict,
            "export": _export, "bench": _bench, "experiment": _experiment,
            "import-caffe": _import_caffe}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(COMMANDS)
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
