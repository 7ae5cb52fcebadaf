"""`inception.explain` and `inception predict --explain`: the class activation map (CAM) of the
average-pool head is an exact decomposition of the logit (Zhou et al. 2016), it follows the
object, Grad-CAM (Captum's `LayerGradCam`, Selvaraju et al. 2017) explains the FC and aux heads,
and the command writes one PNG per image, on a trained model and on an imported Caffe model
alike, refusing a head or layer the model does not have in one line that lists the valid ones."""

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_caffe import PHOTO, caffemodel, random_paper_model

import inception
from inception.cli import main
from inception.explain import ExplainError, check_target, class_activation_maps, grad_cam
from inception.preprocessing import Preprocessing
from inception.weights import LoadedModel


@pytest.fixture(autouse=True)
def _one_thread(_deterministic_threads):
    """One torch thread: small forward passes gain nothing from two on a busy machine."""
    torch.set_num_threads(1)


def loaded(model: inception.GoogLeNet, mean: float = 0.5, std: float = 0.25) -> LoadedModel:
    """`model` (1 channel, square input) as `inception.load` gives a model, in eval mode."""
    side = model.config.image_size
    preprocessing = Preprocessing(image_size=side, resize=side, crop=side, mean=(mean,),
                                  std=(std,), channels=1)
    classes = [f"class{i}" for i in range(model.config.num_classes)]
    return LoadedModel(model.eval(), preprocessing, classes, Path("memory"))


def small_model(seed: int = 0, **overrides) -> inception.GoogLeNet:
    """A small random GoogLeNet (32 px, 1 channel, 5 classes) whose classifiers have random
    biases too: a CAM that forgot the bias could not pass for one that subtracts it."""
    torch.manual_seed(seed)
    config = dict(num_classes=5, in_chans=1, stem="small", image_size=32, width=0.25,
                  aux_pool="adaptive")
    model = inception.googlenet(**{**config, **overrides})
    with torch.no_grad():
        for fc in model.classifiers():
            fc.bias.normal_(0, 1)
    return model.eval()


def images(n: int = 3, side: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, side, side), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def assert_cam_is_the_logit_decomposition(model: LoadedModel, pixels: torch.Tensor) -> None:
    """mean_hw CAM_c = logit_c - b_c for every class (the batch function) and for the top
    classes `inception.explain` returns, in float32 within 1e-5."""
    bias = model.model.layers["linear"].bias.detach()
    cams, logits = class_activation_maps(model.model, model.normalize(pixels))
    assert cams.shape[:2] == logits.shape and cams.dtype == torch.float32
    torch.testing.assert_close(cams.mean((-2, -1)), logits - bias, rtol=0, atol=1e-5)
    for e in inception.explain(model, pixels, topk=3):
        assert e.method == "cam" and e.layer == "5b" and e.cams.shape[0] == 3
        expected = torch.tensor(e.logits) - bias[e.indices]
        torch.testing.assert_close(e.cams.mean((-2, -1)), expected, rtol=0, atol=1e-5)
        assert e.scores == sorted(e.scores, reverse=True)


# -- the CAM of the average-pool head -------------------------------------------------------------

def test_the_cam_averages_to_the_logit_minus_the_bias_on_a_random_model():
    model = loaded(small_model())
    assert_cam_is_the_logit_decomposition(model, images())


def test_the_cam_averages_to_the_logit_minus_the_bias_on_a_trained_model(fashion_run,
                                                                         fashion_mnist):
    model = inception.load(fashion_run)
    pixels = fashion_mnist[1].images[:4]
    assert_cam_is_the_logit_decomposition(model, pixels)
    explained = inception.explain(model, pixels, topk=3)
    predicted = inception.predict(model, pixels, topk=3, precision="fp32")
    assert [e.classes for e in explained] == [[p["class"] for p in r["predictions"]]
                                              for r in predicted]


