import json
import math
import os
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from inception import ConfigError, GoogLeNetConfig, GoogLeNetOutput, googlenet, googlenet_loss
from inception.model import GoogLeNet
from inception.modules import Inception
from inception.table1 import TABLE1
from inception.torchvision_compat import to_torchvision_key

GOLDEN = Path(__file__).parent / "golden" / "logits.json"


def _convs(model, k):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (k, k)]


def test_paper_variant_structure():
    model = googlenet()
    assert model.config == GoogLeNetConfig()
    assert len(_convs(model.layers, 5)) == 9  # one true 5x5 per Inception module
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in model.modules()) == 2  # Figure 3
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, Inception) for m in model.modules()) == 9
    assert model.layers["dropout"].p == 0.4
    assert [h.dropout.p for h in model.aux.values()] == [0.7, 0.7]
    pool4 = model.layers["pool4"]
    assert (pool4.kernel_size, pool4.stride) == (3, 2)
    # Every conv has a ReLU after it: count ReLUs against convs.
    relus = sum(isinstance(m, nn.ReLU) for m in model.layers.modules())
    assert relus == len([m for m in model.layers.modules() if isinstance(m, nn.Conv2d)])


@pytest.mark.slow
def test_paper_forward_at_224_and_aux_only_when_asked():
    x = torch.randn(2, 3, 224, 224)
    model = googlenet()
    for mode in (model.train, model.eval):
        mode()
        logits = model(x)
        assert isinstance(logits, torch.Tensor) and logits.shape == (2, 1000)
    out = model.train().forward_aux(x)
    assert isinstance(out, GoogLeNetOutput)
    assert [a.shape for a in out.aux] == [(2, 1000), (2, 1000)]

    bare = googlenet(aux_logits=False)
    assert not any(k.startswith("aux") for k in bare.state_dict())
    with pytest.raises(RuntimeError, match="no auxiliary classifiers"):
        bare.forward_aux(x)
    dropped = googlenet().drop_aux()
    assert dropped.config.aux_logits is False
    assert sum(p.numel() for p in dropped.parameters()) == sum(
        p.numel() for p in bare.parameters())


def test_aux_state_dict_keys_follow_the_flag():
    cfg = dict(stem="small", image_size=28, width=0.25, num_classes=10, aux_pool="adaptive")
    assert any(k.startswith("aux.4a.") for k in googlenet(**cfg).state_dict())
    assert any(k.startswith("aux.4d.") for k in googlenet(**cfg).state_dict())
    assert not any(k.startswith("aux") for k in googlenet(aux_logits=False, **cfg).state_dict())


@pytest.mark.parametrize("size, side_5b", [(28, 3), (32, 4), (64, 8)])
@pytest.mark.parametrize("norm", ["lrn", "bn", "none"])
def test_small_stem(size, side_5b, norm):
    # The paper's 5x5/3 aux pool covers 32 px's 8x8 map; 28 and 64 px need the adaptive pool.
    model = googlenet(stem="small", image_size=size, num_classes=10, width=0.25, norm=norm,
                      in_chans=1, aux_pool="5x5/3" if size == 32 else "adaptive")
    x = torch.randn(3, 1, size, size)
    out = model.train().forward_aux(x)
    assert out.logits.shape == (3, 10) and all(a.shape == (3, 10) for a in out.aux)
    assert model.forward_features(x).shape[-1] == side_5b  # three 3x3/2 pools: about size / 8
    assert model.layers["conv1"].conv.kernel_size == (3, 3)
    assert model.layers["conv1"].conv.stride == (1, 1)


