"""Branch ablation of the Inception modules (`experiments.branches`) and Table 3's grid of models
and crops (`experiments.crops`), on tiny models."""

import math
import statistics

import matplotlib.image
import pytest
import torch
import torch.nn.functional as F
from test_caffe import caffemodel, random_paper_model

import inception
from inception import data as data_lib
from inception.cli import main
from inception.evaluation import evaluate
from inception.experiments.branches import (
    BRANCHES,
    BranchResult,
    aggregate,
    branch_ablation,
    inception_modules,
    plot_branches,
    zeroed,
)
from inception.experiments.crops import HEADER, crop_grid, markdown_table
from inception.model import googlenet
from inception.preprocessing import Preprocessing
from inception.weights import save_model

MODULES = ["3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"]


def tiny_model_dir(folder, seed: int = 0, **overrides):
    """A model directory as a Fashion-MNIST run writes it, with a tiny random model whose BN
    statistics are random too (so that every branch changes the logits)."""
    torch.manual_seed(seed)
    model = googlenet(num_classes=10, in_chans=1, image_size=28, stem="small", width=0.0625,
                      norm="bn", aux_logits=False, **overrides)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        model.layers["linear"].weight.normal_(0, 0.3)
    folder.mkdir(parents=True, exist_ok=True)
    preprocessing = Preprocessing(image_size=28, resize=28, crop=28,
                                  mean=data_lib.FASHION_MNIST_MEAN,
                                  std=data_lib.FASHION_MNIST_STD, channels=1)
    save_model(folder, model.config, model.state_dict(), preprocessing,
               list(data_lib.FASHION_MNIST_CLASSES), {"data": "fashion-mnist"})
    return folder


def synthetic_images(n: int = 96, side: int = 28, channels: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, side, side), generator=g, dtype=torch.uint8)
    return images, torch.randint(0, 10, (n,), generator=g)


def hand_built_logits(model, x, name, branch):
    """The model's forward written out layer by layer, with `branch` of module `name`
    replaced by zeros in the concatenation."""
    h = x
    for row, layer in model.layers.items():
        if row == name:
            outs = [b(h) for b in (layer.branch1, layer.branch2, layer.branch3, layer.branch4)
                    if b is not None]
            k = BRANCHES.index(branch)
            outs[k] = torch.zeros_like(outs[k])
            h = torch.cat(outs, dim=1)
        else:
            h = layer(h)
    return h


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return inception.load(tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="module")
def tiny_result(tiny):
    images, labels = synthetic_images()
    return branch_ablation(tiny, images, labels, batch=40)


@pytest.mark.parametrize("name, branch", [("3a", "3x3"), ("4d", "pool"), ("5b", "1x1")])
def test_zeroing_a_branch_is_the_forward_with_that_branch_zero(tiny, name, branch):
    images, _ = synthetic_images(16)
    x = tiny.preprocessing(images)
    model = tiny.model
    with torch.no_grad():
        base = model(x)
        with zeroed(model.layers[name], branch):
            got = model(x)
        expected = hand_built_logits(model, x, name, branch)
    assert (got - base).abs().max() > 1e-4  # the branch matters: the comparison can fail
    torch.testing.assert_close(got, expected)


def test_the_hook_is_removed_on_leaving_even_on_error(tiny, tiny_result):
    images, _ = synthetic_images(16)
    x = tiny.preprocessing(images)
    model = tiny.model
    with torch.no_grad():
        base = model(x)
        with pytest.raises(RuntimeError, match="inside"), zeroed(model.layers["4a"], "5x5"):
            raise RuntimeError("inside")
        assert torch.equal(model(x), base)
    assert not any(m._forward_hooks for m in model.modules())  # branch_ablation left none
    assert not model.training


