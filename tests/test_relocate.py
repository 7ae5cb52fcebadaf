"""Run directories are relocatable: the data path a run records resolves the same from any
working directory and wherever the run directory is moved (absolute when written; an old run's
relative path is looked for from here, then beside and above the run directory), and a path
that cannot be found is one line saying what to pass."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from inception.cli import main
from inception.data import DataError, recorded_path, resolve_recorded_path
from inception.recipes import get_recipe
from inception.train import train


def _one_line_error(capsys, *wanted):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for w in wanted:
        assert w in err, err
    return err


def _some_image(image_folder) -> Path:
    return next(p for p in sorted((image_folder / "val" / "bag").iterdir()))


@pytest.mark.slow
def test_a_moved_run_directory_resumes_evaluates_predicts_and_exports_from_elsewhere(
        tmp_path, image_folder, monkeypatch, capsys):
    """Trained on a relative DATA, stopped after epoch 1, moved and resumed from another working
    directory; moved again, it evaluates, predicts and exports from a third one."""
    monkeypatch.chdir(image_folder.parent)
    cfg = get_recipe("fashion-mnist").replace(width=0.125, epochs=2, batch_size=16, subset=32,
                                              workers=0, augment="folder", in_chans=3,
                                              image_size=32)
    first = tmp_path / "made" / "run"
    assert train(cfg, image_folder.name, out=first, progress=False, device="cpu",
                 stop_after=1) is None

    moved = tmp_path / "elsewhere" / "deeper" / "run"
    moved.parent.mkdir(parents=True)
    shutil.move(first, moved)
    (tmp_path / "cwd1").mkdir()
    monkeypatch.chdir(tmp_path / "cwd1")
    threads = str(torch.get_num_threads())
    assert main(["train", "--resume", "--out", str(moved), "--no-progress",
                 "--threads", threads]) == 0, capsys.readouterr().err
    assert json.loads((moved / "results.json").read_text())["epochs"] == 2

    again = tmp_path / "archive" / "run"
    again.parent.mkdir()
    shutil.move(moved, again)
    (tmp_path / "cwd2").mkdir()
    monkeypatch.chdir(tmp_path / "cwd2")
    capsys.readouterr()
    assert main(["eval", str(again), "--crops", "1", "--threads", threads, "--workers", "0",
                 "--json"]) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["images"] == 60
    assert main(["predict", str(again), str(_some_image(image_folder)), "--threads",
                 threads]) == 0, capsys.readouterr().err
    assert main(["export", str(again), str(tmp_path / "run.onnx"), "--check", "8",
                 "--threads", threads]) == 0, capsys.readouterr().err
    assert (tmp_path / "run.onnx").is_file()


def test_a_run_records_the_data_folder_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert recorded_path("imgs") == str(tmp_path / "imgs")
    assert recorded_path("fashion-mnist") == "fashion-mnist"


def _tree(root: Path, *folders: str) -> None:
    for f in folders:
        (root / f).mkdir(parents=True)


def test_an_old_relative_data_path_is_found_from_here_or_above_the_run_directory(
        tmp_path, monkeypatch):
    """A relative path as older versions recorded it: from the working directory first, then
    from the run directory and each folder above it; an absolute path that no longer exists is
    looked for by its last part the same way."""
    _tree(tmp_path, "project/imgs/val", "project/runs/x", "cwd/imgs", "other")
    run = tmp_path / "project" / "runs" / "x"
    monkeypatch.chdir(tmp_path / "cwd")
    assert resolve_recorded_path("imgs", run, "config.json", "give DATA") == "imgs"
    monkeypatch.chdir(tmp_path / "other")
    assert resolve_recorded_path("imgs", run, "config.json", "give DATA") == str(
        tmp_path / "project" / "imgs")
    gone = str(tmp_path / "old-home" / "imgs")
    assert resolve_recorded_path(gone, run, "config.json", "give DATA") == str(
        tmp_path / "project" / "imgs")
    with pytest.raises(DataError, match=r"DATA lost/imgs \(recorded in config.json\) is not "
                                        r"found .*; give DATA"):
        resolve_recorded_path("lost/imgs", run, "config.json", "give DATA")


def test_a_run_whose_data_cannot_be_found_says_what_to_pass(tmp_path, fashion_model,
                                                            monkeypatch, capsys):
    """eval, export and train --resume of a run directory whose recorded folder is nowhere to be
    found: one line naming the path, the file that records it, and what to pass."""
    model = tmp_path / "model"
    shutil.copytree(fashion_model, model)
    meta = json.loads((model / "model.json").read_text())
    (model / "model.json").write_text(json.dumps({**meta, "data": "gone/imgs"}))
    monkeypatch.chdir(tmp_path)
    assert main(["eval", str(model), "--threads", "1"]) == 2
    _one_line_error(capsys, "DATA gone/imgs", "model.json", "give DATA")
    assert main(["export", str(model), str(tmp_path / "m.onnx"), "--threads", "1"]) == 2
    _one_line_error(capsys, "DATA gone/imgs", "give --data")

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(
        {"train": get_recipe("fashion-mnist").to_dict(), "data": "gone/imgs"}))
    assert main(["train", "--resume", "--out", str(run), "--threads", "1"]) == 2
    _one_line_error(capsys, "DATA gone/imgs", "config.json",
                    f"inception train DATA --resume --out {run}")
