import json

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

import inception
from inception.cli import main
from inception.evaluation import (
    Crop,
    crop_boxes,
    evaluate,
    extract_crops,
    predict_probabilities,
    resized_size,
)


@pytest.mark.parametrize("width,height", [(500, 375), (375, 500)])
def test_144_crop_geometry(width, height):
    """4 scales x 3 squares (left/centre/right, or top/centre/bottom for portrait) x (4 corners,
    centre, whole square) x 2 mirrors."""
    boxes = crop_boxes(width, height, 144, 224)
    assert len(boxes) == 144 and len(set(boxes)) == 144
    expected = set()
    for s in (256, 288, 320, 352):
        long = int(s * 500 / 375)
        assert resized_size(width, height, s) == ((long, s) if width > height else (s, long))
        for o in (0, round((long - s) / 2), long - s):
            sx, sy = (o, 0) if width > height else (0, o)
            m = s - 224
            views = [(sx, sy, 224), (sx + m, sy, 224), (sx, sy + m, 224), (sx + m, sy + m, 224),
                     (sx + m // 2, sy + m // 2, 224), (sx, sy, s)]
            for left, top, side in views:
                for flip in (False, True):
                    expected.add(Crop(s, left, top, side, side, flip))
    assert set(boxes) == expected


@pytest.mark.parametrize("width,height", [(300, 200), (200, 300)])
def test_10_crops_are_torchvisions_ten_crop(width, height):
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
    boxes = crop_boxes(width, height, 10, 224)
    assert len(boxes) == 10 and sum(c.flip for c in boxes) == 5
    ours = extract_crops(image, boxes, 224)
    theirs = TF.ten_crop(TF.resize(image, 256, antialias=True), 224)
    assert torch.equal(ours[:5], torch.stack(theirs[:5]))
    # ten_crop mirrors the image, then crops: its mirrored top-left is our mirrored top-right.
    assert torch.equal(ours[5:], torch.stack([theirs[i] for i in (6, 5, 8, 7, 9)]))


def test_144_crops_cut_the_boxes_they_name():
    image = torch.randint(0, 256, (3, 240, 320), dtype=torch.uint8)
    boxes = crop_boxes(320, 240, 144, 224)
    crops = extract_crops(image, boxes, 224)
    assert crops.shape == (144, 3, 224, 224)
    for c, crop in zip(boxes, crops, strict=True):
        w, h = resized_size(320, 240, c.scale)
        region = TF.resize(image, [h, w], antialias=True)[:, c.top:c.top + c.height,
                                                          c.left:c.left + c.width]
        if c.width != 224:
            region = TF.resize(region, [224, 224], antialias=True)
        assert torch.equal(crop, region.flip(-1) if c.flip else region)


def test_crop_scheme_scales_with_the_models_resize():
    assert {c.scale for c in crop_boxes(300, 400, 144, 224, resize=256)} == {256, 288, 320, 352}
    assert {c.scale for c in crop_boxes(300, 400, 144, 224)} == {256, 288, 320, 352}
    assert {c.scale for c in crop_boxes(28, 28, 144, 28, resize=28)} == {28, 32, 35, 39}
    assert {c.scale for c in crop_boxes(40, 40, 144, 32, resize=37)} == {37, 42, 46, 51}
    ten = crop_boxes(28, 28, 10, 28, resize=28)
    assert {(c.left, c.top, c.flip) for c in ten} == {(0, 0, False), (0, 0, True)}
    assert crop_boxes(28, 28, 1, 28, resize=28)[0] == Crop(28, 0, 0, 28, 28)
    with pytest.raises(ValueError, match="--crops"):
        crop_boxes(28, 28, 5, 28)


def test_one_crop_eval_equals_a_plain_forward(fashion_model, fashion_mnist):
    loaded = inception.load(fashion_model)
    result = evaluate([loaded], "fashion-mnist", crops=1, subset=300)
    _, test = fashion_mnist
    with torch.no_grad():
        logits = loaded.model(loaded.normalize(test.images[:300]))
    assert result.top1 == pytest.approx(
        100 * (logits.argmax(1) == test.labels[:300]).float().mean().item())
    assert result.loss == pytest.approx(
        torch.nn.functional.cross_entropy(logits, test.labels[:300]).item(), rel=1e-5)
    assert (result.split, result.images, result.cost) == ("test", 300, 1)
    assert result.precision == "fp32"  # a model directory that records no training precision
    assert result.confusion.sum() == 300


def test_ensemble_averages_softmax_over_models():
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = inception.googlenet(num_classes=4, stem="small", image_size=28, in_chans=1,
                                  norm="bn", width=0.25, aux_logits=False).eval()
        preprocessing = {"crop": 28, "resize": 28, "mean": [0.5], "std": [0.25]}
        models.append(inception.LoadedModel(net, preprocessing, list("abcd"), path=None))
    views = torch.randn(5, 3, 1, 28, 28)
    with torch.no_grad():
        expected = sum(m.model(views.flatten(0, 1)).softmax(1).view(5, 3, 4).mean(1)
                       for m in models) / 2
    assert torch.allclose(predict_probabilities(models, [views, views]), expected, atol=1e-6)


@pytest.mark.slow
def test_cli_eval_10_crops_and_an_ensemble(fashion_run, tmp_path, capsys):
    assert main(["eval", str(fashion_run), "--crops", "10", "--subset", "200",
                 "--ensemble", str(fashion_run / "model.safetensors"), "--out", str(tmp_path),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["crops"] == 10 and result["models"] == 2 and result["cost"] == 20
    assert result["top1"] > 50 and len(result["per_class_top1"]) == 10
    assert (tmp_path / "eval-10crop-2models-subset200.png").exists()
    assert (tmp_path / "eval-10crop-2models-subset200.json").exists()


def test_cli_eval_on_a_folder_with_144_crops(folder_run, image_folder, tmp_path, capsys):
    """The command's 144-crop figures are the softmax averaged over each image's 144 crops,
    recomputed here by hand with the plain model."""
    from torchvision.transforms import v2

    from inception import data as data_lib
    from inception.evaluation import largest_scale

    assert main(["eval", str(folder_run), "--crops", "144", "--subset", "4", "--out",
                 str(tmp_path), "--json", "--precision", "fp32"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["crops"], result["cost"], result["images"]) == (144, 144, 4)
    assert (tmp_path / "eval-144crop-subset4-fp32.png").exists()  # the run trained in bf16
    loaded = inception.load(folder_run)
    _, val_dir, classes = data_lib.image_folder_splits(image_folder)
    folder = data_lib.ImageFolderDataset(val_dir, classes, v2.PILToTensor(), loaded.channels,
                                         min_side=largest_scale([loaded]))
    probs, labels = [], []
    for i in range(4):
        image, label = folder[i]
        boxes = crop_boxes(image.shape[-1], image.shape[-2], 144, loaded.image_size,
                           resize=loaded.preprocessing.resize)
        views = loaded.normalize(extract_crops(image, boxes, loaded.image_size))
        with torch.no_grad():
            probs.append(loaded.model(views).softmax(1).mean(0))
        labels.append(label)
    probs, labels = torch.stack(probs), torch.tensor(labels)
    assert result["top1"] == pytest.approx(100 * (probs.argmax(1) == labels).float().mean().item())
    nll = -probs.gather(1, labels[:, None]).log().mean().item()
    assert result["loss"] == pytest.approx(nll, rel=1e-3)
    assert sum(map(sum, result["confusion"])) == 4


def test_cli_predict(folder_run, image_folder, capsys):
    images = sorted((image_folder / "val" / "trouser").iterdir())[:3]
    assert main(["predict", str(folder_run), *map(str, images), "--topk", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == 3 and all(len(r["predictions"]) == 2 for r in out)
    assert {p["class"] for r in out for p in r["predictions"]} <= {"bag", "sneaker", "trouser"}
    # The top 2 of 3 probabilities: at least 2/3 of the mass, at most all of it, in order.
    for r in out:
        probs = [p["probability"] for p in r["predictions"]]
        assert 2 / 3 - 1e-6 <= sum(probs) <= 1 + 1e-6 and probs == sorted(probs, reverse=True)
    # The library does what the CLI does, and the loaded model is callable on a batch.
    import inception

    model = inception.load(folder_run)
    assert inception.predict(model, images, topk=2) == \
        [{**r, "image": str(path)} for r, path in zip(out, images, strict=True)]
    x = model.normalize(torch.randint(0, 256, (2, 3, model.image_size, model.image_size),
                                      dtype=torch.uint8))
    with torch.no_grad():
        assert torch.equal(model(x), model.model(x))


def test_cli_model_errors_are_one_line(tmp_path, fashion_model, capsys):
    broken = tmp_path / "model.safetensors"
    broken.write_bytes((fashion_model / "model.safetensors").read_bytes()[:1000])
    (tmp_path / "model.json").write_text((fashion_model / "model.json").read_text())
    assert main(["eval", str(tmp_path)]) == 2
    assert main(["predict", str(tmp_path / "nothing"), "x.png"]) == 2
    # An unreadable image is reported and fails the command (1), not a usage error (2).
    assert main(["predict", str(fashion_model), str(tmp_path / "model.json")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "Traceback" not in "".join(err)
    assert "truncated" in err[0] and "does not exist" in err[1] and "not an image" in err[2]


def test_the_confusion_plot_counts_predictions_of_absent_classes_as_other(tmp_path, monkeypatch):
    """A model with more classes than the data (ImageNet weights on two of its classes): the
    plot keeps the data's classes and sums the other predictions in a last column."""
    from inception.evaluation import EvalResult, save_confusion

    seen = {}

    def plot(path, matrix, classes, title, columns=None):
        seen.update(matrix=matrix.tolist(), classes=classes, columns=columns, title=title)
        return path

    monkeypatch.setattr("inception.plots.plot_confusion", plot)
    confusion = torch.tensor([[3, 0, 1], [1, 2, 0], [0, 0, 0]])
    result = EvalResult.from_totals("val", (1.0, 7, confusion, 7), ("a", "b", "c"))
    save_confusion(tmp_path / "c.png", result)
    assert seen == {"matrix": [[3, 0, 1], [1, 2, 0]], "classes": ["a", "b"],
                    "columns": ["a", "b", "other"],
                    "title": "confusion matrix (val, 1 model(s) x 1 crop(s))"}


def test_a_model_is_evaluated_in_the_precision_it_was_trained_in(fashion_model, tmp_path):
    """`model.json`'s "precision"; for run directories written before it was recorded there,
    the run's `config.json`; else (imported weights, models built in code) fp32."""
    import shutil

    from inception.evaluation import trained_precision

    model = tmp_path / "model"
    shutil.copytree(fashion_model, model)
    assert trained_precision(inception.load(model)) == "fp32"
    (model / "config.json").write_text(json.dumps({"train": {"precision": "bf16"}}))
    assert trained_precision(inception.load(model)) == "bf16"
    meta = json.loads((model / "model.json").read_text())
    (model / "model.json").write_text(json.dumps({**meta, "precision": "fp32"}))
    loaded = inception.load(model)
    assert trained_precision(loaded) == "fp32"
    assert evaluate([loaded], "fashion-mnist", subset=8, precision="bf16").precision == "bf16"
    with pytest.raises(ValueError, match="--precision must be one of fp32, bf16"):
        evaluate([loaded], "fashion-mnist", subset=8, precision="fp16")


def test_save_result_writes_the_json_and_the_confusion_matrix(fashion_model, tmp_path):
    from inception.evaluation import format_result, save_result

    result = evaluate([inception.load(fashion_model)], "fashion-mnist", subset=20)
    written = save_result(result, tmp_path / "out" / "eval-1crop.json")
    assert json.loads((tmp_path / "out" / "eval-1crop.json").read_text()) == written
    assert written == {**result.to_json(), "confusion_png": str(tmp_path / "out" /
                                                                "eval-1crop.png"),
                       "provenance": written["provenance"]}  # test_provenance.py checks it
    assert (tmp_path / "out" / "eval-1crop.png").stat().st_size > 0
    assert "| test | 1 | 1 | 1 |" in format_result(result)


def _eval_args(small_fashion_mnist_dir, *flags):
    return ["--data-dir", small_fashion_mnist_dir, "--threads", "1", "--json", *flags]


def test_eval_on_a_subset_keeps_the_full_evaluation_and_says_what_it_covers(
        fashion_model, small_fashion_mnist_dir, tmp_path, capsys):
    """`eval RUN --crops 10 --subset 10` writes a file named for its subset beside the full
    10-crop evaluation, which stays as it was; the JSON records the data, subset, crops,
    precision and models it covers."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(fashion_model, model)
    full = model / "eval-10crop.json"  # a full evaluation, as an older version wrote it
    full.write_text(json.dumps({"split": "test", "images": 10000, "models": 1, "crops": 10,
                                "precision": "fp32", "top1": 91.5}))
    before = full.read_bytes()
    assert main(["eval", str(model), "--crops", "10", "--subset", "10",
                 *_eval_args(small_fashion_mnist_dir)]) == 0
    assert full.read_bytes() == before
    written = json.loads((model / "eval-10crop-subset10.json").read_text())
    assert (model / "eval-10crop-subset10.png").exists()
    assert {k: written[k] for k in ("data", "subset", "crops", "precision", "model_paths",
                                    "images")} == {
        "data": "fashion-mnist", "subset": 10, "crops": 10, "precision": "fp32",
        "model_paths": [str(model / "model.safetensors")], "images": 10}


def test_a_different_evaluation_does_not_replace_a_result_without_force(
        fashion_model, small_fashion_mnist_dir, tmp_path, capsys):
    """The same evaluation again may rewrite its file; another one that would land on the same
    file (other models, into one --out) is refused in one line until --force."""
    import shutil

    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "results"
    for m in (a, b):
        shutil.copytree(fashion_model, m)
    flags = _eval_args(small_fashion_mnist_dir, "--subset", "8", "--out", str(out))
    path = out / "eval-1crop-subset8.json"
    assert main(["eval", str(a), *flags]) == 0
    assert main(["eval", str(a), *flags]) == 0
    kept = path.read_bytes()
    capsys.readouterr()
    assert main(["eval", str(b), *flags]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"{path} holds other results (model_paths" in err and "--force" in err
    assert path.read_bytes() == kept
    assert main(["eval", str(b), *flags, "--force"]) == 0
    assert json.loads(path.read_text())["model_paths"] == [str(b / "model.safetensors")]


def test_a_results_file_is_replaced_only_by_results_of_the_same_identity(tmp_path):
    """As far as the file records it: a file written before the scope was recorded is compared
    on what it has (crops, precision, images, ...); a file that is no JSON object is kept."""
    from inception.files import ReplaceError, check_replace

    path = tmp_path / "eval-10crop.json"
    path.write_text(json.dumps({"images": 10000, "models": 1, "crops": 10, "precision": "fp32"}))
    scope = {"data": "fashion-mnist", "subset": None, "crops": 10, "precision": "fp32",
             "model_paths": ["/m/model.safetensors"]}
    check_replace(path, scope)
    check_replace(path, {**scope, "images": 10000})
    with pytest.raises(ReplaceError, match=r"images 10000, these 10\); pass --force"):
        check_replace(path, {**scope, "images": 10})
    with pytest.raises(ReplaceError, match="precision fp32, these bf16"):
        check_replace(path, {**scope, "precision": "bf16"})
    path.write_text("notes")
    with pytest.raises(ReplaceError, match="holds no results; pass --force"):
        check_replace(path, scope)
    check_replace(tmp_path / "nothing.json", scope)
