import json

import pytest
import torch
import torchvision

import inception
from inception.cli import main
from inception.weights import WeightsError, from_torchvision, torchvision_backbone_state


def _torchvision_googlenet(aux: bool, seed: int = 0) -> torchvision.models.GoogLeNet:
    """A randomly initialised torchvision GoogLeNet with random BN statistics too, so that a
    mismatch anywhere (BN included) shows in the logits."""
    torch.manual_seed(seed)
    model = torchvision.models.googlenet(weights=None, aux_logits=aux, init_weights=True,
                                         num_classes=1000)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return model.eval()


@pytest.mark.parametrize("transform_input", [False, True])
@pytest.mark.parametrize("aux", [False, True])
def test_from_torchvision_matches_torchvision_logits(tmp_path, transform_input, aux):
    theirs = _torchvision_googlenet(aux)
    path = tmp_path / "googlenet.pth"
    torch.save(theirs.state_dict(), path)
    ours = from_torchvision(path, transform_input=transform_input)
    assert ours.config.transform_input is transform_input and bool(ours.aux) is aux
    theirs.transform_input = transform_input
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    assert (got - expected).abs().max().item() < 1e-5
    assert expected.abs().max() > 1e-3  # not a vacuous comparison of zeros


def test_from_torchvision_refuses_payloads_and_foreign_files(tmp_path):
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (marker.mkdir, ())

    evil = tmp_path / "evil.pth"
    torch.save({"fc.weight": Payload()}, evil)
    with pytest.raises(WeightsError, match="weights_only"):
        from_torchvision(evil)
    assert not marker.exists()
    other = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(WeightsError, match="not a torchvision GoogLeNet"):
        from_torchvision(other)
    with pytest.raises(WeightsError, match="no such file"):
        from_torchvision(tmp_path / "missing.pth")


def test_backbone_init_keeps_features_and_replaces_classifiers(tmp_path):
    theirs = _torchvision_googlenet(aux=True)
    path = tmp_path / "googlenet.pth"
    torch.save(theirs.state_dict(), path)
    model = inception.googlenet(inception.GoogLeNetConfig.torchvision(num_classes=3,
                                                                      transform_input=True))
    state = torchvision_backbone_state(path, model)
    assert "layers.linear.weight" not in state and "aux.4a.fc2.weight" not in state
    missing = model.load_state_dict(state, strict=False).missing_keys
    assert sorted(missing) == ["aux.4a.fc2.bias", "aux.4a.fc2.weight", "aux.4d.fc2.bias",
                               "aux.4d.fc2.weight", "layers.linear.bias", "layers.linear.weight"]
    assert torch.equal(model.layers["3a"].branch2[0].conv.weight,
                       theirs.inception3a.branch2[0].conv.weight)
    narrow = inception.googlenet(inception.GoogLeNetConfig.torchvision(num_classes=3, width=0.5))
    with pytest.raises(WeightsError, match="shapes do not fit"):
        torchvision_backbone_state(path, narrow)


@pytest.mark.slow
def test_cli_finetune_from_torchvision(tmp_path, image_folder, capsys):
    path = tmp_path / "googlenet.pth"
    torch.save(_torchvision_googlenet(aux=False).state_dict(), path)
    out = tmp_path / "run"
    assert main(["train", str(image_folder), "--init", f"torchvision:{path}", "--image-size",
                 "64", "--epochs", "1", "--batch-size", "30", "--workers", "0",
                 "--no-progress", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())["train"]
    assert config["recipe"] == "finetune" and config["init"] == f"torchvision:{path}"
    assert config["model"]["transform_input"] and config["model"]["num_classes"] == 3
    loaded = inception.load(out)
    assert loaded.classes == ["bag", "sneaker", "trouser"]
    bad = ["train", str(image_folder), "--init", f"torchvision:{path}", "--width", "0.5",
           "--epochs", "1", "--out", str(tmp_path / "bad")]
    capsys.readouterr()
    assert main(bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "shapes do not fit" in err[0]


def test_load_returns_model_config_preprocessing_and_classes(fashion_model):
    loaded = inception.load(fashion_model)
    assert not loaded.model.training and not loaded.model.aux
    assert loaded.classes[0] == "T-shirt/top" and loaded.image_size == 28
    assert loaded.config.width == 0.25 and loaded.meta["data"] == "fashion-mnist"
    assert inception.load(fashion_model / "model.safetensors").path == loaded.path


def test_load_refuses_broken_model_files(tmp_path, fashion_model):
    with pytest.raises(WeightsError, match=r"no model\.safetensors"):
        inception.load(tmp_path)
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"x")
    with pytest.raises(WeightsError, match="pickled checkpoints are not loaded"):
        inception.load(pt)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes((fashion_model / "model.safetensors").read_bytes())
    with pytest.raises(WeightsError, match=r"model\.json is missing"):
        inception.load(weights)
    meta = json.loads((fashion_model / "model.json").read_text())
    meta["model"]["width"] = 0.5
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match="do not fit the model config"):
        inception.load(weights)


def test_an_old_model_json_without_the_newer_preprocessing_keys_loads(tmp_path, fashion_model):
    """Run directories written before `channels`, `image_size` and `interpolation` were stored
    still load, with the values those runs used."""
    import json
    import shutil

    meta = json.loads((fashion_model / "model.json").read_text())
    for key in ("channels", "image_size", "interpolation"):
        del meta["preprocessing"][key]
    shutil.copy(fashion_model / "model.safetensors", tmp_path / "model.safetensors")
    (tmp_path / "model.json").write_text(json.dumps(meta))
    old, new = inception.load(tmp_path), inception.load(fashion_model)
    assert old.preprocessing == new.preprocessing and old.channels == 1


def test_normalize_takes_float_pixels_in_0_1_and_refuses_other_ranges(fashion_model):
    """uint8 is 0-255; float is [0, 1], checked, never guessed: 0.5 is half intensity, not
    0.5 / 255 (about -0.80 after normalisation), and a float image in 0-255 is refused with the
    range it has."""
    loaded = inception.load(fashion_model)
    p = loaded.preprocessing
    pixels = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    assert torch.equal(loaded.normalize(pixels), p.normalize(pixels))
    torch.testing.assert_close(loaded.normalize(pixels.double() / 255), p.normalize(pixels))
    half = loaded.normalize(torch.full((1, 28, 28), 0.5))
    torch.testing.assert_close(half, torch.full((1, 28, 28), (0.5 - p.mean[0]) / p.std[0]))
    with pytest.raises(ValueError, match=r"images: float pixels must be in \[0, 1\]; found "
                                         r"values in \[0, 255\]"):
        loaded.normalize(torch.linspace(0, 255, 784).view(1, 1, 28, 28))
    with pytest.raises(ValueError, match="nan"):
        loaded.normalize(torch.full((1, 28, 28), float("nan")))
    with pytest.raises(TypeError, match=r"images: .*torch\.int64"):
        loaded.normalize(pixels.long())
    with pytest.raises(TypeError, match=r"images: expected a torch\.Tensor"):
        loaded.normalize(pixels.numpy())
    with pytest.raises(ValueError, match=r"1 channel\(s\); got shape \(2, 3, 28, 28\)"):
        loaded.normalize(pixels.expand(-1, 3, -1, -1))