def square_detector(seed: int) -> LoadedModel:
    """A GoogLeNet without training whose class 0 reads brightness, so its CAM must follow a
    bright square on black. Every convolution's weights are made non-negative and scaled to sum
    to 1 per output channel, biases zero, no normalisation layer, and the input is not shifted
    (mean 0, std 1): each feature of 5b is then a weighted average of the pixels its receptive
    field covers, 0 on black and largest where the square is. Class 0 reads all of 5b's channels
    (weights 1), class 1 none (weights 0), so class 0 is the top class of any non-black image."""
    torch.manual_seed(seed)
    model = inception.googlenet(num_classes=2, in_chans=1, stem="small", image_size=64,
                                width=0.25, norm="none", aux_logits=False)
    with torch.no_grad():
        for conv in (m for m in model.modules() if isinstance(m, torch.nn.Conv2d)):
            weight = conv.weight.abs()
            conv.weight.copy_(weight / weight.sum((1, 2, 3), keepdim=True))
            conv.bias.zero_()
        linear = model.layers["linear"]
        linear.weight.zero_()
        linear.weight[0] = 1
        linear.bias.zero_()
    return loaded(model, mean=0.0, std=1.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_cam_peak_moves_with_the_object(seed):
    model = square_detector(seed)
    for top, left in ((4, 4), (44, 44), (4, 44), (44, 4), (24, 24)):
        pixels = torch.zeros(1, 64, 64, dtype=torch.uint8)
        pixels[:, top:top + 16, left:left + 16] = 255
        (e,) = inception.explain(model, pixels, topk=1)
        assert e.classes == ["class0"] and e.maps.shape == (1, 64, 64)
        row, col = divmod(int(e.maps[0].argmax()), 64)
        assert top <= row < top + 16 and left <= col < left + 16, (top, left, row, col)
        side = e.cams.shape[-1]  # 8: the peak of the 5b map is in the same part of the image
        cam_row, cam_col = divmod(int(e.cams[0].argmax()), side)
        assert (cam_row < side // 2, cam_col < side // 2) == (row < 32, col < 32)
    (black,) = inception.explain(model, torch.zeros(1, 64, 64, dtype=torch.uint8), topk=1)
    assert black.cams.abs().max() == 0  # nothing bright, nothing seen


# -- Grad-CAM: the FC head and the aux heads ------------------------------------------------------

def test_grad_cam_on_the_average_pool_head_is_the_relu_of_the_cam():
    """Selvaraju et al. note that Grad-CAM generalises CAM: on a global average pool the mean
    gradient of logit c over 5b's positions is W_c / (h w), so Grad-CAM = ReLU(CAM) / (h w). It
    checks that Captum is given the right layer, target and forward function."""
    model = loaded(small_model())
    x = model.normalize(images(1)).expand(5, -1, -1, -1)  # one image, each of the 5 classes
    cams, _ = class_activation_maps(model.model, x)
    targets = torch.arange(5)
    maps = grad_cam(model.model, x, targets, "main", "5b")
    expected = cams[targets, targets].clamp(min=0) / cams[0, 0].numel()
    assert maps.shape == expected.shape and expected.max() > 0 and (expected == 0).any()
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)
    (e,) = inception.explain(model, images(1), topk=2, method="grad-cam")
    assert e.method == "grad-cam" and (e.cams >= 0).all()


def test_grad_cam_explains_the_fc_head_and_the_aux_heads_at_the_images_size(monkeypatch):
    fc = loaded(small_model(head="fc", aux_logits=False))
    (e,) = inception.explain(fc, images(1), topk=3)
    assert e.method == "grad-cam" and e.maps.shape == (3, 32, 32) and e.pixels.shape == (1, 32, 32)
    assert e.maps.abs().sum() > 0
    module = importlib.import_module("inception.explain")  # `inception.explain` is the function
    monkeypatch.setattr(module, "GRAD_CAM_BATCH", 2)  # 3 classes in 2 passes
    (chunked,) = inception.explain(fc, images(1), topk=3)
    torch.testing.assert_close(chunked.cams, e.cams)
    with pytest.raises(ExplainError, match="average pool"):
        inception.explain(fc, images(1), method="cam")
    model = loaded(small_model())
    with torch.no_grad():
        aux = model.model.forward_aux(model.normalize(images(2))).aux
    for head, logits in zip(("aux-4a", "aux-4d"), aux, strict=True):
        top = logits.softmax(1).topk(2)
        for i, e in enumerate(inception.explain(model, images(2), topk=2, head=head)):
            assert (e.method, e.head, e.layer) == ("grad-cam", head, head[-2:])
            assert e.maps.shape == (2, 32, 32) and torch.isfinite(e.maps).all()
            assert e.indices == top.indices[i].tolist()  # the aux head's classes, not main's
            torch.testing.assert_close(torch.tensor(e.scores), top.values[i])
    (e,) = inception.explain(model, images(1), topk=1, layer="3b")
    assert e.method == "grad-cam" and e.maps.shape == (1, 32, 32)


def test_bad_heads_layers_and_methods_name_the_valid_ones():
    model = small_model()
    with pytest.raises(ExplainError, match=r"choose one of main, aux-4a, aux-4d$"):
        check_target(model, "aux-4b")
    with pytest.raises(ExplainError, match=r"'4e': the aux-4d head reads only conv1, .*, 4d$"):
        check_target(model, "aux-4d", "4e")
    with pytest.raises(ExplainError, match="choose one of auto, cam, grad-cam"):
        check_target(model, method="lime")
    assert check_target(model.drop_aux()) == ("5b", "cam")
    with pytest.raises(ExplainError, match=r"choose one of main$"):
        check_target(model, "aux-4a")


# -- inception predict --explain ------------------------------------------------------------------

@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(0)
    for name in ("bag.png", "shirt.jpg"):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / name)
    return [folder / "bag.png", folder / "shirt.jpg"]


