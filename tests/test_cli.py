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
    (["summary", "--width", "-1"], "width must be positive"),
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