def _assert_every_parameter_learns(model, x, y):
    loss = googlenet_loss(model.train().forward_aux(x), y)
    loss.backward()
    missing = [n for n, p in model.named_parameters()
               if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("norm", ["lrn", "bn"])
def test_every_parameter_gets_a_gradient_small(norm):
    model = googlenet(stem="small", image_size=32, num_classes=7, width=0.25, norm=norm)
    _assert_every_parameter_learns(model, torch.randn(4, 3, 32, 32), torch.randint(0, 7, (4,)))


@pytest.mark.slow
def test_every_parameter_gets_a_gradient_paper_224():
    model = googlenet(num_classes=42)
    _assert_every_parameter_learns(model, torch.randn(2, 3, 224, 224), torch.tensor([0, 41]))


def test_loss_weights_aux_by_0_3():
    torch.manual_seed(1)
    logits, a1, a2 = (torch.randn(5, 4) for _ in range(3))
    y = torch.randint(0, 4, (5,))
    ce = nn.functional.cross_entropy
    got = googlenet_loss(GoogLeNetOutput(logits, (a1, a2)), y)
    assert torch.allclose(got, ce(logits, y) + 0.3 * (ce(a1, y) + ce(a2, y)))
    assert GoogLeNetConfig().aux_weight == 0.3


def test_torchvision_layout_matches_parameter_shapes_one_for_one():
    for aux in (True, False):
        ours = googlenet(GoogLeNetConfig.torchvision(aux_logits=aux)).state_dict()
        theirs = torchvision.models.googlenet(weights=None, aux_logits=aux,
                                              init_weights=False).state_dict()
        mapped = {to_torchvision_key(k): v.shape for k, v in ours.items()}
        assert mapped.keys() == theirs.keys()
        assert all(mapped[k] == theirs[k].shape for k in theirs)
    # and the paper layout is *not* torchvision's: the 5x5 branch and the LRNs differ
    paper = {to_torchvision_key(k): v.shape for k, v in googlenet().state_dict().items()}
    tv = torchvision.models.googlenet(weights=None, init_weights=False).state_dict()
    assert paper.keys() != tv.keys() or any(paper[k] != tv[k].shape for k in tv)


def test_width_scales_every_filter_count():
    half = googlenet(width=0.5, stem="small", image_size=32, num_classes=10)
    assert half.layers["3a"].filter_counts() == dict(n1x1=32, n3x3_reduce=48, n3x3=64,
                                                     n5x5_reduce=8, n5x5=16, pool_proj=16)
    assert half.layers["conv1"].conv.out_channels == 32
    assert half.aux["4a"].conv.conv.out_channels == 64
    assert half.aux["4a"].fc1.out_features == 512
    assert half.num_features == 512


def test_initialisation_starts_near_uniform_and_keeps_scale():
    torch.manual_seed(0)
    model = googlenet(stem="small", image_size=32, num_classes=10).eval()
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        h = x
        for name in model._feature_rows:
            h = model.layers[name](h)
            rms = h.pow(2).mean().sqrt().item()
            assert 0.3 < rms < 10, (name, rms)  # no vanishing, no explosion through 22 layers
        loss = nn.functional.cross_entropy(model(x), torch.randint(0, 10, (16,)))
    assert abs(loss.item() - math.log(10)) < 0.5


def test_reset_classifier():
    model = googlenet(stem="small", image_size=32, num_classes=10, width=0.25)
    model.reset_classifier(3)
    assert model.config.num_classes == 3
    out = model.forward_aux(torch.randn(2, 3, 32, 32))
    assert out.logits.shape == (2, 3) and all(a.shape == (2, 3) for a in out.aux)


@pytest.mark.parametrize("bad, match", [
    (dict(norm="batch"), "norm must be one of"),
    (dict(width=0), r"width must be a number in \(0, 8\]; got 0.0"),
    (dict(branch5x5_kernel=7), "branch5x5_kernel"),
    (dict(image_size=32), "aux_pool='5x5/3' needs at least a 5x5 map"),
    (dict(image_size=8, stem="imagenet", aux_logits=False), "too small"),
])
def test_bad_configs_are_refused_by_name(bad, match):
    with pytest.raises(ConfigError, match=match):
        googlenet(**bad)


def test_from_dict_refuses_unknown_keys():
    with pytest.raises(ConfigError, match="unknown model config key"):
        GoogLeNetConfig.from_dict({"num_classes": 10, "depth": 3})
    cfg = GoogLeNetConfig(num_classes=10)
    assert GoogLeNetConfig.from_dict(cfg.to_dict()) == cfg


GOLDEN_CASES = {
    "paper_224": (dict(), 224),
    "small_lrn_28": (dict(stem="small", image_size=28, num_classes=10, width=0.25,
                          aux_pool="adaptive"), 28),
    "small_bn_32": (dict(stem="small", image_size=32, num_classes=10, width=0.25, norm="bn"), 32),
}


def _golden_logits(overrides, size):
    torch.manual_seed(0)
    model = googlenet(**overrides).eval()
    n = 3 * size * size
    x = torch.sin(torch.arange(2 * n, dtype=torch.float32) * 0.01).reshape(2, 3, size, size)
    with torch.no_grad():
        return model(x)[:, :10]


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_seeded_golden_output(case):
    """Seed 0, a fixed input: the logits must not drift (init, layer order or architecture)."""
    logits = _golden_logits(*GOLDEN_CASES[case])
    if os.environ.get("INCEPTION_REGEN_GOLDEN"):
        data = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        data[case] = logits.tolist()
        GOLDEN.write_text(json.dumps(data, indent=1) + "\n")
    expected = torch.tensor(json.loads(GOLDEN.read_text())[case])
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("norm", ["lrn", "bn"])
def test_torch_fx_and_feature_extraction_work_on_the_model(norm):
    """`torch.fx.symbolic_trace` and torchvision's `create_feature_extractor` on the default
    (LRN) model and the BN one: the LRN's device and autocast checks run outside the trace."""
    from torchvision.models.feature_extraction import create_feature_extractor

    torch.manual_seed(0)
    model = googlenet(image_size=80, norm=norm).eval()
    x = torch.randn(2, 3, 80, 80)
    traced = torch.fx.symbolic_trace(model)
    extractor = create_feature_extractor(model, {"layers.4e.cat": "4e",
                                                 "layers.avgpool.1": "pool"})
    with torch.no_grad():
        out = extractor(x)
        features = model.forward_features(x)
        h = x
        for name in model.layers:
            h = model.layers[name](h)
            if name == "4e":
                break
        torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)
    torch.testing.assert_close(out["4e"], h, rtol=0, atol=0)
    torch.testing.assert_close(out["pool"], features.mean(dim=(2, 3)), rtol=1e-6, atol=1e-6)


