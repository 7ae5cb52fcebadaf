import csv
import json
import logging

import pytest
import torch
from safetensors.torch import load_file

from inception import googlenet
from inception.cli import main
from inception.config import ConfigError, GoogLeNetConfig
from inception.recipes import get_recipe
from inception.train import RunError, train
from inception.train.checkpoint import load_checkpoint
from inception.train.rundir import metric_columns

TIMING = {"wall_s", "images_per_s"}


def _small(recipe="fashion-mnist", **changes):
    base = dict(width=0.25, subset=2048, epochs=2, batch_size=64, workers=0)
    return get_recipe(recipe).replace(**{**base, **changes})


def _metrics(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _assert_same_run(a, b):
    """The same metrics apart from timings, and the same model, byte for byte."""
    untimed = [[{k: v for k, v in r.items() if k not in TIMING} for r in _metrics(d)]
               for d in (a, b)]
    assert untimed[0] == untimed[1]
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_fashion_mnist_run_directory(tmp_path, small_fashion_mnist_dir):
    run = train(_small(), out=tmp_path / "run", progress=False, data_dir=small_fashion_mnist_dir)
    d = run.run_dir
    for name in ("config.json", "metrics.csv", "checkpoints/last.pt", "model.safetensors",
                 "model.json", "results.json", "curves.png", "confusion.png"):
        assert (d / name).exists(), name
    rows = _metrics(d)
    # No validation split held out: every epoch is evaluated on the test set, and named so.
    assert list(rows[0]) == list(metric_columns("test"))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    results = json.loads((d / "results.json").read_text())
    assert {"test_top1", "test_top5", "wall_s", "epochs"} <= set(results)
    assert results["test_top1"] > 50  # 64 steps on 2048 images: far above 10% chance
    ckpt = load_checkpoint(d / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 2
    meta = json.loads((d / "model.json").read_text())
    assert len(meta["classes"]) == 10 and meta["preprocessing"]["image_size"] == 28
    # The exported model rebuilds from model.json alone, without aux heads, and matches.
    model = googlenet(GoogLeNetConfig.from_dict(meta["model"]))
    assert not model.aux
    model.load_state_dict(load_file(d / "model.safetensors"))


@pytest.mark.slow
def test_train_on_a_mixed_image_folder_learns(tmp_path, image_folder):
    cfg = _small(augment="folder", in_chans=3, subset=None, epochs=6, batch_size=16)
    run = train(cfg, str(image_folder), out=tmp_path / "run", progress=False)
    assert run.results["val_top1"] > 60  # 3 classes: chance is 33%
    meta = json.loads((run.run_dir / "model.json").read_text())
    assert meta["classes"] == ["bag", "sneaker", "trouser"]


@pytest.mark.slow
def test_paper_recipe_short_run_on_a_folder_learns(tmp_path, image_folder):
    """Section 6's recipe as it is (LRN, true 5x5, lr 0.01, step schedule, Polyak averaging over
    the second half, random-sized crops with random interpolation, Howard's distortions), at
    80 px (4a is 5x5, which the paper's 5x5/3 aux pool covers), width 0.25 and batch 16 for 8
    epochs, with the learning rate scaled linearly to the batch (0.01 at 32 -> 0.005 at 16).
    On 180 training and 60 validation images its accuracy swings from epoch to epoch: this
    configuration with `seed=0, 1, 2` on this fixture (the equivalent command: `inception train
    FOLDER --recipe paper --image-size 80 --width 0.25 --epochs 8 --batch-size 16 --workers 0
    --lr 0.005 --seed S`) ended at 70%, 90% and 68% and peaked at 73%, 95% and 68%, its
    training loss falling from 1.76-1.81 to 1.35-1.67, so the test asks for a lower last loss
    and for the best epoch to be well above chance (33%), not the last."""
    cfg = get_recipe("paper").replace(image_size=80, width=0.25, epochs=8, batch_size=16,
                                      workers=0, lr=0.005)
    run = train(cfg, str(image_folder), out=tmp_path / "run", progress=False)
    rows = _metrics(run.run_dir)
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert max(float(r["val_top1"]) for r in rows) > 60


def test_existing_run_directory_is_never_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(RunError, match="already exists"):
        train(_small(), out=out, progress=False)
    assert (out / "precious.txt").read_text() == "keep me"
    with pytest.raises(RunError, match="does not exist"):
        train(_small(), out=tmp_path / "nothing", resume=True, progress=False)


def test_cli_train_errors_are_one_line(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing")]) == 2
    assert main(["train", "--recipe", "nope", "--out", str(tmp_path / "r")]) == 2
    assert main(["train", "--epochs", "0", "--out", str(tmp_path / "r")]) == 2
    assert main(["train", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("inception train: error:") for line in err)
    assert "Traceback" not in "".join(err)


def test_config_file_toml_and_yaml(tmp_path):
    from inception.flags import train_config_from_arguments
    from inception.parser import build_parser

    toml = tmp_path / "c.toml"
    toml.write_text('epochs = 3\nlr = 0.05\n[model]\nwidth = 0.5\n')
    yaml = tmp_path / "c.yaml"
    yaml.write_text("epochs: 4\nmodel:\n  dropout: 0.3\n")
    for path, check in ((toml, lambda c: (c.epochs, c.lr, c.model.width) == (3, 0.05, 0.5)),
                        (yaml, lambda c: (c.epochs, c.model.dropout) == (4, 0.3))):
        args = build_parser().parse_args(["train", "--config", str(path), "--seed", "7"])
        cfg, data = train_config_from_arguments(args)
        assert check(cfg) and cfg.seed == 7 and data == "fashion-mnist"
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = 'ten'\n")
    args = build_parser().parse_args(["train", "--config", str(bad)])
    with pytest.raises(ConfigError, match="epochs must be of type int"):
        train_config_from_arguments(args)


def test_checkpoint_is_safe_to_load(tmp_path):
    path = tmp_path / "last.pt"

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": 1, "x": Payload()}, path)
    with pytest.raises(RunError, match="not a loadable checkpoint"):
        load_checkpoint(path)


@pytest.mark.slow
@pytest.mark.parametrize("averaging", ["ema", "polyak"])
def test_reading_the_loss_less_often_changes_nothing(tmp_path, small_fashion_mnist_dir,
                                                     averaging):
    """`sync_every` (how often the loop reads from the device) and the checkpoint interval
    change when things are read and saved, never what is computed: the same model, byte for
    byte, and the same metrics."""
    cfg = _small(subset=256, averaging=averaging, average_start=0.25)  # 4 steps an epoch
    every = train(cfg, out=tmp_path / "every", progress=False, sync_every=1,
                  data_dir=small_fashion_mnist_dir)
    rarely = train(cfg, out=tmp_path / "rarely", progress=False, sync_every=3,
                   checkpoint_every=5, data_dir=small_fashion_mnist_dir)
    _assert_same_run(every.run_dir, rarely.run_dir)


@pytest.mark.slow
def test_compile_goes_through_dynamo_and_changes_nothing(tmp_path, small_fashion_mnist_dir,
                                                        monkeypatch):
    """`compile=` traces the training forward with TorchDynamo (its eager backend here: Inductor
    would compile C++ for minutes on this machine) and trains the same model."""
    import functools

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    cfg = _small(subset=256, epochs=1, batch_size=128)
    compiled = train(cfg, out=tmp_path / "compiled", progress=False, compile="default",
                     data_dir=small_fashion_mnist_dir)
    eager = train(cfg, out=tmp_path / "eager", progress=False, data_dir=small_fashion_mnist_dir)
    _assert_same_run(compiled.run_dir, eager.run_dir)
    with pytest.raises(RunError, match="--compile fast: use one of"):
        train(cfg, out=tmp_path / "bad", progress=False, compile="fast")


@pytest.mark.slow
def test_resume_mid_epoch_on_an_image_folder_matches_an_uninterrupted_run(tmp_path,
                                                                          image_folder):
    """The DataLoader pipeline (each sample seeded by seed, epoch and index): restarted from a
    checkpoint taken in the middle of epoch 2, the run ends on the same bytes."""
    import shutil

    cfg = get_recipe("paper").replace(image_size=32, width=0.125, num_classes=3, epochs=2,
                                      batch_size=8, workers=0, precision="fp32", stem="small",
                                      lr=0.01)
    full = train(cfg, image_folder, out=tmp_path / "full", progress=False, checkpoint_every=3)
    steps = load_checkpoint(full.run_dir / "checkpoints" / "last.pt")["step"]
    cut = tmp_path / "cut"
    shutil.copytree(full.run_dir, cut)
    ckpt = load_checkpoint(cut / "checkpoints" / "previous.pt")
    assert ckpt["position"]["epoch"] == 1 and 0 < ckpt["position"]["batch"] < steps // 2
    shutil.copy(cut / "checkpoints" / "previous.pt", cut / "checkpoints" / "last.pt")
    for name in ("model.safetensors", "results.json", "metrics.csv"):
        (cut / name).unlink()
    train(cfg, image_folder, out=cut, progress=False, resume=True, checkpoint_every=3)
    _assert_same_run(full.run_dir, cut)


@pytest.mark.slow
def test_the_exported_model_is_the_average_once_averaging_has_begun(tmp_path,
                                                                   small_fashion_mnist_dir):
    """"Polyak averaging [13] was used to create the final model used at inference time": the
    exported weights (and the evaluation) are the average's, not the last iterate's."""
    cfg = _small(subset=256, epochs=1, averaging="polyak", average_start=0.5)
    run = train(cfg, out=tmp_path / "run", progress=False, data_dir=small_fashion_mnist_dir)
    ckpt = load_checkpoint(run.run_dir / "checkpoints" / "last.pt")
    exported = load_file(run.run_dir / "model.safetensors")
    averaged = {k.removeprefix("module."): v for k, v in ckpt["average"].items()
                if k.startswith("module.")}
    assert int(ckpt["average"]["n_averaged"]) == 2  # steps 3 and 4 of 4
    assert all(torch.equal(v, averaged[k]) for k, v in exported.items())
    assert not all(torch.equal(v, ckpt["model"][k]) for k, v in exported.items())


def test_a_held_out_validation_split_is_the_end_of_the_training_set(fashion_mnist):
    from inception.train.loaders import load_data

    train_split, test_split = fashion_mnist
    cfg = _small(subset=None, val_images=1000)
    data = load_data(cfg, "fashion-mnist", None, torch.device("cpu"))
    assert (data.train.num_images, data.every_epoch.num_images, data.test.num_images) == \
           (59000, 1000, 10000)
    assert (data.every_epoch.name, data.test.name) == ("val", "test")
    assert torch.equal(data.every_epoch.images.labels, train_split.labels[-1000:])
    assert torch.equal(data.every_epoch.images.images, train_split.images[-1000:])
    assert torch.equal(data.test.images.labels, test_split.labels)
    plain = load_data(_small(subset=None), "fashion-mnist", None, torch.device("cpu"))
    assert plain.test is None and plain.every_epoch.name == "test"
    assert plain.train.num_images == 60000
    with pytest.raises(ConfigError, match="--val-images 60000"):
        load_data(cfg.replace(val_images=60000), "fashion-mnist", None, torch.device("cpu"))


@pytest.mark.slow
def test_a_run_with_a_validation_split_reports_both(tmp_path, small_fashion_mnist_dir, capsys):
    assert main(["train", "--subset", "512", "--epochs", "1", "--batch-size", "128",
                 "--width", "0.25", "--workers", "0", "--val-images", "500", "--out",
                 str(tmp_path / "run"), "--no-progress",
                 "--data-dir", small_fashion_mnist_dir]) == 0
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert {"val_top1", "test_top1", "val_loss", "test_loss"} <= results.keys()
    assert results["val_loss"] != results["test_loss"]  # two splits, not one evaluated twice
    assert "(the split to tune on)" in out and "test top-1" in out
    assert _metrics(tmp_path / "run")[0]["val_top1"] == f"{results['val_top1']}"


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, small_fashion_mnist_dir):
    """(run directory, its log lines): 90 images in batches of 32, one epoch, width 1/8."""
    logger, lines = logging.getLogger("inception"), _Lines()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(lines)
    try:
        cfg = _small(width=0.125, subset=90, epochs=1, batch_size=32)
        run = train(cfg, out=tmp_path_factory.mktemp("tiny") / "run", progress=False,
                    device="cpu", data_dir=small_fashion_mnist_dir)
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
    return run.run_dir, lines.lines


@pytest.mark.slow
def test_a_run_says_how_many_images_each_epoch_leaves_out(tiny_run):
    """Whole batches only (which images are trained on is unchanged): 90 images in batches of
    32 train on 64 an epoch, said once at the start and recorded in `results.json`."""
    run_dir, lines = tiny_run
    said = [line for line in lines if "each epoch trains on" in line]
    assert said == ["each epoch trains on 64 of the 90 training images, in whole batches of 32: "
                    "the 26 that its shuffle puts last (different ones each epoch) are left out; "
                    "a --batch-size that divides 90 uses them all"]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["images_per_epoch"] == 64 and results["left_out_per_epoch"] == 26


@pytest.mark.parametrize("n,batch,left_out", [(90, 32, 26), (90, 30, 0), (60000, 256, 96)])
def test_the_batches_count_the_images_each_epoch_leaves_out(n, batch, left_out):
    from inception import data as data_lib
    from inception.train.loaders import loader_batches, tensor_batches

    split = data_lib.TensorSplit(torch.zeros(n, 1, 1, 1, dtype=torch.uint8),
                                 torch.zeros(n, dtype=torch.long))
    cfg = _small(batch_size=batch)
    in_memory = tensor_batches(split, batch, cfg, (0.5,), (0.25,), train=True)
    from_files = loader_batches(data_lib.TensorImageDataset(split, None), batch, cfg, True,
                                pin=False)
    for batches in (in_memory, from_files):
        assert (batches.left_out, batches.num_batches) == (left_out, n // batch)
    assert tensor_batches(split, batch, cfg, (0.5,), (0.25,), train=False).left_out == 0


def _snapshot(folder):
    """Every path under `folder` (and itself): its mtime, and a file's bytes."""
    return {str(p): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
            for p in [folder, *sorted(folder.rglob("*"))]}


def _finished_run(run_dir, epochs):
    """A run directory as a finished run leaves it, trimmed to what `train --resume` reads:
    `config.json`, a checkpoint at the end of its last epoch, `results.json`."""
    cfg = get_recipe("fashion-mnist").replace(epochs=epochs)
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"train": cfg.to_dict(),
                                                     "data": "fashion-mnist"}))
    torch.save({"format": 2, "train_config": cfg.to_dict(), "epoch": epochs, "step": 10},
               run_dir / "checkpoints" / "last.pt")
    (run_dir / "results.json").write_text(json.dumps({"epochs": epochs, "plots": []}))
    return run_dir


def test_resume_of_a_finished_run_says_so_and_touches_nothing(tmp_path, caplog, capsys):
    run_dir = _finished_run(tmp_path / "run", 2)
    before = _snapshot(run_dir)
    with caplog.at_level(logging.INFO, logger="inception"):
        assert main(["train", "--resume", "--out", str(run_dir), "--no-progress",
                     "--threads", "1"]) == 0
    assert f"{run_dir} is finished (2 epochs); nothing to do" in caplog.messages
    assert _snapshot(run_dir) == before
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.slow
def test_resuming_a_finished_run_says_so_and_changes_nothing(tiny_run, small_fashion_mnist_dir,
                                                             caplog, capsys):
    """A run trained to its end: `train --resume` trains nothing and writes nothing."""
    run_dir, _ = tiny_run
    before = _snapshot(run_dir)
    with caplog.at_level(logging.INFO, logger="inception"):
        assert main(["train", "--resume", "--out", str(run_dir), "--data-dir",
                     small_fashion_mnist_dir, "--no-progress", "--threads", "1"]) == 0
    assert f"{run_dir} is finished (1 epoch); nothing to do" in caplog.messages
    assert not any("resuming" in m for m in caplog.messages)
    assert _snapshot(run_dir) == before
    assert "Traceback" not in capsys.readouterr().err


def test_a_batch_larger_than_the_training_set_says_what_to_pass(tmp_path,
                                                                small_fashion_mnist_dir):
    cfg = _small(subset=91, batch_size=256)
    with pytest.raises(RunError, match="--batch-size 256 is larger than the 91 training images; "
                                       "pass --batch-size 91 or less"):
        train(cfg, out=tmp_path / "run", progress=False, data_dir=small_fashion_mnist_dir)
    assert not (tmp_path / "run").exists()
