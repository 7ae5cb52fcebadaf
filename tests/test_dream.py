"""DeepDream (`inception.dream`, `inception dream`): the dreamt image excites its layer more than
the original, comes out the same for a seed and at the image's size, the command writes its PNG
on a model imported from Caffe, and bad layers and images are refused in one line."""

import matplotlib.cbook
import pytest
import torch
from PIL import Image
from test_caffe import caffemodel, random_paper_model

import inception
from inception.cli import main
from inception.dream import dream, layer_norm, pyramid, read_pixels
from inception.visualize import target_module

PHOTO = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
LAYERS = "conv1, pool1, conv2, pool2, 3a, 3b, pool3, 4a, 4b, 4c, 4d, 4e, pool4, 5a, 5b, " \
         "avgpool, dropout, linear"


@pytest.fixture(autouse=True)
def _one_thread(_deterministic_threads):
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def photo():
    """A photograph, 96 x 112 px."""
    return Image.open(PHOTO).convert("RGB").resize((96, 112), Image.BILINEAR)


def test_dreaming_raises_the_layers_norm(fashion_run, photo):
    """With the notebook's defaults (4 octaves of 1.4, 10 steps of 1.5 levels) on the trained
    Fashion-MNIST model, 4c's activation on the dreamt image has a norm over 1.1 times the
    original's (1.17-1.98 over models trained from six seeds); the image keeps its size and
    stays in [0, 1]."""
    loaded = inception.load(fashion_run)
    original = read_pixels(loaded, photo)
    dreamt = dream(loaded, photo, "4c")
    assert dreamt.shape == (1, 112, 96) and dreamt.device.type == "cpu"
    assert dreamt.min() >= 0 and dreamt.max() <= 1
    module = target_module(loaded.model, "4c")
    assert layer_norm(loaded, module, dreamt[None]) > 1.1 * layer_norm(loaded, module, original)
    # Each step moves a pixel by 1.5 levels (0-255) on average, 40 steps in all.
    change = (dreamt - original[0].cpu()).abs().mean() * 255
    assert 3 < change <= 40 * 1.5


def test_the_same_seed_gives_the_same_bits(fashion_model, photo):
    loaded = inception.load(fashion_model)
    first = dream(loaded, photo, "4c", octaves=2, steps=3, seed=5)
    with torch.no_grad():  # a caller's no_grad() changes nothing
        assert torch.equal(first, dream(loaded, photo, "4c", octaves=2, steps=3, seed=5))
    assert not torch.equal(first, dream(loaded, photo, "4c", octaves=2, steps=3, seed=6))


def test_tensors_and_paths_dream_alike(fashion_model, tmp_path, photo):
    loaded = inception.load(fashion_model)
    gray = photo.convert("L")
    gray.save(tmp_path / "photo.png")
    from torchvision.transforms import v2

    pixels = v2.PILToTensor()(gray)
    from_path = dream(loaded, tmp_path / "photo.png", "3b", octaves=1, steps=2)
    assert torch.equal(from_path, dream(loaded, pixels, "3b", octaves=1, steps=2))
    assert torch.equal(from_path, dream(loaded, pixels / 255, "3b", octaves=1, steps=2))


def test_the_pyramid_shrinks_by_the_octave_scale():
    levels = pyramid(torch.rand(1, 3, 140, 100), 4, 1.4)
    assert [tuple(x.shape[-2:]) for x in levels] == [(140, 100), (100, 71), (71, 51), (51, 36)]


@pytest.fixture(scope="module")
def imported_dir(tmp_path_factory):
    """bvlc_googlenet's layout with random weights, through `inception import-caffe`."""
    folder = tmp_path_factory.mktemp("caffe")
    path = folder / "bvlc_googlenet.caffemodel"
    path.write_bytes(caffemodel(random_paper_model(aux=False)))
    assert main(["import-caffe", str(path), "--out", str(folder / "model")]) == 0
    return folder / "model"


def test_the_command_writes_a_png_on_a_model_imported_from_caffe(imported_dir, photo, tmp_path,
                                                                 capsys):
    photo.save(tmp_path / "photo.jpg")
    out = tmp_path / "dreams"
    assert main(["dream", str(imported_dir), str(tmp_path / "photo.jpg"), "--layer", "4c",
                 "--octaves", "2", "--steps", "2", "--out", str(out), "--threads", "1",
                 "--no-progress"]) == 0
    path = out / "photo-4c.png"
    assert capsys.readouterr().out.startswith(f"{path}: {tmp_path / 'photo.jpg'} dreamt at "
                                              "layer 4c, 96 x 112 px")
    image = Image.open(path)
    assert image.mode == "RGB" and image.size == (96, 112)


@pytest.mark.parametrize("flags, words", [
    (["--layer", "4x"], f"layer '4x': not a layer of this model; the layers are {LAYERS}"),
    (["--octaves", "20", "--octave-scale", "4"],
     "the smallest of 20 octaves, 1 x 1 px: too small for the model to reach layer 4c"),
    (["--octave-scale", "0.5"], "--octave-scale must be"),
], ids=["layer", "octaves", "octave-scale"])
def test_bad_layers_and_settings_are_one_line(flags, words, fashion_model, photo, tmp_path,
                                              capsys):
    photo.save(tmp_path / "photo.png")
    argv = ["dream", str(fashion_model), str(tmp_path / "photo.png"), "--threads", "1",
            "--out", str(tmp_path / "out"), *flags]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"inception dream: error: {words}")
    assert not list(tmp_path.rglob("*-*.png"))


def test_an_unreadable_image_is_one_line_naming_it(fashion_model, tmp_path, capsys):
    (tmp_path / "notes.png").write_text("not an image")
    assert main(["dream", str(fashion_model), str(tmp_path / "notes.png"), "--out",
                 str(tmp_path / "out"), "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"inception dream: error: {tmp_path / 'notes.png'}: not an image")
    assert "\n" not in err
