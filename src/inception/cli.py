"""The `inception` command line. Thin: parse flags, call the library, print."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from inception.config import (
    ConfigError,
    GoogLeNetConfig,
    add_config_arguments,
    config_from_arguments,
)

log = logging.getLogger("inception")


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s")
    try:
        return args.func(args)
    except (ConfigError, UsageError) as e:
        print(f"inception {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
