"""One evaluation path: what a run records after each epoch is what `inception eval RUN --crops 1`
measures on the same images (the run's `Preprocessing` cuts and normalises them, the model runs
in the precision it was trained in), and run directories written before the evaluated split was
named in `metrics.csv` still resume, plot and evaluate."""

import csv
import json

import torch

import inception
from inception import evaluation
from inception.cli import main
from inception.recipes import get_recipe
from inception.train import train
from inception.train.rundir import metric_columns

TIMING = {"wall_s", "images_per_s"}


def _tiny(**changes):
    """The default recipe at width 1/8, 16 steps of 32 images an epoch, for 2 epochs: a model
    that has learnt a little (about 30% test top-1 here), whose logits are close together, so
    that any difference between two evaluations shows."""
    base = dict(width=0.125, subset=512, epochs=2, batch_size=32, workers=0)
    return get_recipe("fashion-mnist").replace(**{**base, **changes})


def _rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _eval_json(run_dir, capsys, *flags):
    """`inception eval RUN --crops 1 --json`, with the training's thread count."""
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--crops", "1", "--json", "--out", str(run_dir / "eval"),
                 "--threads", str(torch.get_num_threads()), *flags]) == 0
    return json.loads(capsys.readouterr().out)


def _assert_recorded_equals_measured(run_dir, measured, split):
    recorded = json.loads((run_dir / "results.json").read_text())
    last = _rows(run_dir)[-1]
    keys = [f"{split}_{k}" for k in ("top1", "top5", "loss")]
    assert measured["split"] == split
    assert [measured["top1"], measured["top5"], measured["loss"]] == [recorded[k] for k in keys]
    assert [last[k] for k in keys] == [str(recorded[k]) for k in keys]
    assert measured["per_class_top1"] == {c: p for c, p in recorded["per_class_top1"].items()
                                          if c in measured["per_class_top1"]}


def test_a_fashion_mnist_runs_recorded_accuracy_is_what_eval_measures(
        tmp_path, small_fashion_mnist_dir, capsys):
    run = train(_tiny(), out=tmp_path / "run", progress=False, device="cpu",
                data_dir=small_fashion_mnist_dir).run_dir
    measured = _eval_json(run, capsys, "--data-dir", small_fashion_mnist_dir)
    assert measured["images"] == 512 and measured["precision"] == "bf16"  # the recipe's
    _assert_recorded_equals_measured(run, measured, "test")


def test_an_image_folder_runs_recorded_accuracy_is_what_eval_measures(tmp_path, image_folder,
                                                                      capsys):
    """The fixture's images are 28 to 57 px wide, of several aspect ratios: each is resized to
    a shorter side of 37 and centre-cropped to 32 x 32, the resize and crop `model.json`
    records, in training's validation as in `inception eval`."""
    cfg = _tiny(subset=None, batch_size=16, augment="folder", in_chans=3, image_size=32,
                averaging="none")  # 22 steps: an average of them would still be at chance
    run = train(cfg, str(image_folder), out=tmp_path / "run", progress=False,
                device="cpu").run_dir
    assert json.loads((run / "model.json").read_text())["preprocessing"]["resize"] == 37
    measured = _eval_json(run, capsys)
    assert measured["images"] == 60
    _assert_recorded_equals_measured(run, measured, "val")


def _to_old_format(run_dir, split):
    """Rewrite `run_dir` as runs wrote it before the evaluated split was named: `val_*` columns
    in `metrics.csv` and in the checkpoints' rows, whatever the split, and a `model.json`
    without the training precision."""
    old = {f"{split}_{m}": f"val_{m}" for m in ("loss", "top1", "top5")}
    for name in ("last.pt", "previous.pt"):
        path = run_dir / "checkpoints" / name
        if path.exists():
            ckpt = torch.load(path, weights_only=True)
            ckpt["metrics"] = [{old.get(k, k): v for k, v in r.items()} for r in ckpt["metrics"]]
            torch.save(ckpt, path)
    text = (run_dir / "metrics.csv").read_text()
    header, rest = text.split("\n", 1)
    (run_dir / "metrics.csv").write_text(",".join(old.get(c, c) for c in header.split(","))
                                         + "\n" + rest)
    if (run_dir / "model.json").exists():
        _without_precision(run_dir)


def _without_precision(run_dir):
    meta = run_dir / "model.json"
    data = json.loads(meta.read_text())
    del data["precision"]
    meta.write_text(json.dumps(data, indent=2))


def test_an_old_run_directory_resumes_to_the_same_run_and_evaluates(
        tmp_path, small_fashion_mnist_dir, capsys):
    """Stopped after epoch 1 and rewritten in the old format, the run resumes to the bytes and
    metrics of an uninterrupted one, its `metrics.csv` now named for its split; a finished old
    run resumes (to its plots and results) and evaluates in the precision its `config.json`
    records."""
    cfg = _tiny(subset=64)
    kw = dict(progress=False, device="cpu", data_dir=small_fashion_mnist_dir)
    full = train(cfg, out=tmp_path / "full", **kw).run_dir
    old = tmp_path / "old"
    assert train(cfg, out=old, stop_after=1, **kw) is None
    _to_old_format(old, "test")
    assert list(_rows(old)[0])[3] == "val_loss"
    train(cfg, out=old, resume=True, **kw)
    untimed = [[{k: v for k, v in r.items() if k not in TIMING} for r in _rows(d)]
               for d in (full, old)]
    assert untimed[0] == untimed[1] and list(_rows(old)[0]) == list(metric_columns("test"))
    assert (old / "model.safetensors").read_bytes() == (full / "model.safetensors").read_bytes()

    _to_old_format(old, "test")  # finished, in the old format
    for name in ("curves.png", "confusion.png", "results.json"):
        (old / name).unlink()
    train(cfg, out=old, resume=True, **kw)
    assert (old / "curves.png").exists() and (old / "confusion.png").exists()
    assert list(_rows(old)[0]) == list(metric_columns("test"))
    _without_precision(old)  # as model.json was written: the precision only in config.json
    assert "precision" not in json.loads((old / "model.json").read_text())
    assert evaluation.trained_precision(inception.load(old)) == "bf16"
    measured = _eval_json(old, capsys, "--data-dir", small_fashion_mnist_dir)
    _assert_recorded_equals_measured(old, measured, "test")
