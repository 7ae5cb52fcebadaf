"""The command line's flags: one per config field, and the parser of every command.

`add_config_arguments` turns a config dataclass into flags (`--field-name`, choices from its
Literal types, `--x/--no-x` for booleans), so a new config field is a new flag with no more code.
A training config is the recipe's, then a `--config` file's, then the flags' (`train_config_from_
arguments`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

from inception.config import Bounds, GoogLeNetConfig, field_bounds, field_type
from inception.train.config import TrainConfig


class UsageError(Exception):
    """A bad flag or file, reported as one line naming it; exit status 2."""


THREADS_HELP = "torch CPU threads (default: one per core that other processes leave free)"
PRECISION_HELP = ("arithmetic of the forward passes: fp32, or bf16 autocast (default: the "
                  "precision the model was trained in)")


def number(kind: type = int, low: int | float | None = None, high: int | float | None = None,
           *, low_open: bool = False, high_open: bool = False) -> Bounds:
    """The argparse `type` of a numeric flag that is not a config field: `kind` (int or float,
    floats finite) between `low` and `high` (None: unbounded that side; `*_open`: that end
    excluded). A value outside is refused at parse time in one line naming the flag and the
    range ("--topk must be an integer from 1 to 100000; got 0"), as config fields' flags are
    (`add_config_arguments`, from `config.option`'s bounds)."""
    return Bounds(kind, low, high, low_open, high_open)


def show(value: Any) -> str:
    """A default as `--help` prints it (and as the help test reads it back)."""
    return "none" if value is None else str(value)


def field_help(f: dataclasses.Field, value: Any) -> str:
    """A config field's one-line documentation with the value it will have."""
    return f"{f.metadata.get('help', f.name.replace('_', ' '))} (default: {show(value)})"


def add_config_arguments(parser: argparse.ArgumentParser, cls: type | None = None,
                         title: str = "model (defaults: the paper)",
                         values: Any = None) -> None:
    """Add one `--field-name` flag per field of the dataclass `cls` (GoogLeNetConfig by default).

    Each flag's help is the field's own documentation (`config.option`) and the value it takes
    when the flag is left out: `values`' (the resolved config of the command), else the field's
    default. Flag defaults are None so that a flag the user gave can be told from one left out;
    booleans get `--x/--no-x`; Literal fields get their choices; numbers are checked against the
    field's bounds (`config.option`) as they are parsed. Nested dataclass fields are skipped.
    """
    cls = cls or GoogLeNetConfig
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(title)
    for f in fields(cls):
        hint = field_type(hints[f.name])
        if dataclasses.is_dataclass(hint):
            continue
        flag = "--" + f.name.replace("_", "-")
        value = getattr(values, f.name) if values is not None else (
            f.default if f.default is not dataclasses.MISSING else None)
        help_text = field_help(f, value).replace("%", "%%")
        if hint is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
        elif typing.get_origin(hint) is Literal:
            group.add_argument(flag, choices=typing.get_args(hint), default=None, help=help_text)
        else:
            metavar = {int: "N", float: "X"}.get(hint, "VALUE")
            group.add_argument(flag, type=field_bounds(f, hint) or hint, default=None,
                               metavar=metavar, help=help_text)


def given_arguments(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """{field: value} for every flag of `cls`'s fields that the user gave."""
    return {f.name: getattr(args, f.name) for f in fields(cls)
            if getattr(args, f.name, None) is not None}


def config_from_arguments(args: argparse.Namespace,
                          base: GoogLeNetConfig | None = None) -> GoogLeNetConfig:
    """`base` (the paper by default) with every config flag the user gave applied."""
    return (base or GoogLeNetConfig()).replace(**given_arguments(args, GoogLeNetConfig))



def read_config_file(path: str) -> tuple[dict, str | None]:
    """(config fields, data) from a YAML or TOML file of TrainConfig fields (and a `model`
    table), or from a run's own `config.json`, whose data set comes with it."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise UsageError(f"--config {path}: cannot read it ({e.strerror})") from e
    kind = {".toml": "TOML", ".yaml": "YAML", ".yml": "YAML", ".json": "JSON"}.get(p.suffix)
    if kind is None:
        raise UsageError(f"--config {path}: use a .toml, .yaml or .yml file, or a run's "
                         "config.json")
    try:
        if kind == "TOML":
            import tomllib

            data = tomllib.loads(text)
        elif kind == "JSON":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except (ValueError, ImportError) as e:
        raise UsageError(f"--config {path}: not valid {kind} ({e})") from e
    except Exception as e:  # yaml's own error types
        raise UsageError(f"--config {path}: not valid YAML ({type(e).__name__})") from e
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: expected a table of config fields at the top level")
    if isinstance(data.get("train"), dict):  # a run directory's config.json
        run_data = data.get("data")
        if not isinstance(run_data, str):
            return data["train"], None
        from inception.data import DataError, resolve_recorded_path

        # A run's relative path, found from here if it can be; else DATA says what is wrong.
        with contextlib.suppress(DataError):
            run_data = resolve_recorded_path(run_data, p.parent, path, "give DATA")
        return data["train"], run_data
    return data, None


def default_recipe(data: str, init: str | None) -> str:
    """The recipe a new run starts from: `finetune` with --init, `fashion-mnist` on the built-in
    data set, the paper's on an image folder."""
    if init:
        return "finetune"
    return "fashion-mnist" if data == "fashion-mnist" else "paper"


def train_config_from_arguments(args: argparse.Namespace) -> tuple[TrainConfig, str]:
    """(config, data): the recipe's defaults (or, with --resume, the run's saved config), then the
    --config file, then flags."""
    from inception.recipes import get_recipe

    file_cfg, file_data = read_config_file(args.config) if args.config else ({}, None)
    data = args.data
    if args.resume:
        saved = Path(args.out) / "config.json"
        if not saved.is_file():
            raise UsageError(f"--resume --out {args.out}: not a run directory (no config.json); "
                             "give the --out of an earlier inception train")
        try:
            run = json.loads(saved.read_text())
            cfg = TrainConfig.from_dict(run["train"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UsageError(f"--resume: cannot read the run's config {saved} ({e})") from e
        if not data:
            from inception.data import DataError, resolve_recorded_path

            try:
                data = resolve_recorded_path(run.get("data", "fashion-mnist"), Path(args.out),
                                             str(saved), f"give DATA: inception train DATA "
                                             f"--resume --out {args.out}")
            except DataError as e:
                raise UsageError(str(e)) from e
    else:
        data = data or file_data or "fashion-mnist"
        init = args.init or file_cfg.get("init")
        cfg = get_recipe(args.recipe or file_cfg.get("recipe") or default_recipe(data, init))
    if file_cfg:
        merged = cfg.to_dict()
        model = {**merged.pop("model"), **file_cfg.pop("model", {})}
        cfg = TrainConfig.from_dict({**merged, **file_cfg, "model": model})
    overrides = {**given_arguments(args, TrainConfig), **given_arguments(args, GoogLeNetConfig)}
    cfg = cfg.replace(**overrides)
    classes = data_classes(data)
    if classes is not None and cfg.model.num_classes != classes:
        if "num_classes" in overrides:
            raise UsageError(f"--num-classes {cfg.model.num_classes}: DATA {data} has {classes} "
                             "classes; leave the flag out (the data sets it)")
        cfg = cfg.replace(num_classes=classes)
    return cfg, data


def data_classes(data: str) -> int | None:
    """How many classes `data` has, as training will find them: Fashion-MNIST's 10, or an image
    folder's class folders in train/ (None when there is no such folder)."""
    from inception.data import FASHION_MNIST_CLASSES, class_folder_names

    if data == "fashion-mnist":
        return len(FASHION_MNIST_CLASSES)
    train = Path(data) / "train"
    if not train.is_dir():
        return None
    return len(class_folder_names(train)) or None