def test_the_ablation_measures_the_hand_built_forward(tiny, tiny_result):
    images, labels = synthetic_images()
    x = tiny.preprocessing(images)
    with torch.no_grad():
        base = tiny.model(x)
        ablated = hand_built_logits(tiny.model, x, "4c", "3x3")
    r = tiny_result
    assert r.modules == MODULES and r.branches == list(BRANCHES)
    assert r.baseline["loss"] == pytest.approx(F.cross_entropy(base, labels).item(), rel=1e-5)
    top1 = lambda logits: 100.0 * (logits.argmax(1) == labels).float().mean().item()  # noqa: E731
    assert r.baseline["top1"] == pytest.approx(top1(base))
    assert r.top1_drop["4c"]["3x3"] == pytest.approx(top1(base) - top1(ablated))
    increase = F.cross_entropy(ablated, labels).item() - F.cross_entropy(base, labels).item()
    assert abs(increase) > 1e-4
    assert r.loss_increase["4c"]["3x3"] == pytest.approx(increase, rel=1e-4, abs=1e-6)


def test_energy_shares_sum_to_one_and_match_the_branch_outputs(tiny, tiny_result):
    r = tiny_result
    for m in r.modules:
        assert sum(r.energy_share[m].values()) == pytest.approx(1.0, abs=1e-9)
        assert sum(r.channel_share[m].values()) == pytest.approx(1.0, abs=1e-12)
    images, _ = synthetic_images()
    module = tiny.model.layers["3b"]
    seen = {}

    def keep(_m, inputs, _out):
        seen["x"] = inputs[0]

    hook = module.register_forward_hook(keep)
    with torch.no_grad():
        tiny.model(tiny.preprocessing(images))
        hook.remove()
        energies = [b(seen["x"]).double().square().sum().item() for b in module.branches()]
    expected = [e / sum(energies) for e in energies]
    assert max(expected) - min(expected) > 0.01  # unequal shares: the comparison can fail
    assert list(r.energy_share["3b"].values()) == pytest.approx(expected, rel=1e-6)
    counts = module.filter_counts()
    assert r.channel_share["3b"]["5x5"] == counts["n5x5"] / module.out_channels


def test_the_baseline_is_inception_eval_one_crop(tiny, small_fashion_mnist_dir):
    _, test = data_lib.fashion_mnist(small_fashion_mnist_dir, download=False)
    result = branch_ablation(tiny, test.images[:64], test.labels[:64], batch=25)
    expected = evaluate([tiny], "fashion-mnist", crops=1, subset=64,
                        data_dir=small_fashion_mnist_dir)
    assert result.baseline["top1"] == pytest.approx(expected.top1)
    assert result.baseline["loss"] == pytest.approx(expected.loss, rel=1e-5)


@pytest.mark.parametrize("module", ["reduced", "naive"])
def test_a_model_without_pool_paths_reports_them_absent(tmp_path, module):
    loaded = inception.load(tiny_model_dir(tmp_path / "m", pool_branch=False, module=module))
    images, labels = synthetic_images(32)
    r = branch_ablation(loaded, images, labels)
    for m in r.modules:
        assert r.top1_drop[m]["pool"] is None and r.loss_increase[m]["pool"] is None
        assert r.energy_share[m]["pool"] is None and r.channel_share[m]["pool"] is None
        assert r.energy_share[m]["1x1"] is not None
        assert sum(v for v in r.energy_share[m].values() if v is not None) == pytest.approx(1)
    assert all(math.isnan(row[3]) for row in r.grid("energy_share"))
    with pytest.raises(ValueError, match="no pool branch"), \
            zeroed(loaded.model.layers["3a"], "pool"):
        pass


