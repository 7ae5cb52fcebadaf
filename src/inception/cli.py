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

from inception.cli_deploy import export_command, load_models
from inception.cli_inside import INSIDE_COMMANDS, check_explain
from inception.config import ConfigError, GoogLeNetConfig
from inception.flags import (
    UsageError,
    config_from_arguments,
    given_arguments,
    train_config_from_arguments,
)
from inception.parser import build_parser, help_values

if TYPE_CHECKING:
    from inception.weights import LoadedModel


def _summary(args: argparse.Namespace) -> int:
    from inception import cost
    from inception.plots import plot_cost

    recorded: dict = {}
    if args.model:
        if given_arguments(args, GoogLeNetConfig) or args.preset != "paper":
            raise UsageError(f"MODEL {args.model}: its config is the model's own; leave out the "
                             "model flags and --preset")
        from inception.train.rundir import read_results

        (loaded,) = load_models([args.model], "cpu")
        config, recorded = loaded.config, read_results(loaded.path.parent) or {}
    else:
        base = (GoogLeNetConfig.torchvision() if args.preset == "torchvision"
                else GoogLeNetConfig())
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
        print(json.dumps({**report.to_json(), **({"results": recorded} if args.model else {})},
                         indent=2))
    else:
        if args.model:
            print(f"model: {args.model}")
        print(format_config_line(config))
        print(cost.format_table(report))
        if recorded:
            print("\nrecorded results: " + ", ".join(
                f"{k} {v}" for k, v in recorded.items() if not isinstance(v, (dict, list))))
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
    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 reports
    if args.print_config:
        print(json.dumps({"train": cfg.to_dict(), "data": data}, indent=2))
        return 0
    if device.type == "cpu" and not args.threads and os.environ.get("WORLD_SIZE", "1") == "1":
        _cpu_threads("train", Path(args.out) if args.resume else None)
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
    if run.already_finished:  # train() said so; it changed nothing
        return 0
    r = run.results
    if "test_top1" in r and "val_top1" in r:  # a held-out validation split (--val-images)
        print(f"\nval top-1 {r['val_top1']:.2f}%  top-5 {r['val_top5']:.2f}% (the split to tune "
              "on)", end="")
    split = "test" if "test_top1" in r else "val"
    print(f"\n{split} top-1 {r[split + '_top1']:.2f}%  top-5 {r[split + '_top5']:.2f}%  "
          f"({r['epochs']} epoch{'s' if r['epochs'] != 1 else ''}, {r['wall_s']:.0f} s on "
          f"{r['device']})")
    print(f"run directory: {run.run_dir}")
    print(f"model:         {r['model']} (+ model.json)")
    print(f"plots:         {', '.join(r['plots'])}")
    print(f"metrics:       {run.run_dir / 'metrics.csv'}, {run.run_dir / 'results.json'}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from inception import evaluation
    from inception.data import DataError
    from inception.files import ReplaceError, check_replace

    models = load_models([args.model, *(args.ensemble or [])], args.device, args.runtime)
    try:
        data = evaluation.model_data(models[0], args.data, "DATA")
    except DataError as e:
        raise UsageError(str(e)) from e
    if data != "fashion-mnist" and not Path(data).is_dir():
        raise UsageError(f"DATA {data}: not 'fashion-mnist' and not a folder with val/")
    out = Path(args.out) if args.out else models[0].path.parent
    try:
        scope = evaluation.result_scope(models, data, args.crops, args.subset, args.precision)
        path = out / evaluation.result_name(models, scope, None if args.data else data)
        if not args.force:  # before the evaluation, which may take long
            check_replace(path, scope)
        result = evaluation.evaluate(models, data, crops=args.crops, subset=args.subset,
                                     batch_size=args.batch_size, workers=args.workers,
                                     data_dir=args.data_dir, progress=not args.json,
                                     precision=args.precision)
    except (DataError, ValueError) as e:
        raise UsageError(str(e)) from e
    try:
        written = evaluation.save_result(result, path, scope, force=args.force,
                                         device=models[0].device)
    except ReplaceError as e:
        raise UsageError(str(e)) from e
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write the results ({e.strerror})") from e
    if args.json:
        print(json.dumps(written, indent=2))
        return 0
    print(evaluation.format_result(result))
    print(f"confusion matrix: {written['confusion_png']}")
    print(f"results:          {path}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    """Every readable image's top classes; each one that cannot be read is one line on stderr
    (the file and why) and, with --json, an entry with an "error". Exit status 1 if any failed."""
    from inception.evaluation import model_precisions
    from inception.predict import predict

    (model,) = load_models([args.model], args.device, args.runtime)
    classes = len(model.classes)
    if args.topk is not None and args.topk > classes:
        raise UsageError(f"--topk {args.topk}: the model has {classes} classes; pass at most "
                         f"{classes}")
    topk = min(5, classes) if args.topk is None else args.topk
    try:
        model_precisions([model], args.precision)  # an exported model has its own
    except ValueError as e:
        raise UsageError(str(e)) from e
    if args.explain is not None or args.explain_layer or args.explain_head != "main":
        if "runtime" in model.meta:
            raise UsageError(f"--explain: MODEL {args.model} is an exported model, whose layers "
                             "its runtime hides; explain the run directory it came from")
        check_explain(args, model)
    results = predict(model, args.images, topk=topk, crops=args.crops,
                      precision=args.precision, errors="report")
    if args.explain is not None:
        from inception.explain import explain_predictions

        explain_predictions(model, results, args.explain, args.explain_head, args.explain_layer)
    failed = [r for r in results if "error" in r]
    for r in failed:
        print(f"inception predict: {r['image']}: {r['error']}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            if "error" not in r:
                print(r["image"])
                for p in r["predictions"]:
                    print(f"  {p['probability'] * 100:6.2f}%  {p['class']}")
                if "explanation" in r:
                    print(f"  explained in {r['explanation']}")
    return 1 if failed else 0


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
    """`save_model` into `out`, a new folder appearing whole or not at all (`files`)."""
    from inception.files import write_directory
    from inception.weights import MODEL_FILE, save_model

    try:
        write_directory(out, lambda folder: save_model(
            folder, loaded.config, loaded.model.state_dict(), loaded.preprocessing,
            loaded.classes, loaded.meta))
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write the model ({e.strerror or e})") from e
    return out / MODEL_FILE


def _cpu_threads(command: str, resumed: Path | None = None, note: bool = True) -> None:
    """`--threads`' default: one torch thread per core that other processes leave free
    (`devices.cpu_threads`). A resumed run: the threads its `config.json` records, since the
    thread count changes the arithmetic's rounding and a resumed run should end on the bytes an
    uninterrupted one would (torch's default where none is recorded). `note`: say on stderr
    when fewer threads than cores are used (the long-running commands)."""
    import torch

    from inception.devices import cpu_cores, cpu_threads

    if resumed is not None:
        from inception.train.rundir import recorded_threads

        recorded = recorded_threads(resumed)
        if recorded is not None:
            torch.set_num_threads(recorded)
        return
    threads, others = cpu_threads()
    if note and threads < torch.get_num_threads():
        print(f"inception {command}: other processes keep {others:.1f} of {cpu_cores()} cores "
              f"busy: using {threads} torch thread(s) (--threads N to choose)", file=sys.stderr)
    torch.set_num_threads(threads)


def _bench(args: argparse.Namespace) -> int:
    from inception import bench
    from inception.devices import resolve_device

    device = resolve_device(args.device)
    batch = args.batch_size or (256 if device.type == "cuda" else 32)
    report = bench.run(batch, args.image_size, args.repeats, train=args.train,
                       onnx=not args.no_onnx, compile=args.compile, device=device,
                       openvino=False if args.no_openvino else None)
    print(json.dumps(report, indent=2) if args.json else bench.format_report(report))
    return 0


def _experiment(args: argparse.Namespace) -> int:
    from inception.data import DataError
    from inception.devices import resolve_device
    from inception.experiments import claims, report, runner, structure
    from inception.train import Interrupted, RunError
    from inception.weights import WeightsError

    resolve_device(args.device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("runs its arms one after another in one process; launch it without "
                         "torchrun")
    experiments, out = claims.select(args.name), Path(args.out)
    seeds = list(range(args.seeds)) if args.seeds is not None else None
    try:
        if not args.report_only:
            runner.train_arms(experiments, out, seeds, device=args.device,
                              progress=not args.no_progress, data_dir=args.data_dir,
                              threads=args.threads)  # None: chosen before each run
        if args.threads is None:
            _cpu_threads("experiment")
        results = structure.build_reports(experiments, out, seeds, data_dir=args.data_dir)
        for result in results:
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
            "export": export_command, "bench": _bench, "experiment": _experiment,
            "import-caffe": _import_caffe, **INSIDE_COMMANDS}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(COMMANDS, help_values(argv))
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:
            parser.subcommands[args.command].unknown(extras)
    except SystemExit as e:  # --help, --version, or a flag refused with one line (exit 2)
        return e.code if isinstance(e.code, int) else 2
    quiet = os.environ.get("RANK", "0") != "0"  # torchrun's other ranks: warnings only
    level = logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO
    # Other libraries' INFO lines (ONNX Runtime's quantizer logs one per weight) only on -v.
    logging.basicConfig(level=level if args.verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("inception").setLevel(level)
    try:
        if args.threads is not None:  # 1 to 1024, checked by the parser (`flags.number`)
            import torch

            torch.set_num_threads(args.threads)
        elif args.command in ("eval", "predict", "export", "bench"):
            _cpu_threads(args.command, note=False)
        return args.func(args)
    except (ConfigError, UsageError) as e:
        print(f"inception {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C in a long visualize or dream (train saves and exits)
        print(f"inception {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `inception ... | head`: the reader has gone; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # what a shell reports for a process ended by SIGPIPE


if __name__ == "__main__":
    raise SystemExit(main())
