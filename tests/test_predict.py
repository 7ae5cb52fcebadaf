"""`inception.predict` takes what a PyTorch user passes (one path or many, PIL images, uint8 or
float tensors, ranges checked) and refuses anything else by name; `inception predict` predicts
every readable file of a batch and reports each unreadable one in one line."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import inception
from inception.cli import main
from inception.predict import PredictError


@pytest.fixture(autouse=True)
def _one_thread(_deterministic_threads):
    """One torch thread: these tiny forward passes gain nothing from two, and a second thread
    on a busy core slows each of them many times over."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[Path]:
    """Two 28 x 28 grayscale images as files (PNG and JPEG), different enough to tell apart."""
    folder = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(0)
    paths = []
    for name in ("bag.png", "shirt.jpg"):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / name)
        paths.append(folder / name)
    return paths


@pytest.fixture(scope="module")
def model(fashion_model):
    return inception.load(fashion_model)


def _predictions(results):
    return [r["predictions"] for r in results]


def test_one_path_is_one_image_not_its_letters(model, pictures):
    path = pictures[0]
    expected = inception.predict(model, [path], topk=3)
    assert expected[0]["image"] == str(path) and len(expected[0]["predictions"]) == 3
    assert inception.predict(model, str(path), topk=3) == expected
    assert inception.predict(model, path, topk=3) == expected
    assert inception.predict(model, (str(p) for p in pictures), topk=3)[0] == expected[0]


def test_pil_images_and_uint8_or_float_tensors_predict_as_their_files(model, pictures):
    expected = _predictions(inception.predict(model, pictures, topk=3))
    images = [Image.open(p) for p in pictures]
    assert _predictions(inception.predict(model, images, topk=3)) == expected
    assert inception.predict(model, images[0])[0]["image"] == str(pictures[0])  # its filename
    pixels = [torch.from_numpy(np.asarray(i.convert("L")).copy())[None] for i in images]
    assert _predictions(inception.predict(model, pixels, topk=3)) == expected
    batch = torch.stack(pixels)
    assert _predictions(inception.predict(model, batch, topk=3)) == expected
    assert _predictions(inception.predict(model, batch.float() / 255, topk=3)) == expected
    assert _predictions(inception.predict(model, pixels[1], topk=3)) == expected[1:]
    assert [r["image"] for r in inception.predict(model, batch)] == ["images[0]", "images[1]"]
    assert inception.predict(model, []) == []


@pytest.mark.parametrize("images,error,words", [
    (7, TypeError, ["images:", "got int"]),
    (b"bag.jpg", TypeError, ["images:", "got bytes"]),
    (np.zeros((28, 28, 1), np.uint8), TypeError, ["images:", "torch.from_numpy"]),
    (["bag.jpg", 3], TypeError, ["images[1]:", "got int"]),
    ([torch.zeros(1, 1, 28, 28, dtype=torch.uint8)], ValueError, ["images[0]:", "C x H x W"]),
    (torch.full((1, 28, 28), 128.0), ValueError, ["images:", "[0, 1]", "[128, 128]"]),
    (torch.full((1, 28, 28), -0.5), ValueError, ["images:", "[-0.5, -0.5]"]),
    (torch.full((1, 28, 28), float("nan")), ValueError, ["images:", "nan"]),
    (torch.zeros(1, 28, 28, dtype=torch.int64), TypeError, ["images:", "torch.int64"]),
    (torch.zeros(3, 28, 28, dtype=torch.uint8), ValueError, ["images:", "1 channel", "(3, 28"]),
])
def test_anything_else_is_refused_naming_the_argument(model, images, error, words):
    with pytest.raises(error) as e:
        inception.predict(model, images)
    assert all(w in str(e.value) for w in words), str(e.value)


@pytest.mark.parametrize("kwargs", [{"topk": 0}, {"topk": -1}, {"crops": 2}, {"errors": "skip"}])
def test_bad_options_are_refused_by_name(model, pictures, kwargs):
    with pytest.raises(ValueError, match=f"^{next(iter(kwargs))} must be"):
        inception.predict(model, pictures, **kwargs)


def test_an_unreadable_file_raises_naming_it_once_or_is_reported(model, pictures, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n")
    with pytest.raises(PredictError) as e:
        inception.predict(model, [pictures[0], notes])
    assert str(e.value) == f"{notes}: not an image (cannot identify image file)"
    results = inception.predict(model, [notes, *pictures], errors="report")
    assert results[0] == {"image": str(notes),
                          "error": "not an image (cannot identify image file)"}
    assert _predictions(results[1:]) == _predictions(inception.predict(model, pictures))


def test_cli_predict_goes_on_past_unreadable_files(fashion_model, pictures, tmp_path, capsys,
                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("notes.txt").write_text("shopping list\n")
    good = [str(p) for p in pictures]
    argv = ["predict", str(fashion_model), good[0], "notes.txt", "missing.png", good[1],
            "--topk", "2", "--threads", "1"]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "inception predict: notes.txt: not an image (cannot identify image file)",
        "inception predict: missing.png: no such file"]
    assert [line for line in out.splitlines() if not line.startswith(" ")] == good
    assert main([*argv, "--json"]) == 1
    out, err = capsys.readouterr()
    results = json.loads(out)
    assert [r["image"] for r in results] == [good[0], "notes.txt", "missing.png", good[1]]
    assert [r.get("error") for r in results] == [
        None, "not an image (cannot identify image file)", "no such file", None]
    assert all(len(r["predictions"]) == 2 for r in results if "error" not in r)
    assert len(err.splitlines()) == 2
    assert main([*argv[:3], good[1], "--threads", "1"]) == 0  # all readable: success
    assert capsys.readouterr().err == ""
