"""Every number a command takes is checked before any work: the flag corpus, and the commands of
the issue that ended in a traceback or took a bad value.

Each numeric option declares its range once, beside it: a config field in `config.option` (its
flag's argparse type and `validate_fields` both use it), any other flag as `flags.number(...)`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import typing
from pathlib import Path

import pytest
from PIL import Image

from inception.cli import main
from inception.config import Bounds, ConfigError, GoogLeNetConfig, field_bounds, field_type
from inception.parser import build_parser
from inception.train.config import TrainConfig

HUGE = 10**12
# The numeric flags each command has, as the parser declares them (the corpus below finds them
# there; this pins how many it covers).
NUMERIC_FLAGS = {"summary": 11, "train": 32, "eval": 5, "predict": 3, "export": 3, "bench": 4,
                 "experiment": 2, "import-caffe": 1, "visualize": 4, "dream": 6}


def numeric_flags() -> list[tuple[str, str, type]]:
    """(command, flag, int or float) for every option of every command whose argparse type is
    int, float or a range (`config.Bounds`), read from the parser itself."""
    found = []
    for command, parser in build_parser().subcommands.items():
        for action in parser._actions:
            kind = action.type.kind if isinstance(action.type, Bounds) else action.type
            if kind in (int, float) and action.option_strings:
                found.append((command, action.option_strings[-1], kind))
    return found


def _corpus_argv(command: str, t: Path, model: Path, image: Path, data_dir: str) -> list[str]:
    """`command` with its required arguments filled and no long work: train only prints its
    config, eval looks at 8 images, visualize and dream take one step, every command runs on
    one thread (the flag under test is appended after these, and argparse keeps the last
    value)."""
    return {
        "summary": ["summary"],
        "train": ["train", "--print-config", "--data-dir", data_dir],
        "eval": ["eval", str(model), "--data-dir", data_dir, "--subset", "8", "--json",
                 "--out", str(t / "eval")],
        "predict": ["predict", str(model), str(image)],
        "export": ["export", str(model), str(t / "model.onnx"), "--data-dir", data_dir],
        "bench": ["bench", "--device", "cpu"],
        "experiment": ["experiment", "dropout", "--out", str(t / "experiments"), "--data-dir",
                       data_dir],
        "import-caffe": ["import-caffe", str(t / "missing.caffemodel"), "--out",
                         str(t / "caffe")],
        "visualize": ["visualize", str(model), "--out", str(t / "viz"), "--channels", "0-1",
                      "--steps", "1", "--no-progress"],
        "dream": ["dream", str(model), str(image), "--out", str(t / "dream"), "--octaves", "1",
                  "--steps", "1", "--no-progress"],
    }[command] + ["--threads", "1"]


def test_every_numeric_flag_of_every_command_is_refused_in_one_line_or_accepted(
        tmp_path, fashion_model, small_fashion_mnist_dir, monkeypatch, capsys):
    """Every numeric flag of every command (`numeric_flags`) given 0, -1, 10**12, "abc" and, for
    a float, "nan", in this process: exit status 2 with one line on stderr naming the flag and
    no traceback, or success (exit 0, no traceback). The work an accepted value would start is
    kept short: train gets --print-config, eval 8 images of the small Fashion-MNIST copy; bench,
    experiment and export's ONNX export are replaced by stubs that record their call (they
    take seconds to minutes; their own tests run them), so what is checked here is the flags
    and the command line around them."""
    from inception import bench, export
    from inception.experiments import report, runner

    calls: list[str] = []

    def export_stub(loaded, out, int8=False, calibration=512, check=1000, **_):
        calls.append("export")
        return export.ExportReport(Path(out), "onnx", 0.0, min(check, 512))

    class ReportStub:
        def text(self) -> str:
            return "stub report"

    monkeypatch.setattr(export, "export_onnx", export_stub)
    monkeypatch.setattr(bench, "run", lambda *a, **k: calls.append("bench") or {})
    monkeypatch.setattr(bench, "format_report", lambda report: "stub bench")
    monkeypatch.setattr(runner, "train_arms", lambda *a, **k: calls.append("experiment"))
    monkeypatch.setattr(report, "build_report", lambda *a, **k: ReportStub())
    monkeypatch.setattr(report, "write_report", lambda *a, **k: [])
    image = tmp_path / "bag.png"
    Image.new("L", (28, 28), 128).save(image)

    flags = numeric_flags()
    counted = {c: sum(1 for command, _, _ in flags if command == c) for c in NUMERIC_FLAGS}
    assert counted == NUMERIC_FLAGS and len(flags) == sum(NUMERIC_FLAGS.values())
    cases, accepted, failures = 0, 0, []
    for command, flag, kind in flags:
        for value in ("0", "-1", str(HUGE), "abc", *(("nan",) if kind is float else ())):
            t = tmp_path / f"case{cases}"
            t.mkdir()
            argv = [*_corpus_argv(command, t, fashion_model, image, small_fashion_mnist_dir),
                    flag, value]
            cases += 1
            try:
                code = main(argv)
            except BaseException as e:  # what a user would see as a traceback
                failures.append(f"{' '.join(argv[:1] + argv[-2:])}: raised {e!r}")
                continue
            err = capsys.readouterr().err
            lines = err.strip().splitlines()
            if "Traceback" in err:
                failures.append(f"{command} {flag} {value}: a traceback: {err}")
            elif code == 0:
                accepted += 1
            elif code != 2 or len(lines) != 1 or not lines[0].startswith(
                    f"inception {command}: error: ") or flag not in lines[0]:
                failures.append(f"{command} {flag} {value}: exit {code}, stderr {err!r}")
    print(f"flag corpus: {len(flags)} numeric flags of {len(NUMERIC_FLAGS)} commands, {cases} "
          f"cases: {accepted} accepted, {cases - accepted} refused in one line")
    assert not failures, "\n".join(failures)
    assert cases == 305
    assert set(calls) <= {"export"}  # no accepted value reaches bench's or experiment's work


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# The issue's commands: tracebacks (`predict --topk -1`: "selected index k out of range",
# `eval --subset 0`: ZeroDivisionError, `export --check 0` and `export --int8 --calibration 0`:
# "not enough values to unpack") and bad values taken (`eval --subset -5` evaluated 9,995
# images, `predict --topk 0` printed the file name alone and exited 0).
@pytest.mark.parametrize("argv, line", [
    (["predict", "{model}", "{image}", "--topk", "-1"],
     "inception predict: error: --topk must be an integer from 1 to 100000; got -1"),
    (["predict", "{model}", "{image}", "--topk", "0"],
     "inception predict: error: --topk must be an integer from 1 to 100000; got 0"),
    (["eval", "{model}", "--subset", "0"],
     "inception eval: error: --subset must be an integer of at least 1; got 0"),
    (["eval", "{model}", "--subset", "-5"],
     "inception eval: error: --subset must be an integer of at least 1; got -5"),
    (["export", "{model}", "{out}", "--check", "0"],
     "inception export: error: --check must be an integer of at least 1; got 0"),
    (["export", "{model}", "{out}", "--int8", "--calibration", "0"],
     "inception export: error: --calibration must be an integer of at least 1; got 0"),
], ids=["predict-topk--1", "predict-topk-0", "eval-subset-0", "eval-subset--5", "export-check-0",
        "export-int8-calibration-0"])
def test_the_issues_bad_numbers_are_refused_in_one_line(argv, line, tmp_path, fashion_model,
                                                        capsys):
    image = tmp_path / "bag.png"
    Image.new("L", (28, 28), 128).save(image)
    fill = {"model": str(fashion_model), "image": str(image), "out": str(tmp_path / "m.onnx")}
    assert main([a.format(**fill) for a in argv] + ["--threads", "1"]) == 2
    assert _one_error_line(capsys) == f"{line} (see inception {argv[0]} --help)"
    assert not (tmp_path / "m.onnx").exists()


def test_predict_topk_above_the_models_classes_says_how_many_it_has(tmp_path, fashion_model,
                                                                     capsys):
    """A model of 10 classes has no 11th to print: the flag is refused, naming the count; left
    out, --topk is 5 (or every class of a model with fewer)."""
    image = tmp_path / "bag.png"
    Image.new("L", (28, 28), 128).save(image)
    argv = ["predict", str(fashion_model), str(image), "--threads", "1"]
    assert main([*argv, "--topk", "11"]) == 2
    assert _one_error_line(capsys) == ("inception predict: error: --topk 11: the model has 10 "
                                       "classes; pass at most 10")
    assert main([*argv, "--topk", "10", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)[0]["predictions"]) == 10


def test_eval_subset_above_the_split_evaluates_every_image_and_says_so(
        tmp_path, fashion_model, small_fashion_mnist_dir, capsys, caplog):
    """The warning is the library's (`evaluation.evaluate`), a line on stderr from the command."""
    assert main(["eval", str(fashion_model), "--subset", str(HUGE), "--data-dir",
                 small_fashion_mnist_dir, "--out", str(tmp_path), "--json",
                 "--threads", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 512
    assert [r.getMessage() for r in caplog.records if r.name.startswith("inception")] == [
        f"--subset {HUGE}: the test split has 512 images; evaluating all of them"]


def test_export_check_and_calibration_above_the_data_say_all_of_it_was_used(
        tmp_path, fashion_model, monkeypatch, capsys):
    """The export itself takes seconds (test_export.py runs it): here a stub stands in for it,
    reporting the 512 images a small data set has, and the command line's words are checked."""
    from inception import export

    def export_stub(loaded, out, int8=False, calibration=512, check=1000, **_):
        report = export.ExportReport(Path(out), "onnx-int8", 0.0, min(check, 512),
                                     min(calibration, 512))
        report.accuracy = {"fp32_top1": 80.0, "int8_top1": 79.5, "drop": 0.5}
        report.speed = {"batch": 32, "fp32_img_s": 100.0, "int8_img_s": 150.0, "speedup": 1.5}
        return report

    monkeypatch.setattr(export, "export_onnx", export_stub)
    assert main(["export", str(fashion_model), str(tmp_path / "m.onnx"), "--int8", "--check",
                 str(HUGE), "--calibration", "600", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert (f"on 512 images (all the data has; --check asked for {HUGE}): " in out), out
    assert "calibrated on 512 training images (all the data has; --calibration asked for 600)" \
        in out


# -- one declaration, two checks: a config field and its flag refuse the same values ---------

def _numeric_fields() -> list[tuple[type, str, Bounds]]:
    found = []
    for cls in (GoogLeNetConfig, TrainConfig):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            bounds = field_bounds(f, field_type(hints[f.name]))
            if bounds is not None:
                found.append((cls, f.name, bounds))
    return found


def _outside(bounds: Bounds) -> list[int | float]:
    """Values just outside `bounds` (and NaN and infinity for a float)."""
    if bounds.choices:
        return [max(bounds.choices) + 1]
    values: list[int | float] = []
    step = 1 if bounds.kind is int else 1e-9
    if bounds.low is not None:
        values.append(bounds.low if bounds.low_open else bounds.low - step)
    if bounds.high is not None:
        values.append(bounds.high if bounds.high_open else bounds.high + step)
    if bounds.kind is float:
        values += [math.nan, math.inf]
    return values


def test_every_numeric_config_field_declares_bounds_its_flag_and_its_dataclass_share(capsys):
    """Each int or float field of the model and training configs has an upper bound where a
    huge value would run for ever or fill memory, and a value outside its bounds is refused by
    the dataclass (ConfigError naming the field) and by `train`'s flag (one line naming the flag)
    in the same words."""
    fields = _numeric_fields()
    assert len(fields) == 28
    unbounded = {name for _, name, b in fields if b.high is None and not b.choices}
    assert unbounded == {"aux_weight", "bn_eps", "lr", "weight_decay", "subset", "val_images"}
    train = {a.dest: a for a in build_parser().subcommands["train"]._actions}
    for cls, name, bounds in fields:
        assert train[name].type == bounds, name
        for value in _outside(bounds):
            words = f"must be {bounds.describe()}; got "
            with pytest.raises(ConfigError, match=f"^{name} {re.escape(words)}"):
                cls(**{name: value}) if cls is GoogLeNetConfig else TrainConfig().replace(
                    **{name: value})
            flag = "--" + name.replace("_", "-")
            text = str(int(value)) if bounds.kind is int else repr(value)
            # --flag=VALUE: argparse reads a lone "-1e-09" as a flag, not a negative number
            assert main(["train", "--print-config", f"{flag}={text}"]) == 2, (flag, text)
            assert _one_error_line(capsys).startswith(
                f"inception train: error: {flag} {words}{text} "), (flag, text)


@pytest.mark.parametrize("bounds, text, expected", [
    (Bounds(int, 1, 100), "1_0", 10),
    (Bounds(float, 0, 1, low_open=True), "1e-3", 1e-3),
    (Bounds(int, 1), str(HUGE), HUGE),
    (Bounds(int, choices=(5, 3)), "3", 3),
])
def test_a_range_type_parses_what_is_inside(bounds, text, expected):
    assert bounds(text) == expected


@pytest.mark.parametrize("bounds, text, words", [
    (Bounds(int, 1, 100), "1.5", "an integer from 1 to 100"),
    (Bounds(int, 1, 100), "9" * 5000, "an integer from 1 to 100"),  # past int()'s digit limit
    (Bounds(float, 0, 1, low_open=True), "0", "a number in (0, 1]"),
    (Bounds(float, 0, 1, high_open=True), "1", "a number in [0, 1)"),
    (Bounds(float, 0), "-inf", "a number of at least 0"),
    (Bounds(float, 0, low_open=True), "1e999", "a number greater than 0"),
    (Bounds(float), "nan", "a finite number"),
    (Bounds(int, choices=(5, 3)), "4", "5 or 3"),
])
def test_a_range_type_refuses_what_is_outside_in_its_words(bounds, text, words):
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        bounds(text)
    assert str(caught.value) == f"must be {words}; got {text}"
