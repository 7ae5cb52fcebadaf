"""Bad inputs get clear errors or are skipped; a crash never leaves a run unresumable.

Every class of bad input a user can hand us has a case here: image files (decoded, or an
ImageError naming the file; skipped and listed inside a training folder), folders, model files,
checkpoints and flags given to the `inception` command (exit status 2, one line on stderr, no
traceback), and pickles carrying code (refused, nothing run).
"""

import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from inception import data as data_lib
from inception.cli import main
from inception.config import ConfigError
from inception.recipes import get_recipe
from inception.train import RunError, TrainConfig, train
from inception.train.checkpoint import CHECKPOINT_FORMAT, load_latest_checkpoint


def _jpeg_bytes(size=(40, 30), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 128).save(buf, "JPEG")
    return buf.getvalue()


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


BAD_FILES = {
    "truncated.jpg": lambda: _jpeg_bytes()[:200],
    "truncated.png": lambda: _png_bytes(Image.new("RGB", (40, 40), 9))[:60],
    "corrupt.png": lambda: b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
    "empty.jpg": lambda: b"",
    "text.png": lambda: b"not an image at all\n" * 10,
    "random.jpg": lambda: np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes(),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_undecodable_files_raise_image_error_naming_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name]())
    with pytest.raises(data_lib.ImageError, match=name):
        data_lib.load_image(path)


def test_awkward_but_valid_images_decode(tmp_path):
    """CMYK, 16-bit, palette with transparency, RGBA, LA, EXIF-rotated, 1x1 pixel, 1x300."""
    files = {}
    Image.new("CMYK", (20, 10), (0, 255, 0, 0)).save(tmp_path / "cmyk.jpg")
    files["cmyk.jpg"] = (20, 10)
    Image.new("I;16", (7, 9), 40000).save(tmp_path / "deep.png")
    files["deep.png"] = (7, 9)
    p = Image.new("P", (5, 6))
    p.info["transparency"] = 0
    p.save(tmp_path / "palette.png", transparency=0)
    files["palette.png"] = (5, 6)
    Image.new("RGBA", (6, 5), (200, 0, 0, 100)).save(tmp_path / "rgba.png")
    files["rgba.png"] = (6, 5)
    Image.new("LA", (3, 4), (10, 0)).save(tmp_path / "la.png")
    files["la.png"] = (3, 4)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.new("RGB", (30, 10), 200).save(tmp_path / "rotated.jpg", exif=exif)
    files["rotated.jpg"] = (10, 30)
    Image.new("RGB", (1, 1), 5).save(tmp_path / "dot.png")
    files["dot.png"] = (1, 1)
    Image.new("L", (1, 300), 7).save(tmp_path / "sliver.png")
    files["sliver.png"] = (1, 300)
    for name, size in files.items():
        for mode in ("RGB", "L"):
            image = data_lib.load_image(tmp_path / name, mode)
            assert image.mode == mode and image.size == size, name
    # Transparent pixels become white, not black.
    assert data_lib.load_image(tmp_path / "la.png").getpixel((0, 0)) == (255, 255, 255)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=600), st.sampled_from([".jpg", ".png", ".gif", ".webp"]),
       st.integers(0, 600))
def test_fuzzed_files_decode_or_raise_image_error(tmp_path, payload, suffix, cut):
    """Random bytes, and valid images cut at a random point: an image or ImageError, nothing
    else."""
    for i, blob in enumerate((payload, _jpeg_bytes()[:cut], payload[:8] + _jpeg_bytes())):
        path = tmp_path / f"f{i}{suffix}"
        path.write_bytes(blob)
        try:
            image = data_lib.load_image(path)
        except data_lib.ImageError:
            continue
        assert image.mode == "RGB" and image.width >= 1


_values = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=8), st.lists(st.integers(), max_size=2))
_keys = st.sampled_from(["epochs", "lr", "batch_size", "schedule", "model", "width", "norm",
                         "ema_decay", "subset", "seed", "nope", "precision", "init", "dropout"])


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_keys, st.one_of(_values, st.dictionaries(_keys, _values, max_size=3)),
                       max_size=5))
def test_fuzzed_configs_build_or_raise_config_error(data):
    try:
        cfg = TrainConfig.from_dict(data)
    except ConfigError:
        return
    assert isinstance(cfg.epochs, int) and cfg.epochs >= 1


