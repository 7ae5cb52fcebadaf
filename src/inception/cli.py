"""The `inception` command line. Thin: parse flags, call the library, print."""

from __future__ import annotations

import argparse
import json
import logging
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
        cfg = get_recipe(args.recipe or ("fashion-mnist" if data == "fashion-mnist" else "paper"))
    if args.config:
        file_cfg = read_config_file(args.config)
        merged = cfg.to_dict()
        model = {**merged.pop("model"), **file_cfg.pop("model", {})}
        cfg = TrainConfig.from_dict({**merged, **file_cfg, "model": model})
    overrides = {**given_arguments(args, TrainConfig), **given_arguments(args, GoogLeNetConfig)}
    return cfg.replace(**overrides), data


def _train(args: argparse.Namespace) -> int:
    from inception.data import DataError
    from inception.training import RunError, train

    if args.resume and args.out is None:
        raise UsageError("--resume needs --out DIR, the run directory to continue")
    cfg, data = train_config_from_arguments(args)
    if data != "fashion-mnist" and not Path(data).is_dir():
        raise UsageError(f"DATA {data}: not 'fashion-mnist' and not a folder; give an image "
                         "folder with train/ and val/ subfolders")
    print(json.dumps({"train": cfg.to_dict(), "data": data}, indent=2))
    try:
        run = train(cfg, data, out=args.out, data_dir=args.data_dir, device=args.device,
                    resume=args.resume, progress=not args.no_progress,
                    stop_after=args.stop_after)
    except (DataError, RunError) as e:
        raise UsageError(str(e)) from e
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
    train.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    train.add_argument("--threads", type=int, default=None,
                       help="torch CPU threads (default: torch's choice)")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_argument("--stop-after", type=int, metavar="N",
                       help="stop after epoch N, checkpointed, to continue later with --resume")
    add_config_arguments(train, TrainConfig, "training (defaults: the recipe)")
    add_config_arguments(train, GoogLeNetConfig, "model (defaults: the recipe)")
    train.set_defaults(func=_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s")
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