def test_without_the_pooling_path_each_module_has_three_branches():
    cfg = GoogLeNetConfig(num_classes=10, in_chans=1, image_size=28, stem="small", width=0.25,
                          pool_branch=False, aux_pool="adaptive")
    model = GoogLeNet(cfg)
    paper = GoogLeNet(cfg.replace(pool_branch=True))
    for name, row in ((r.name, r) for r in TABLE1 if r.type == "inception"):
        layer = model.layers[name]
        assert layer.branch4 is None and len(layer.branches()) == 3
        assert layer.filter_counts()["pool_proj"] is None
        w = [max(1, round(f * 0.25)) for f in (row.n1x1, row.n3x3, row.n5x5)]
        assert layer.out_channels == sum(w)
        assert paper.layers[name].out_channels == sum(w) + max(1, round(row.pool_proj * 0.25))
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert len(model.forward_aux(torch.randn(2, 1, 28, 28)).aux) == 2
    n = sum(p.numel() for p in model.parameters())
    assert n < sum(p.numel() for p in paper.parameters())


def test_a_fully_connected_head_replaces_the_average_pool():
    cfg = GoogLeNetConfig(num_classes=10, in_chans=1, image_size=28, stem="small", width=0.25,
                          head="fc", aux_pool="adaptive")
    model = GoogLeNet(cfg)
    fc = model.layers["avgpool"][1]
    assert isinstance(fc, torch.nn.Linear)
    assert (fc.in_features, fc.out_features) == (256 * 3 * 3, 256)  # 5b: 3x3x256 at 28 px
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(RuntimeError):  # the map of another input size does not fit the layer
        model(torch.randn(2, 1, 36, 36))
    assert model.num_features == 256


def test_an_aux_pool_that_leaves_positions_unseen_is_refused():
    """The paper's 5x5/3 pool on the small stem's 7x7 map at 28 px averages only the top-left
    5x5 window: refused, naming the map and the choices."""
    with pytest.raises(ConfigError, match=r"7x7 map at 4a/4d .* top-left 5x5 .*adaptive"):
        GoogLeNet(GoogLeNetConfig(num_classes=10, in_chans=1, image_size=28, stem="small"))
    with pytest.raises(ConfigError, match="6x6 map"):  # 96 px: 4a is 6x6
        GoogLeNet(GoogLeNetConfig(image_size=96))
    GoogLeNet(GoogLeNetConfig(image_size=96, aux_logits=False))  # no aux heads, no pool
    for size in (224, 32):  # 14x14 and 8x8 (small stem): 3k + 5, covered
        GoogLeNet(GoogLeNetConfig(image_size=size, stem="small" if size == 32 else "imagenet",
                                  width=0.25))


def test_the_default_recipes_aux_heads_pool_every_position():
    """Each aux head's pool passes gradient to every position of its 4a / 4d map."""
    from inception.recipes import get_recipe

    model = GoogLeNet(get_recipe("fashion-mnist").model)
    for name, head in model.aux.items():
        channels = model.layers[name].out_channels
        side = 7  # 28 px, small stem
        x = torch.ones(1, channels, side, side, requires_grad=True)
        head.pool(x).sum().backward()
        assert (x.grad > 0).all(), name
