"""Bad inputs get clear errors or are skipped; a crash never leaves a run unresumable."""

import io
import json
import shutil

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from inception import data as data_lib
from inception.config import ConfigError
from inception.recipes import get_recipe
from inception.train import RunError, TrainConfig, train
from inception.train.checkpoint import load_latest_checkpoint


def _jpeg_bytes(size=(40, 30), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 128).save(buf, "JPEG")
    return buf.getvalue()


BAD_FILES = {
    "truncated.jpg": lambda: _jpeg_bytes()[:200],
    "corrupt.png": lambda: b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
    "empty.jpg": lambda: b"",
    "text.png": lambda: b"not an image at all\n" * 10,
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_undecodable_files_raise_image_error_naming_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name]())
    with pytest.raises(data_lib.ImageError, match=name):
        data_lib.load_image(path)


def test_awkward_but_valid_images_decode(tmp_path):
    """CMYK, 16-bit, palette with transparency, LA, EXIF-rotated, 1x1 pixel."""
    files = {}
    Image.new("CMYK", (20, 10), (0, 255, 0, 0)).save(tmp_path / "cmyk.jpg")
    files["cmyk.jpg"] = (20, 10)
    Image.new("I;16", (7, 9), 40000).save(tmp_path / "deep.png")
    files["deep.png"] = (7, 9)
    p = Image.new("P", (5, 6))
    p.info["transparency"] = 0
    p.save(tmp_path / "palette.png", transparency=0)
    files["palette.png"] = (5, 6)
    Image.new("LA", (3, 4), (10, 0)).save(tmp_path / "la.png")
    files["la.png"] = (3, 4)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.new("RGB", (30, 10), 200).save(tmp_path / "rotated.jpg", exif=exif)
    files["rotated.jpg"] = (10, 30)
    Image.new("RGB", (1, 1), 5).save(tmp_path / "dot.png")
    files["dot.png"] = (1, 1)
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
    assert skipped["count"] == 5
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


def test_a_pickle_with_a_payload_is_refused_by_every_command(tmp_path, fashion_run, image_folder,
                                                             capsys):
    from inception.cli import main

    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"fc.weight": _Payload(marker), "format": 2}, evil)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    shutil.copy(evil, model_dir / "model.safetensors")
    shutil.copy(fashion_run / "model.json", model_dir / "model.json")
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(fashion_run / "config.json", run_dir / "config.json")
    shutil.copy(evil, run_dir / "checkpoints" / "last.pt")
    image = next((image_folder / "val" / "bag").iterdir())
    commands = [
        ["eval", str(model_dir)], ["eval", str(evil)],
        ["predict", str(model_dir), str(image)],
        ["export", str(model_dir), "--out", str(tmp_path / "x.onnx")],
        ["train", str(image_folder), "--init", f"torchvision:{evil}", "--epochs", "1",
         "--out", str(tmp_path / "init")],
        ["train", "--resume", "--out", str(run_dir)],
    ]
    for command in commands:
        assert main(command) == 2, command
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == len(commands) and "Traceback" not in "\n".join(err)
    assert not marker.exists()
