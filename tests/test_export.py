import json

import numpy as np
import onnx
import pytest
import torch

import inception
from inception import export
from inception.cli import main
from inception.preprocessing import IMAGENET_MEAN, IMAGENET_STD


@pytest.mark.slow
def test_onnx_paper_variant_matches_pytorch(tmp_path, image_folder):
    """The paper's network (LRN, true 5x5, 1000 classes) at 224 px on real images."""
    from torchvision.transforms import v2

    from inception.data import load_image

    torch.manual_seed(0)
    model = inception.googlenet(aux_logits=False).eval()
    loaded = inception.LoadedModel(model, {"crop": 224, "resize": 256,
                                           "mean": list(IMAGENET_MEAN),
                                           "std": list(IMAGENET_STD)},
                                   [str(i) for i in range(1000)], path=tmp_path)
    proto = export.to_onnx_model(loaded)
    path = tmp_path / "paper.onnx"
    onnx.save(proto, str(path))
    ops = {n.op_type for n in proto.graph.node}
    assert {"Sqrt", "Reciprocal"} <= ops  # the LocalRespNorm survived, as inference.ConvLRN
    files = sorted((image_folder / "val" / "bag").iterdir())[:4]
    tf = v2.Compose([v2.Resize(256), v2.CenterCrop(224), v2.PILToTensor()])
    x = loaded.normalize(torch.stack([tf(load_image(f)) for f in files]))
    got = export.onnx_logits(export.onnx_session(path), x)
    with torch.no_grad():
        expected = model(x)
    assert (got - expected).abs().max().item() < 1e-4
    assert export.read_onnx_metadata(path)["preprocessing"]["resize"] == 256


def test_cli_export_onnx_fp32_and_int8(fashion_run, tmp_path, capsys):
    fp32 = tmp_path / "m.onnx"
    assert main(["export", str(fashion_run), str(fp32), "--check", "500", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["max_abs_diff"] < 1e-4 and report["checked_images"] == 500
    meta = export.read_onnx_metadata(fp32)
    assert meta["classes"][9] == "Ankle boot" and meta["model"]["width"] == 0.25
    assert meta["preprocessing"]["mean"] == [0.286]
    # A dynamic batch dimension.
    session = export.onnx_session(fp32)
    for n in (1, 7):
        out = session.run(None, {"image": np.zeros((n, 1, 28, 28), np.float32)})[0]
        assert out.shape == (n, 10)

    int8 = tmp_path / "m-int8.onnx"
    assert main(["export", str(fashion_run), str(int8), "--int8", "--calibration", "256",
                 "--check", "1000", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    graph = onnx.load(str(int8)).graph
    ops = {n.op_type for n in graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    # Unsigned activations (U8S8): ONNX Runtime's x86 int8 kernels take every convolution.
    zero_points = {i.name: i.data_type for i in graph.initializer}
    activation_types = {zero_points[n.input[2]] for n in graph.node
                        if n.op_type == "QuantizeLinear" and len(n.input) > 2}
    assert activation_types == {onnx.TensorProto.UINT8}
    assert report["accuracy"]["drop"] <= 2.0  # a 2-epoch model; the trained one: BENCHMARKS.md
    assert report["speed"]["int8_img_s"] > 0 and report["speed"]["fp32_img_s"] > 0
    assert "quantization" in export.read_onnx_metadata(int8)
    # Nothing already written is overwritten without --force.
    before = int8.read_bytes()
    assert main(["export", str(fashion_run), str(int8)]) == 2
    assert int8.read_bytes() == before
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.slow
def test_torch_export_program(fashion_model, tmp_path, capsys):
    path = tmp_path / "m.pt2"
    assert main(["export", str(fashion_model), str(path), "--format", "torch-export"]) == 0
    extra = {"inception.json": ""}
    program = torch.export.load(str(path), extra_files=extra)
    meta = json.loads(extra["inception.json"])
    assert json.loads(meta["inception.classes"])[0] == "T-shirt/top"
    loaded = inception.load(fashion_model)
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(program.module()(x), loaded.model(x), atol=1e-5)


def test_export_refuses_bad_combinations(fashion_model, tmp_path, capsys):
    assert main(["export", str(fashion_model), str(tmp_path / "x"), "--format", "torch-export",
                 "--int8"]) == 2
    assert "--int8 needs --format onnx" in capsys.readouterr().err


def _tiny_loaded(tmp_path):
    torch.manual_seed(0)
    model = inception.googlenet(num_classes=3, in_chans=1, stem="small", image_size=28,
                                width=0.125, aux_logits=False).eval()
    return inception.LoadedModel(model, {"crop": 28, "resize": 28, "mean": [0.5],
                                         "std": [0.25]}, ["a", "b", "c"], path=tmp_path)


def test_the_export_tolerance_is_relative_to_large_logits_absolute_for_small():
    small, large = torch.zeros(2, 3), torch.full((2, 3), 1000.0)
    assert export.check_close(small + 9e-5, small, "x") == pytest.approx(9e-5)
    with pytest.raises(export.ExportError, match="x's logits differ"):
        export.check_close(small + 2e-4, small, "x")
    assert export.check_close(large + 0.09, large, "x") == pytest.approx(0.09, rel=1e-3)
    with pytest.raises(export.ExportError):
        export.check_close(large + 0.2, large, "x")


def test_a_torch_export_program_that_differs_is_not_written(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    real = torch.export.ExportedProgram.module

    def shifted(self):
        module = real(self)
        return lambda x: module(x) + 1.0

    monkeypatch.setattr(torch.export.ExportedProgram, "module", shifted)
    with pytest.raises(export.ExportError, match=r"torch\.export program"):
        export.export_program(_tiny_loaded(tmp_path), out / "model.pt2")
    assert list(out.iterdir()) == []


def test_the_export_checks_and_calibrates_on_the_evaluation_transform(fashion_model,
                                                                      fashion_mnist):
    """The images an export is checked and calibrated on are fed as `inception eval` feeds
    them: through the model's own `Preprocessing`."""
    loaded = inception.load(fashion_model)
    train, test = fashion_mnist
    x, labels = export.sample_images(loaded, "eval", 6)
    assert torch.equal(x, loaded.preprocessing(test.images[:6]))
    assert torch.equal(labels, test.labels[:6])
    calibration, _ = export.sample_images(loaded, "train", 4)
    assert torch.equal(calibration, loaded.preprocessing(train.images[:4]))
