"""The paper recipe, setting by setting (section 6), and the recipe registry."""

import itertools

import pytest
import torch

from inception import ConfigError, googlenet
from inception.recipes import RECIPES, get_recipe
from inception.train.optim import ema_multi_avg_fn, make_average, make_optimizer, make_scheduler


@pytest.fixture
def paper():
    return get_recipe("paper")


def test_paper_settings(paper):
    assert paper.momentum == 0.9 and not paper.nesterov  # "0.9 momentum"
    assert paper.schedule == "step" and paper.lr_step_epochs == 8 and paper.lr_step_gamma == 0.96
    assert paper.averaging == "polyak"
    assert paper.augment == "paper"
    assert paper.model.aux_weight == 0.3 and paper.model.aux_logits
    assert paper.model.dropout == 0.4 and paper.model.aux_dropout == 0.7
    assert paper.model.norm == "lrn" and paper.model.branch5x5_kernel == 5


def test_paper_lr_at_epochs_0_7_8_16(paper):
    """ "decreasing the learning rate by 4% every 8 epochs" """
    steps_per_epoch = 5
    model = torch.nn.Linear(2, 2)
    opt = make_optimizer(model, paper)
    sched = make_scheduler(opt, paper, steps_per_epoch)
    lr_at = {}
    for step in range(17 * steps_per_epoch):
        if step % steps_per_epoch == 0:
            lr_at[step // steps_per_epoch] = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
    assert lr_at[0] == pytest.approx(0.01)
    assert lr_at[7] == pytest.approx(0.01)
    assert lr_at[8] == pytest.approx(0.01 * 0.96)
    assert lr_at[15] == pytest.approx(0.01 * 0.96)
    assert lr_at[16] == pytest.approx(0.01 * 0.96**2)


def test_polyak_average_is_the_mean_of_the_iterates(paper):
    model = torch.nn.Linear(3, 1, bias=False)
    avg = make_average(model, paper)
    iterates = []
    for k in range(5):
        with torch.no_grad():
            model.weight.fill_(float(k * k))
        iterates.append(model.weight.clone())
        avg.update_parameters(model)
    assert torch.allclose(avg.module.weight, torch.stack(iterates).mean(0))


def test_ema_arithmetic_with_warmup():
    model = torch.nn.Linear(1, 1, bias=False)
    cfg = get_recipe("fashion-mnist").replace(averaging="ema", ema_decay=0.99)
    avg = make_average(model, cfg)
    expected = None
    for k in range(30):
        with torch.no_grad():
            model.weight.fill_(float(k))
        if expected is None:
            expected = float(k)  # the first update copies
        else:
            n = k  # updates so far
            d = min(0.99, (1 + n) / (10 + n))
            expected = d * expected + (1 - d) * k
        avg.update_parameters(model)
    assert avg.module.weight.item() == pytest.approx(expected)
    late = [torch.tensor(1.0)]
    ema_multi_avg_fn(0.99)(late, [torch.tensor(0.0)], 1000)
    assert late[0].item() == pytest.approx(0.99)


def test_training_loss_uses_the_aux_weight(monkeypatch):
    """The training step passes the config's aux weight (0.3) to the loss."""
    from inception.train import engine

    seen = []
    real = engine.googlenet_loss

    def spy(output, target, aux_weight, label_smoothing):
        seen.append(aux_weight)
        return real(output, target, aux_weight, label_smoothing)

    monkeypatch.setattr(engine, "googlenet_loss", spy)
    cfg = get_recipe("paper").replace(stem="small", image_size=32, width=0.25, num_classes=3,
                                      precision="fp32")
    model = googlenet(cfg.model)
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, 1)
    batches = [(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]))]
    trainer = engine.Trainer(model, opt, sched, cfg, torch.device("cpu"))
    engine.train_one_epoch(trainer, iter(batches), engine.Position())
    assert seen == [0.3]


def test_every_recipe_builds_and_names_itself():
    for name, make in RECIPES.items():
        cfg = make()
        assert cfg.recipe == name
        model = googlenet(cfg.model)
        assert model.config == cfg.model and bool(model.aux) == cfg.model.aux_logits
        x = torch.randn(1, cfg.model.in_chans, cfg.model.image_size, cfg.model.image_size)
        with torch.no_grad():
            assert model.eval()(x).shape == (1, cfg.model.num_classes)
    with pytest.raises(ConfigError, match="unknown recipe"):
        get_recipe("imagenet-in-a-minute")


def test_weight_decay_skips_biases_and_bn():
    model = googlenet(norm="bn", stem="small", image_size=32, width=0.25, num_classes=3)
    opt = make_optimizer(model, get_recipe("fashion-mnist"))
    decayed, plain = opt.param_groups
    assert all(p.ndim > 1 for p in decayed["params"]) and decayed["weight_decay"] > 0
    assert all(p.ndim == 1 for p in plain["params"]) and plain["weight_decay"] == 0


