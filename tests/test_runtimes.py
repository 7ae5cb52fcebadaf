"""Exported files as models (`inception.runtimes`, `cli_deploy`): what runs without the openvino
extra, and the one-line refusals. The OpenVINO paths themselves: tests/test_export_openvino.py."""

import json
import sys

import pytest
from PIL import Image

from inception import runtimes
from inception.cli import main


@pytest.fixture(scope="module")
def onnx_file(fashion_model, tmp_path_factory, small_fashion_mnist_dir):
    from inception import load
    from inception.export import export_onnx

    path = tmp_path_factory.mktemp("exported") / "m.onnx"
    export_onnx(load(fashion_model), path, check=32, data_dir=small_fashion_mnist_dir)
    return path


def test_predict_and_eval_run_an_onnx_file_in_onnxruntime(onnx_file, fashion_model, tmp_path,
                                                          small_fashion_mnist_dir, capsys):
    image = tmp_path / "a.png"
    Image.new("L", (28, 28), 128).save(image)
    assert main(["predict", str(onnx_file), str(image), "--json"]) == 0
    by_file = json.loads(capsys.readouterr().out)[0]["predictions"]
    assert main(["predict", str(fashion_model), str(image), "--precision", "fp32",
                 "--json"]) == 0
    by_torch = json.loads(capsys.readouterr().out)[0]["predictions"]
    assert [p["class"] for p in by_file] == [p["class"] for p in by_torch]
    assert by_file[0]["probability"] == pytest.approx(by_torch[0]["probability"], abs=1e-4)
    # An ensemble may mix a run directory and an exported file; both run on the CPU.
    assert main(["eval", str(fashion_model), "--ensemble", str(onnx_file), "--subset", "64",
                 "--data-dir", small_fashion_mnist_dir, "--out", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["precision"] == "fp32,onnxruntime fp32"


def test_an_exported_file_refuses_what_it_cannot_do_in_one_line(onnx_file, tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.new("L", (28, 28), 128).save(image)
    for argv, words in (
            (["predict", str(onnx_file), str(image), "--precision", "bf16"],
             "leave --precision out"),
            (["predict", str(onnx_file), str(image), "--explain", str(tmp_path)],
             "explain the run directory"),
            (["eval", str(onnx_file), "--runtime", "torch"], "run the run directory"),
            (["export", str(onnx_file), str(tmp_path / "again.onnx")],
             "is an exported file already")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, (argv, err)
    assert not (tmp_path / "again.onnx").exists()


def test_a_file_without_inception_metadata_is_refused_naming_it(tmp_path, capsys):
    import onnx

    bare = tmp_path / "bare.onnx"
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["image"], ["logits"])], "g",
        [onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1, 10])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 10])])
    onnx.save(onnx.helper.make_model(graph), str(bare))
    assert main(["eval", str(bare)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "metadata lacks" in err and str(bare) in err


def test_without_openvino_each_command_says_what_to_install(fashion_model, onnx_file, tmp_path,
                                                            monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "openvino" or m.startswith("openvino.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    monkeypatch.setitem(sys.modules, "nncf", None)
    assert not runtimes.openvino_installed()  # so `inception bench` leaves its rows out
    xml = tmp_path / "m.xml"
    assert main(["export", str(fashion_model), str(xml), "--format", "openvino"]) == 2
    assert "pip install 'inception[openvino]'" in capsys.readouterr().err
    assert not xml.exists() and not xml.with_suffix(".bin").exists()
    image = tmp_path / "a.png"
    Image.new("L", (28, 28), 128).save(image)
    xml.write_text("<net/>")
    for argv in (["predict", str(xml), str(image)],
                 ["eval", str(onnx_file), "--runtime", "openvino"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "pip install 'inception[openvino]'" in err
    # Everything else goes on as before: the ONNX file runs in ONNX Runtime.
    assert main(["predict", str(onnx_file), str(image)]) == 0