@pytest.mark.slow
def test_bad_files_are_skipped_and_listed(tmp_path, image_folder):
    root = tmp_path / "folder"
    shutil.copytree(image_folder, root)
    for name, make in BAD_FILES.items():
        (root / "train" / "bag" / name).write_bytes(make())
    (root / "val" / "trouser" / "broken.jpg").write_bytes(_jpeg_bytes()[:100])
    cfg = get_recipe("fashion-mnist").replace(width=0.25, epochs=1, batch_size=16, workers=0,
                                              augment="folder", in_chans=3, image_size=32)
    run = train(cfg, str(root), out=tmp_path / "run", progress=False)
    skipped = json.loads((run.run_dir / "skipped_files.json").read_text())
    assert skipped["count"] == len(BAD_FILES) + 1
    assert sorted(p.rsplit("/", 1)[1] for p in skipped["files"]["train"]) == sorted(BAD_FILES)
    assert [p.rsplit("/", 1)[1] for p in skipped["files"]["val"]] == ["broken.jpg"]
    assert run.results["epochs"] == 1


def test_batch_larger_than_the_data_is_refused_before_anything_is_written(tmp_path, fashion_mnist):
    cfg = get_recipe("fashion-mnist").replace(subset=100, batch_size=256, width=0.25)
    with pytest.raises(RunError, match="--batch-size 256 is larger than the 100"):
        train(cfg, out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_previous_checkpoint_is_kept_and_used_when_the_last_is_damaged(tmp_path,
                                                                       small_fashion_mnist_dir):
    cfg = get_recipe("fashion-mnist").replace(subset=512, batch_size=64, width=0.25, epochs=3,
                                              workers=0)
    out = tmp_path / "run"
    kw = dict(progress=False, data_dir=small_fashion_mnist_dir)
    assert train(cfg, out=out, stop_after=2, **kw) is None
    folder = out / "checkpoints"
    assert load_latest_checkpoint(folder)["epoch"] == 2
    assert torch.load(folder / "previous.pt", weights_only=True)["epoch"] == 1
    # A crash while the last checkpoint was being written leaves it truncated.
    (folder / "last.pt").write_bytes((folder / "last.pt").read_bytes()[:5000])
    assert load_latest_checkpoint(folder)["epoch"] == 1
    resumed = train(cfg, out=out, resume=True, **kw)
    assert resumed.results["epochs"] == 3


def test_unwritable_or_full_out_is_refused_before_training(tmp_path, fashion_mnist, monkeypatch):
    cfg = get_recipe("fashion-mnist").replace(subset=256, batch_size=64, width=0.25, epochs=1)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RunError, match="cannot write there"):
        train(cfg, out=blocker / "run", progress=False)
    import shutil as shutil_module

    usage = shutil_module.disk_usage(tmp_path)
    monkeypatch.setattr(shutil_module, "disk_usage",
                        lambda p: usage._replace(free=1024 * 1024))
    with pytest.raises(RunError, match="MiB free"):
        train(cfg, out=tmp_path / "full", progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("sync_every", [1, 4])
def test_nan_loss_stops_the_run_and_keeps_the_checkpoint(tmp_path, small_fashion_mnist_dir,
                                                         monkeypatch, sync_every):
    """Also when the loss is read only every 4 steps (as on a GPU): the checkpoint due at step 6,
    between two reads, reads steps 5-6 first, finds the NaN of step 5 and never saves the
    poisoned weights."""
    from inception.train import engine

    cfg = get_recipe("fashion-mnist").replace(subset=256, batch_size=64, width=0.25, epochs=3,
                                              workers=0)
    out = tmp_path / "run"
    kw = dict(progress=False, data_dir=small_fashion_mnist_dir)
    assert train(cfg, out=out, stop_after=1, **kw) is None  # 4 steps an epoch
    before = (out / "checkpoints" / "last.pt").read_bytes()
    real = engine.googlenet_loss
    monkeypatch.setattr(engine, "googlenet_loss",
                        lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(RunError, match="the loss became nan at step 5;"):
        train(cfg, out=out, resume=True, checkpoint_every=2, sync_every=sync_every, **kw)
    assert (out / "checkpoints" / "last.pt").read_bytes() == before


class _Payload:
    """Unpickling this creates a folder: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.mkdir, (str(self.marker),))


def test_a_pickle_with_a_payload_is_refused_by_every_command(tmp_path, fashion_model, capsys):
    """A pickle that runs code when loaded, as a model file, an --init file and a checkpoint:
    `eval`, `predict`, `export`, `train --init` and `train --resume` refuse it in one line each,
    and nothing runs."""
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"fc.weight": _Payload(marker), "format": 2}, evil)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    shutil.copy(evil, model_dir / "model.safetensors")
    shutil.copy(fashion_model / "model.json", model_dir / "model.json")
    run_dir = _stopped_run(tmp_path / "run")
    shutil.copy(evil, run_dir / "checkpoints" / "last.pt")
    folder = _tiny_folder(tmp_path / "folder")
    image = next((folder / "val" / "bag").iterdir())
    commands = [
        ["eval", str(model_dir)], ["eval", str(evil)],
        ["predict", str(model_dir), str(image)],
        ["export", str(model_dir), str(tmp_path / "x.onnx")],
        ["train", str(folder), "--init", f"torchvision:{evil}", "--batch-size", "4",
         "--epochs", "1", "--out", str(tmp_path / "init"), "--threads", "2"],
        ["train", "--resume", "--out", str(run_dir), "--threads", "2"],
    ]
    for command in commands:
        assert main(command) == 2, command
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == len(commands) and "Traceback" not in "\n".join(err), err
    assert not marker.exists()


# The `inception` command on bad folders, model files, checkpoints and flags, in this process:
# each is refused before any training with exit status 2 and one line on stderr. The folders and
# run directories are made here, a few files each, so none of these needs Fashion-MNIST.


def _tiny_folder(root: Path, change: Callable[[Path], object] = lambda root: None) -> Path:
    """train/ and val/ with two classes of three 28 px PNGs each (six training images, fewer
    than a default batch), then `change(root)`."""
    for split in ("train", "val"):
        for cls in ("bag", "trouser"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("L", (28, 28), 40 * i).save(folder / f"{i}.png")
    change(root)
    return root


def _stopped_run(root: Path, truncated: bool = False) -> Path:
    """A run directory as a run stopped after a checkpoint leaves it, without training:
    `config.json`, a `metrics.csv`, and `checkpoints/last.pt` holding the default recipe's
    config; `truncated`: that checkpoint and `previous.pt` both cut in half, as a crash during
    their saves would leave them."""
    cfg = get_recipe("fashion-mnist").to_dict()
    (root / "checkpoints").mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"train": cfg, "data": "fashion-mnist"}))
    (root / "metrics.csv").write_text("epoch\n1\n")
    last = root / "checkpoints" / "last.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "train_config": cfg}, last)
    if truncated:
        blob = last.read_bytes()
        for name in ("last.pt", "previous.pt"):
            (root / "checkpoints" / name).write_bytes(blob[: len(blob) // 2])
    return root


def _file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _folder_with_a_file(path: Path) -> Path:
    path.mkdir()
    (path / "precious.txt").write_text("keep me")
    return path


def _wrong_state_dict(path: Path) -> Path:
    torch.save({"fc.weight": torch.zeros(3, 7), "conv1.conv.weight": torch.zeros(1)}, path)
    return path


# (what, argv made in a temporary folder t, what the error line says). `--threads 2`: without it
# `train` may add a line saying other processes keep cores busy.
_BAD_COMMANDS: list[tuple[str, Callable[[Path], list[str]], str]] = [
    ("an empty class folder",
     lambda t: ["train", str(_tiny_folder(t / "d", lambda r: (r / "train" / "coat").mkdir())),
                "--out", str(t / "run"), "--threads", "2"],
     "class folder(s) with no images: coat"),
    ("train/ and val/ with different classes",
     lambda t: ["train", str(_tiny_folder(t / "d", lambda r: shutil.rmtree(r / "val" / "bag"))),
                "--out", str(t / "run"), "--threads", "2"],
     "train/ and val/ have different classes"),
    ("a folder with no images at all",
     lambda t: ["train", str(_tiny_folder(t / "d", lambda r: [p.unlink()
                                                              for p in r.rglob("*.png")])),
                "--out", str(t / "run"), "--threads", "2"],
     "class folder(s) with no images: bag, trouser"),
    ("no train/ folder",
     lambda t: ["train", str(_tiny_folder(t / "d", lambda r: shutil.rmtree(r / "train"))),
                "--out", str(t / "run"), "--threads", "2"],
     "train: no such folder"),
    ("DATA that is neither fashion-mnist nor a folder",
     lambda t: ["train", str(t / "nowhere"), "--threads", "2"],
     "not 'fashion-mnist' and not a folder"),
    ("--batch-size larger than the training set",
     lambda t: ["train", str(_tiny_folder(t / "d")), "--batch-size", "256", "--out",
                str(t / "run"), "--threads", "2"],
     "--batch-size 256 is larger than the 6 training images"),
    ("an --out that cannot be created",
     lambda t: ["train", str(_tiny_folder(t / "d")), "--batch-size", "4", "--out",
                str(_file(t / "a-file", "") / "run"), "--threads", "2"],
     "cannot write there"),
    ("an --out that already holds something",
     lambda t: ["train", "--out", str(_folder_with_a_file(t / "run")), "--threads", "2"],
     "already exists and is not empty"),
    ("--init with a state dict that does not fit",
     lambda t: ["train", str(_tiny_folder(t / "d")), "--init",
                f"torchvision:{_wrong_state_dict(t / 'wrong.pth')}", "--batch-size", "4",
                "--out", str(t / "run"), "--threads", "2"],
     "conv1.bn.weight is missing; it is not a torchvision googlenet state dict"),
    ("a truncated checkpoint (--resume)",
     lambda t: ["train", "--resume", "--out",
                str(_stopped_run(t / "run", truncated=True))],
     "not a loadable checkpoint"),
    ("--resume with a flag that differs from the run's config",
     lambda t: ["train", "--resume", "--out", str(_stopped_run(t / "run")), "--lr", "0.5"],
     "the flags differ from the run's saved config in lr"),
    ("--epochs 0", lambda t: ["train", "--epochs", "0"],
     "--epochs must be an integer from 1 to 100000; got 0"),
    ("--epochs -3", lambda t: ["train", "--epochs", "-3"],
     "--epochs must be an integer from 1 to 100000; got -3"),
    ("an unknown key in --config",
     lambda t: ["train", "--config", str(_file(t / "unknown.yaml", "epochz: 3\n"))],
     "unknown config key(s): epochz"),
    ("a wrong type in --config",
     lambda t: ["train", "--config", str(_file(t / "bad.toml", "epochs = 'ten'\n"))],
     "epochs must be of type int"),
    ("invalid YAML in --config",
     lambda t: ["train", "--config", str(_file(t / "broken.yaml", "epochs: [1, 2\n"))],
     "not valid YAML"),
]


@pytest.mark.parametrize("make_argv, message", [pytest.param(make, message, id=what)
                                                for what, make, message in _BAD_COMMANDS])
def test_a_bad_command_is_refused_in_one_line(tmp_path, make_argv, message, capsys):
    argv = make_argv(tmp_path)
    capsys.readouterr()  # what building the inputs printed, if anything
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"inception {argv[0]}: error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err


def test_a_truncated_model_file_is_refused_in_one_line(tmp_path, fashion_model, capsys):
    model_dir = tmp_path / "model"
    shutil.copytree(fashion_model, model_dir)
    blob = (model_dir / "model.safetensors").read_bytes()
    (model_dir / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    assert main(["eval", str(model_dir), "--threads", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("inception eval: error: ") and err.count("\n") == 1, err
    assert "model.safetensors: not a readable safetensors file" in err


@pytest.mark.parametrize("argv, message", [
    (["eval", "runs/x", "--crops", "5"], "argument --crops: invalid choice: 5"),
    (["train", "--recipe", "imagenet-in-a-minute"], "'imagenet-in-a-minute'"),
])
def test_a_value_outside_a_flags_choices_is_refused_without_traceback(argv, message, capsys):
    """A flag with a fixed set of values: argparse refuses the others (its usage, then one error
    line, SystemExit 2), or the command does (one line, exit status 2)."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err, err
    assert lines[-1].startswith(f"inception {argv[0]}: error: ") and message in lines[-1]
    assert all(line.startswith(("usage: ", " ")) for line in lines[:-1]), err