@pytest.mark.parametrize("change, message", [
    ({"lr": float("inf")}, "lr must be a number greater than 0; got inf"),
    ({"lr": float("nan")}, "lr must be a number greater than 0; got nan"),
    ({"weight_decay": -1e-4}, "weight_decay must be a number of at least 0"),
    ({"momentum": 1.0}, "momentum must be a number in"),
    ({"warmup_fraction": 0.0}, "warmup_fraction must be a number in"),
    ({"lr_step_gamma": 1.5}, "lr_step_gamma must be a number in"),
    ({"eval_batch_size": 0}, "eval_batch_size must be an integer from 1 to 65536"),
    ({"dropout": float("nan")}, "dropout must be a number in"),
    ({"aux_weight": float("inf")}, "aux_weight must be a number of at least 0; got inf"),
])
def test_non_finite_and_out_of_range_settings_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        get_recipe("fashion-mnist").replace(**change)


def test_the_default_recipes_one_cycle_shape():
    """Warm-up from lr/10 to the peak over the first 15% of the steps, then cosine down to
    lr/1000, stepped once per optimizer step."""
    cfg = get_recipe("fashion-mnist")
    opt = make_optimizer(torch.nn.Linear(2, 2), cfg)
    sched = make_scheduler(opt, cfg, steps_per_epoch=10)
    lrs = []
    for _ in range(cfg.epochs * 10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    peak = lrs.index(max(lrs))
    assert lrs[0] == pytest.approx(cfg.lr / 10)
    assert max(lrs) == pytest.approx(cfg.lr) and peak == pytest.approx(15, abs=1)
    assert all(a < b for a, b in itertools.pairwise(lrs[:peak + 1]))
    assert all(a > b for a, b in itertools.pairwise(lrs[peak:]))
    assert lrs[-1] == pytest.approx(cfg.lr / 1000, rel=0.05)


def test_label_smoothing_and_nesterov_reach_the_loss_and_the_optimizer(monkeypatch):
    from inception.train import engine

    cfg = get_recipe("fashion-mnist").replace(width=0.125, precision="fp32")
    assert cfg.label_smoothing == 0.1 and cfg.nesterov
    seen = []
    real = engine.googlenet_loss
    monkeypatch.setattr(engine, "googlenet_loss",
                        lambda *a: seen.append(a[3]) or real(*a))
    model = googlenet(cfg.model)
    opt = make_optimizer(model, cfg)
    assert all(g["nesterov"] and g["momentum"] == 0.9 for g in opt.param_groups)
    trainer = engine.Trainer(model, opt, make_scheduler(opt, cfg, 1), cfg, torch.device("cpu"))
    batch = (torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3]))
    engine.train_one_epoch(trainer, iter([batch]), engine.Position())
    assert seen == [0.1]


@pytest.mark.parametrize("averaging", ["ema", "polyak"])
def test_batchnorm_statistics_are_averaged_too(averaging):
    """The average's BN running mean is the average of the model's running means, as its
    weights are of the weights."""
    cfg = get_recipe("fashion-mnist").replace(averaging=averaging, ema_decay=0.5)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    average = make_average(model, cfg)
    means = []
    for i in range(5):
        model(torch.randn(8, 1, 3, 3) + i)  # training mode: the running mean moves
        means.append(model[1].running_mean.clone())
        average.update_parameters(model)
    if averaging == "polyak":
        expected = torch.stack(means).mean(0)
    else:  # the n-th update (n >= 1) keeps min(0.5, (1 + n) / (10 + n)) of the average
        expected = means[0]
        for n, m in enumerate(means[1:], 1):
            d = min(0.5, (1 + n) / (10 + n))
            expected = d * expected + (1 - d) * m
    assert torch.allclose(average.module[1].running_mean, expected, atol=1e-6)
    assert not torch.allclose(expected, means[-1])


def test_the_fused_sgd_update_is_the_for_loop_one():
    """`make_optimizer` uses torch's fused SGD kernel: the same Nesterov update with the weight
    decay groups as torch's for-loop SGD."""
    import copy

    cfg = get_recipe("fashion-mnist")
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                            torch.nn.Linear(4 * 6 * 6, 3))
    b = copy.deepcopy(a)
    fused, plain = make_optimizer(a, cfg), make_optimizer(b, cfg)
    assert all(g["fused"] for g in fused.param_groups)
    for g in plain.param_groups:
        g["fused"] = False
    x, y = torch.randn(5, 1, 8, 8), torch.randint(0, 3, (5,))
    for _ in range(3):
        for model, opt in ((a, fused), (b, plain)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
