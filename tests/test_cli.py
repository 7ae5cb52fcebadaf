import json
import subprocess
import sys

import pytest
import torch

from inception.cli import main


def test_summary_json(capsys):
    assert main(["summary", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in data["rows"] if r["paper_mismatch"]} == {"conv1", "4c", "5a"}
    assert data["config"]["norm"] == "lrn"


def test_summary_text_mentions_the_budget_and_flags(capsys):
    assert main(["summary"]) == 0
    out = capsys.readouterr().out
    assert "1.5G budget" in out and "22 layers with parameters" in out
    assert "4c: params printed 463K" in out


def test_summary_flags_change_the_model(capsys):
    assert main(["summary", "--json", "--width", "0.5", "--norm", "bn",
                 "--branch5x5-kernel", "3"]) == 0
    data = json.loads(capsys.readouterr().out)
    row = next(r for r in data["rows"] if r["name"] == "3a")
    assert row["n1x1"] == 32 and row["n5x5"] == 16
    assert data["config"]["branch5x5_kernel"] == 3


def test_module_cost(capsys):
    assert main(["summary", "--module-cost"]) == 0
    out = capsys.readouterr().out
    assert "120,422,400" in out and "12,443,648" in out


def test_plot_writes_a_png(tmp_path, capsys):
    path = tmp_path / "cost.png"
    assert main(["summary", "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000


@pytest.mark.parametrize("argv, message", [
    (["summary", "--width", "-1"], "--width must be a number in (0, 8]; got -1"),
    (["summary", "--image-size", "32"], "aux_pool='5x5/3' needs"),
    # refused before any timing, not after the inference rows
    (["bench", "--train", "--image-size", "96", "--device", "cpu"], "on the 6x6 map"),
    (["summary", "--plot", "/nonexistent-dir/x.png"], "--plot /nonexistent-dir/x.png"),
])
def test_bad_input_is_one_line_without_traceback(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU-only machine")
@pytest.mark.parametrize("command", [["train"], ["eval", "runs/x"], ["predict", "runs/x", "a.png"],
                                     ["bench"]])
def test_device_cuda_without_a_gpu_is_one_line(command, capsys):
    assert main([*command, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"inception {command[0]}: error: --device cuda: no CUDA device is "
                           "available; use --device cpu")


@pytest.mark.slow
def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "inception", "summary", "--json"],
                          capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout)["total_params"] == 6_998_552


def _all_parsers():
    from inception.parser import build_parser

    return build_parser().subcommands


def test_every_flag_of_every_command_says_what_it_does():
    import argparse

    for command, parser in _all_parsers().items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            name = "/".join(action.option_strings) or action.dest
            assert action.help and action.help is not argparse.SUPPRESS, f"{command} {name}"
            assert not action.help.startswith("default:"), f"{command} {name}: {action.help}"


def _shown_defaults(argv, monkeypatch, capsys) -> dict[str, str]:
    """{flag: the default `train --help` prints for it}, read from the printed help."""
    import re

    monkeypatch.setenv("COLUMNS", "1000")  # one line per flag: no hyphenated wraps
    assert main([*argv, "--help"]) == 0
    entries: dict[str, str] = {}
    flag = None
    for line in capsys.readouterr().out.splitlines():
        if re.match(r"  --[\w-]", line):  # a flag's entry starts; its help may wrap below
            flag = line.split()[0].rstrip(",")
            entries[flag] = line
        elif flag and line.startswith("    "):
            entries[flag] += " " + line.strip()
        else:
            flag = None
    return {flag: m.group(1) for flag, text in entries.items()
            if (m := re.search(r"\(default: ([^()]*)\)$", text))}


@pytest.mark.parametrize("argv, recipe", [
    (["train"], "fashion-mnist"),
    (["train", "--recipe", "fashion-mnist-long"], "fashion-mnist-long"),
    (["train", "--init", "torchvision:x.pth"], "finetune"),
    (["train", "some-image-folder"], "paper"),
    (["train", "some-image-folder", "--epochs", "7"], "paper"),
])
def test_train_help_shows_the_values_of_the_run_it_would_start(argv, recipe, monkeypatch, capsys):
    from dataclasses import fields

    from inception.config import GoogLeNetConfig
    from inception.flags import show, train_config_from_arguments
    from inception.parser import build_parser
    from inception.train.config import TrainConfig

    shown = _shown_defaults(argv, monkeypatch, capsys)
    args = build_parser().parse_args(argv)
    cfg, _ = train_config_from_arguments(args)
    assert cfg.recipe == recipe
    expected = {"--" + f.name.replace("_", "-"): show(getattr(cfg, f.name))
                for f in fields(TrainConfig) if f.name != "model"}
    expected.update({"--" + f.name.replace("_", "-"): show(getattr(cfg.model, f.name))
                     for f in fields(GoogLeNetConfig)})
    assert {k: shown.get(k) for k in expected} == expected
    if recipe == "paper":  # an image folder trains 250 epochs at batch 32, not Fashion-MNIST's 10
        assert shown["--batch-size"] == "32" and shown["--epochs"] in ("250", "7")


def test_print_config_prints_the_resolved_config_and_trains_nothing(tmp_path, capsys):
    assert main(["train", "--epochs", "3", "--out", str(tmp_path / "run"), "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["train"]["epochs"] == 3 and printed["train"]["recipe"] == "fashion-mnist"
    assert printed["data"] == "fashion-mnist" and not (tmp_path / "run").exists()


def test_a_runs_config_json_is_accepted_back_by_config(tmp_path, capsys):
    from inception.recipes import get_recipe

    saved = get_recipe("fashion-mnist").replace(epochs=4, lr=0.1, width=0.5)
    (tmp_path / "config.json").write_text(json.dumps(
        {"train": saved.to_dict(), "data": "fashion-mnist", "processes": 1, "threads": 2}))
    assert main(["train", "--config", str(tmp_path / "config.json"), "--seed", "3",
                 "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["train"] == saved.replace(seed=3).to_dict()


@pytest.mark.parametrize("argv, suggestion", [
    (["train", "--epoch", "3"], "did you mean --epochs?"),
    (["eval", "RUN", "--crop", "10"], "did you mean --crops?"),
    (["predict", "RUN", "x.png", "--top-k", "3"], "did you mean --topk?"),
])
def test_a_mistyped_flag_gets_did_you_mean(argv, suggestion, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert suggestion in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_version(capsys):
    from inception import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith(f"inception {__version__} (torch ")


def test_shared_flags_are_declared_once_with_one_meaning():
    from inception.recipes import get_recipe

    parsers = _all_parsers()

    def actions(flag):
        return {name: a for name, p in parsers.items() for a in p._actions
                if flag in a.option_strings}

    assert set(actions("--threads")) == set(parsers)  # every command takes it, one declaration
    assert len({a.help for a in actions("--threads").values()}) == 1
    assert len({a.help for a in actions("--device").values()}) == 1
    assert all(a.metavar == "DIR" for a in actions("--out").values())  # always a directory
    # export's --precision is what the exported file computes in (int8 too); train's, eval's
    # and predict's is the PyTorch model's, declared once.
    running = {name: a for name, a in actions("--precision").items() if name != "export"}
    assert {"eval", "predict", "train"} <= set(running)
    assert "int8" in actions("--precision")["export"].choices
    for found, meaning in ((running, "fp32, or bf16 autocast"),
                           (actions("--compile"), "torch.compile")):
        assert len({tuple(a.choices) for a in found.values()}) == 1, meaning
        assert all(meaning in a.help for a in found.values()), meaning
    workers = {a.default or get_recipe("paper").workers for a in actions("--workers").values()}
    assert workers == {get_recipe("paper").workers}  # train's default is the recipe's


def test_bench_error_names_only_flags_bench_has(capsys):
    assert main(["bench", "--train", "--image-size", "96", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "--image-size 96" in err and "--no-aux-logits" not in err and "aux_pool=" not in err


def test_summary_describes_a_trained_model_directory(fashion_run, capsys):
    assert main(["summary", str(fashion_run)]) == 0
    out = capsys.readouterr().out
    assert "width=0.25" in out and "stem='small'" in out and "recorded results:" in out
    assert main(["summary", str(fashion_run), "--width", "0.5"]) == 2


def test_print_config_for_a_folder_has_its_class_count_and_refuses_another(tmp_path, capsys):
    for name in ("circle", "square", "triangle"):
        (tmp_path / "train" / name).mkdir(parents=True)
    assert main(["train", str(tmp_path), "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["train"]["model"]["num_classes"] == 3 and printed["train"]["recipe"] == "paper"
    assert main(["train", str(tmp_path), "--num-classes", "5", "--print-config"]) == 2
    assert "--num-classes 5: DATA" in capsys.readouterr().err


def test_resume_of_a_folder_that_is_no_run_says_so(tmp_path, capsys):
    assert main(["train", "--resume", "--out", str(tmp_path / "nothere")]) == 2
    err = capsys.readouterr().err
    assert "not a run directory" in err and len(err.strip().splitlines()) == 1