def test_a_model_imported_from_caffe(tmp_path):
    path = tmp_path / "bvlc_googlenet.caffemodel"
    path.write_bytes(caffemodel(random_paper_model(aux=False)))
    out = tmp_path / "imported"
    assert main(["import-caffe", str(path), "--out", str(out)]) == 0
    loaded = inception.load(out)
    images, labels = synthetic_images(2, side=72, channels=3)
    labels = labels * 97  # ImageNet's 1000 classes
    r = branch_ablation(loaded, images, labels)
    assert r.modules == MODULES and r.model == str(out / "model.safetensors")
    with torch.no_grad():
        logits = loaded(loaded.preprocessing(images))
    assert r.baseline["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    for m in r.modules:
        assert all(r.loss_increase[m][b] is not None for b in BRANCHES)
        assert sum(r.energy_share[m].values()) == pytest.approx(1.0, abs=1e-9)
    assert len(inception_modules(loaded.model)) == 9


def _result(value: float, pool: bool = True) -> BranchResult:
    cells = {m: {b: (None if b == "pool" and not pool else value + i + 0.1 * j)
                 for j, b in enumerate(BRANCHES)} for i, m in enumerate(MODULES)}
    return BranchResult(MODULES, list(BRANCHES), {"loss": value, "top1": 50 + value, "images": 8},
                        cells, cells, cells, cells, model=f"seed{value}")


def test_aggregate_gives_the_mean_and_sample_sd_of_every_cell():
    results = [_result(1.0), _result(2.0), _result(6.0)]
    agg = aggregate(results)
    cell = agg["loss_increase"]["4b"]["5x5"]
    values = [r.loss_increase["4b"]["5x5"] for r in results]
    assert cell["mean"] == pytest.approx(statistics.fmean(values))
    assert cell["std"] == pytest.approx(statistics.stdev(values)) and cell["n"] == 3
    assert agg["baseline"]["top1"]["mean"] == pytest.approx(53.0)
    assert agg["models"] == 3 and agg["modules"] == MODULES
    without = aggregate([_result(1.0, pool=False), _result(3.0, pool=False)])
    assert without["energy_share"]["3a"]["pool"] is None
    with pytest.raises(ValueError, match="one layout"):
        aggregate([_result(1.0), _result(2.0, pool=False)])
    assert BranchResult.from_json(results[0].to_json()) == results[0]


def test_the_heat_maps_are_written(tmp_path, tiny_result):
    single = plot_branches(tiny_result, tmp_path / "branches.png", "tiny model")
    several = plot_branches(aggregate([_result(1.0, pool=False), _result(2.0, pool=False)]),
                            tmp_path / "mean.png", "two seeds")
    for path in (single, several):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width = matplotlib.image.imread(path).shape[:2]
        assert width > 1000 and height > 300


def test_the_crop_grid_is_inception_eval_per_cell(tmp_path, small_fashion_mnist_dir):
    runs = [tiny_model_dir(tmp_path / f"run{s}", seed=s) for s in (1, 2)]
    grid = crop_grid(runs, crops=(1, 10), models=(1, 2), subset=64,
                     data_dir=small_fashion_mnist_dir)
    assert [(c["models"], c["crops"], c["cost"]) for c in grid] == [
        (1, 1, 1), (1, 10, 10), (2, 1, 2), (2, 10, 20)]
    assert all(c["images"] == 64 for c in grid)
    expected = evaluate([inception.load(runs[0])], "fashion-mnist", crops=1, subset=64,
                        data_dir=small_fashion_mnist_dir)
    assert grid[0]["top1_error"] == expected.top1_error
    assert grid[0]["top5_error"] == expected.top5_error
    assert grid[0]["loss"] != grid[2]["loss"]  # the second row is an ensemble
    table = markdown_table(grid)
    lines = table.splitlines()
    assert lines[0] == "| " + " | ".join(HEADER) + " |" and len(lines) == 6
    assert lines[5].startswith("| 2 | 10 | 20 | ")
    assert f"{grid[0]['top1_error']:.2f}%" in lines[2]
    only = crop_grid(runs, crops=(1,), models=(1, 7), subset=64,
                     data_dir=small_fashion_mnist_dir)
    assert [(c["models"], c["crops"]) for c in only] == [(1, 1)]


def test_a_naive_modules_pool_path_passes_its_input_channels():
    from inception.experiments.branches import channel_shares
    from inception.modules import Inception

    module = Inception(8, 4, 0, 6, 0, 2, 0, naive=True)  # 4 + 6 + 2 + the 8 input channels
    assert channel_shares(module) == {"1x1": 0.2, "3x3": 0.3, "5x5": 0.1, "pool": 0.4}
