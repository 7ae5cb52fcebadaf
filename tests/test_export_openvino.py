"""OpenVINO export and the exported-model runtimes (`inception.export_openvino`,
`inception.runtimes`): checked, refused when wrong, self-describing, and measured by `eval`."""

import json

import pytest
import torch

import inception
from inception import runtimes
from inception.cli import main
from inception.evaluation import evaluate
from inception.preprocessing import IMAGENET_MEAN, IMAGENET_STD

ov = pytest.importorskip("openvino", reason="the openvino extra is not installed")


def _eval_json(capsys, *argv):
    assert main(["eval", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_openvino_fp32_and_int8_of_a_run_match_pytorch_and_eval_measures_them(
        fashion_run, small_fashion_mnist_dir, tmp_path, capsys):
    fp32, int8 = tmp_path / "m.xml", tmp_path / "m-int8.xml"
    assert main(["export", str(fashion_run), str(fp32), "--format", "openvino", "--check", "300",
                 "--data-dir", small_fashion_mnist_dir, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "openvino-fp32" and report["max_abs_diff"] < 1e-4
    meta = runtimes.ov_metadata(ov.Core().read_model(str(fp32)))
    assert meta["classes"][9] == "Ankle boot" and meta["precision"] == "fp32"
    assert meta["preprocessing"]["mean"] == [0.286] and meta["model"]["width"] == 0.25

    assert main(["export", str(fashion_run), str(int8), "--format", "openvino", "--precision",
                 "int8", "--calibration", "256", "--check", "300",
                 "--data-dir", small_fashion_mnist_dir, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    ops = {op.get_type_name() for op in ov.Core().read_model(str(int8)).get_ops()}
    assert "FakeQuantize" in ops and report["calibration_images"] == 256
    assert report["accuracy"]["top1_agreement"] >= 90.0

    # eval runs the exported files themselves, each labelled with its runtime and precision.
    common = ["--data-dir", small_fashion_mnist_dir, "--out", str(tmp_path / "eval")]
    torch_result = _eval_json(capsys, str(fashion_run), "--precision", "fp32", *common)
    ov_result = _eval_json(capsys, str(fp32), *common)
    int8_result = _eval_json(capsys, str(int8), *common)
    assert ov_result["precision"] == "openvino fp32"
    assert int8_result["precision"] == "openvino int8"
    assert abs(ov_result["top1"] - torch_result["top1"]) <= 0.2  # 512 images: one image
    assert abs(int8_result["top1"] - torch_result["top1"]) <= 2.0  # a 2-epoch model
    assert ov_result["top1"] > 50  # the model was trained: not chance (10%)


def _lrn_model(tmp_path, image_size=28):
    """A model directory of the paper's network (LRN, true 5x5) at `image_size` with Fashion-
    MNIST's preprocessing and classes: random weights scaled so that the LRN layers act."""
    from inception import data as data_lib
    from inception.model import GoogLeNet
    from inception.preprocessing import Preprocessing
    from inception.weights import save_model

    config = inception.GoogLeNetConfig(num_classes=10, in_chans=1, image_size=image_size,
                                       width=0.25, stem="small", aux_logits=False)
    torch.manual_seed(0)
    state = {k: v * 4 if k.endswith("weight") else v for k, v in
             GoogLeNet(config).state_dict().items()}
    preprocessing = Preprocessing(image_size=image_size, resize=image_size, crop=image_size,
                                  mean=data_lib.FASHION_MNIST_MEAN,
                                  std=data_lib.FASHION_MNIST_STD, channels=1)
    (tmp_path / "lrn").mkdir()
    save_model(tmp_path / "lrn", config, state, preprocessing,
               list(data_lib.FASHION_MNIST_CLASSES), {"data": "fashion-mnist"})
    return tmp_path / "lrn"


def test_an_export_that_differs_from_pytorch_is_refused_and_nothing_is_written(
        tmp_path, small_fashion_mnist_dir, monkeypatch, capsys):
    """The LRN's OpenVINO form made wrong (beta 1/2 instead of 3/4): the f32 check refuses it."""
    from inception.inference import ConvLRN

    model = _lrn_model(tmp_path)
    out = tmp_path / "out" / "m.xml"
    wrong = lambda self, x: x * torch.rsqrt(self.window(x * x))  # noqa: E731
    monkeypatch.setattr(ConvLRN, "forward", wrong)
    assert main(["export", str(model), str(out), "--format", "openvino", "--check", "64",
                 "--data-dir", small_fashion_mnist_dir]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "differ from PyTorch's" in err
    assert not (out.parent.exists() and list(out.parent.iterdir()))
    monkeypatch.undo()
    assert main(["export", str(model), str(out), "--format", "openvino", "--check", "64",
                 "--data-dir", small_fashion_mnist_dir]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.bin", "m.xml"]


def test_onnx_files_run_in_onnxruntime_or_openvino_with_the_same_logits(
        fashion_model, tmp_path, small_fashion_mnist_dir):
    from inception.export import export_onnx, sample_images

    path = tmp_path / "m.onnx"
    export_onnx(inception.load(fashion_model), path, check=32, data_dir=small_fashion_mnist_dir)
    by_ort = runtimes.load_exported(path)
    by_ov = runtimes.load_exported(path, "openvino")
    x, _ = sample_images(by_ort, "eval", 20, "fashion-mnist", small_fashion_mnist_dir)
    assert by_ort.meta["runtime"] == "onnxruntime" and by_ov.meta["runtime"] == "openvino"
    assert (by_ort.model(x) - by_ov.model(x)).abs().max() < 1e-4
    # 20 images in requests of 8, the last 4 one at a time; and 3 images, all one at a time.
    assert by_ov.model(x).shape == (20, 10)
    assert (by_ov.model(x[:3]) - by_ort.model(x[:3])).abs().max() < 1e-4
    assert by_ov.model.run._single is not None  # the batch-1 compilation, not a padded request


def test_runtime_and_device_flags_that_cannot_run_the_file_are_refused(
        fashion_model, tmp_path, capsys):
    xml = tmp_path / "m.xml"
    xml.write_text("<net/>")
    for argv, words in (
            (["eval", str(fashion_model), "--runtime", "openvino"], "export it first"),
            (["eval", str(xml), "--runtime", "onnxruntime"], "runs in openvino"),
            (["eval", str(xml), "--device", "cuda"], "runs on the CPU"),
            (["eval", str(tmp_path / "none.xml")], "does not exist"),
            (["export", str(fashion_model), str(tmp_path / "m.onnx"), "--precision", "bf16"],
             "needs --format openvino"),
            (["export", str(fashion_model), str(tmp_path / "m.pt2"), "--format",
              "torch-export", "--int8"], "needs --format onnx or openvino"),
            (["export", str(fashion_model), str(tmp_path / "m.onnx"), "--format", "openvino"],
             "name it .xml"),
            (["export", str(fashion_model), str(tmp_path / "m.xml")], "pass --format openvino")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, (argv, err)


@pytest.mark.slow
def test_the_224px_paper_network_exports_in_every_precision(tmp_path, image_folder):
    """The paper's network (LRN, true 5x5) at 224 px, with the image folder's three classes:
    f32 matches PyTorch on real images; bf16 and INT8 are written with their top-1 agreement."""
    from inception.export_openvino import export_openvino

    torch.manual_seed(0)
    loaded = inception.LoadedModel(inception.googlenet(num_classes=3, aux_logits=False).eval(),
                                   {"crop": 224, "resize": 256, "mean": list(IMAGENET_MEAN),
                                    "std": list(IMAGENET_STD)},
                                   ["bag", "sneaker", "trouser"], path=tmp_path)
    for precision in ("bf16", "int8"):
        out = tmp_path / f"paper-{precision}.xml"
        report = export_openvino(loaded, out, precision, calibration=16, check=24,
                                 data=str(image_folder))
        assert report.max_abs_diff < 1e-4 * 10 and report.checked_images == 24
        assert report.accuracy["top1_agreement"] >= 50.0
        exported = runtimes.load_exported(out)
        assert exported.meta["precision"] == precision
        result = evaluate([exported], str(image_folder), subset=24)
        assert result.precision == f"openvino {precision}"


@pytest.mark.slow
def test_bench_has_openvino_rows_for_both_models_and_batch_1_latency_rows(capsys):
    assert main(["bench", "--batch-size", "2", "--image-size", "64", "--repeats", "1",
                 "--json", "--device", "cpu"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    for model in ("torchvision", "paper variant (openvino graph)"):
        for precision in ("fp32", "bf16", "int8"):
            assert rows[f"{model}, openvino {precision}"]["img_s"] > 0
        assert rows[f"{model}, openvino int8 LATENCY, batch 1"]["batch"] == 1
    assert rows["paper variant (export graph), onnxruntime int8, batch 1"]["batch"] == 1
    assert rows["paper variant (openvino graph), openvino fp32"]["peak_fraction"] > 0