def test_predict_explain_writes_one_png_per_image(fashion_model, pictures, tmp_path, capsys):
    out = tmp_path / "maps"
    argv = ["predict", str(fashion_model), *map(str, pictures), str(tmp_path / "missing.png"),
            "--topk", "3", "--explain", str(out), "--threads", "1"]
    assert main(argv) == 1  # the missing file is reported; the others are explained
    stdout, stderr = capsys.readouterr()
    assert "missing.png: no such file" in stderr
    assert sorted(p.name for p in out.iterdir()) == ["bag-explain.png", "shirt-explain.png"]
    assert f"  explained in {out / 'bag-explain.png'}" in stdout.splitlines()
    for png in out.iterdir():
        with Image.open(png) as image:
            assert image.format == "PNG" and image.width > 3 * image.height > 300
    assert main([*argv[:-2], "--json", "--threads", "1"]) == 1
    results = json.loads(capsys.readouterr().out)
    assert [r.get("explanation") for r in results] == [str(out / "bag-explain.png"),
                                                        str(out / "shirt-explain.png"), None]
    # Explained into the images' own folder: the images stay as they were.
    before = pictures[0].read_bytes()
    assert main(["predict", str(fashion_model), str(pictures[0]), "--explain",
                 str(pictures[0].parent), "--threads", "1"]) == 0
    assert pictures[0].read_bytes() == before
    assert (pictures[0].parent / "bag-explain.png").exists()


def test_predict_explain_refuses_a_bad_head_or_layer_in_one_line(fashion_model, pictures,
                                                                 tmp_path, capsys):
    out = tmp_path / "maps"
    base = ["predict", str(fashion_model), str(pictures[0]), "--threads", "1"]
    cases = [
        (["--explain", str(out), "--explain-head", "aux-4a"],
         "--explain-head 'aux-4a': choose one of main"),
        (["--explain", str(out), "--explain-layer", "6a"],
         "--explain-layer '6a': the main head reads only conv1, pool1, conv2, pool2, 3a, 3b, "
         "pool3, 4a, 4b, 4c, 4d, 4e, pool4, 5a, 5b"),
        (["--explain-layer", "4e"], "--explain-head and --explain-layer need --explain DIR"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2
        stdout, stderr = capsys.readouterr()
        assert stderr.splitlines() == [f"inception predict: error: {message}"] and stdout == ""
    assert not out.exists()


# -- an imported Caffe model ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    """The paper model, with aux heads and random weights, through a synthetic caffemodel and
    `inception import-caffe`."""
    folder = tmp_path_factory.mktemp("caffe")
    path = folder / "bvlc_googlenet.caffemodel"
    path.write_bytes(caffemodel(random_paper_model(seed=1)))
    assert main(["import-caffe", str(path), "--out", str(folder / "model")]) == 0
    return folder / "model"


def test_predict_explain_runs_on_an_imported_caffe_model(imported, tmp_path, capsys):
    out = tmp_path / "maps"
    argv = ["predict", str(imported), str(PHOTO), "--topk", "2", "--explain", str(out),
            "--threads", "1"]
    assert main(argv) == 0
    assert [p.name for p in out.iterdir()] == [Path(PHOTO).stem + "-explain.png"]
    capsys.readouterr()
    assert main([*argv[:-2], "--explain-head", "aux-4x", "--threads", "1"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "inception predict: error: --explain-head 'aux-4x': choose one of main, aux-4a, aux-4d"]


def test_an_imported_caffe_model_is_explained_in_the_images_colours(imported):
    """Caffe's BGR order is folded into conv1: a red image goes in red and comes out red."""
    model = inception.load(imported)
    red = torch.zeros(3, 300, 240, dtype=torch.uint8)
    red[0] = 255
    (e,) = inception.explain(model, red, topk=2, head="aux-4a")
    assert e.pixels.shape == (3, 224, 224) and e.maps.shape == (2, 224, 224)
    assert (e.pixels[0] == 255).all() and (e.pixels[1:] == 0).all()
    assert e.method == "grad-cam" and e.layer == "4a"
    # The scores are the model's own on that image: `predict`'s path (whose preprocessing
    # handles the BGR fold), and a red image is not a blue one to it.
    main_head = inception.explain(model, red, topk=3)[0]
    predicted = inception.predict(model, red, topk=3, precision="fp32")[0]["predictions"]
    assert [p["class"] for p in predicted] == main_head.classes
    assert [p["probability"] for p in predicted] == pytest.approx(main_head.scores, rel=1e-4)
    blue = red.flip(0)
    assert inception.explain(model, blue, topk=3)[0].logits != pytest.approx(
        main_head.logits, rel=1e-3)
