"""`inception experiment`: the arms, the table's arithmetic, resuming, the gradient measurement."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from inception.cli import main
from inception.experiments import measure
from inception.experiments import report as report_lib
from inception.experiments.claims import EXPERIMENTS, Arm, protocol, select
from inception.experiments.runner import _resumable, jobs, run_dir, train_arms
from inception.experiments.table import Column, Spread, markdown_table, paired_difference
from inception.model import GoogLeNet
from inception.preprocessing import Preprocessing
from inception.train import train
from inception.train.config import RunError
from inception.train.engine import Position, Trainer
from inception.train.optim import make_optimizer, make_scheduler
from inception.weights import LoadedModel


def _flat(cfg) -> dict:
    d = cfg.to_dict()
    return {**{k: v for k, v in d.items() if k != "model"}, **d["model"]}


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_the_arms_differ_exactly_in_the_field_they_name(name):
    experiment = EXPERIMENTS[name]
    base = protocol()
    paper, other = (_flat(arm.config(base, 3)) for arm in experiment.arms)
    changed = {k for k in paper if paper[k] != other[k]}
    if experiment.field == "weights":  # the same runs, evaluated with other weights
        assert changed == set()
        assert [a.weights for a in experiment.arms] == ["final", "raw"]
    else:
        assert changed == {experiment.field}
        assert experiment.arms[0].weights == experiment.arms[1].weights == "final"
    # The first arm is the paper's: the protocol itself, whose model fields under test are the
    # paper's defaults.
    assert experiment.baseline.changes == {}
    assert paper["seed"] == 3


def test_the_protocol_has_the_paper_values_the_claims_are_about():
    model = protocol().model
    assert (model.module, model.pool_branch, model.aux_logits, model.aux_weight, model.head,
            model.dropout) == ("reduced", True, True, 0.3, "avgpool", 0.4)
    assert protocol().averaging != "none"


def test_arms_with_the_same_changes_share_their_runs():
    todo = jobs(EXPERIMENTS.values(), [0, 1])
    names = [(arm.run_name, seed) for arm, seed in todo]
    assert len(names) == len(set(names)) == 12  # 6 distinct configurations x 2 seeds
    assert names[:6] == [("paper", 0), ("module=naive", 0), ("pool_branch=False", 0),
                         ("aux_logits=False", 0), ("head=fc", 0), ("dropout=0.0", 0)]
    assert {seed for _, seed in todo[6:]} == {1}


def test_select_refuses_an_unknown_experiment_by_name():
    assert len(select("all")) == 6
    with pytest.raises(ValueError, match="unknown experiment 'dropouts'; choose one of"):
        select("dropouts")


# -- the table's arithmetic ------------------------------------------------------------------------

def test_mean_and_sample_standard_deviation_by_hand():
    s = Spread.of([1.0, 2.0, 4.0])
    assert s.mean == pytest.approx(7 / 3)
    # deviations -4/3, -1/3, 5/3: squares 16/9 + 1/9 + 25/9 = 42/9, over n - 1 = 2
    assert s.std == pytest.approx(math.sqrt(7 / 3))
    assert Spread.of([5.0]).std == 0.0
    with pytest.raises(ValueError):
        Spread.of([])


def test_paired_differences_by_hand_over_the_shared_seeds():
    baseline = {0: 90.0, 1: 91.0, 2: 92.0, 3: 50.0}
    arm = {0: 89.0, 1: 91.5, 2: 90.0}
    d = paired_difference(baseline, arm)  # -1, +0.5, -2 (seed 3 has no pair)
    assert d.n == 3
    assert d.mean == pytest.approx(-5 / 6)
    # deviations -1/6, 4/3, -7/6: squares 1/36 + 64/36 + 49/36 = 114/36, over 2
    assert d.std == pytest.approx(math.sqrt(114 / 72))


def test_the_markdown_table_and_verdict_by_hand():
    column = Column("top-1", {"paper": {0: 90.0, 1: 91.0, 2: 92.0},
                              "other": {0: 89.0, 1: 91.5, 2: 90.0}})
    table = markdown_table([column], {"params": {"paper": "1M", "other": "2M"}})
    lines = table.splitlines()
    assert lines[0] == "| arm | seeds | top-1 | params |"
    assert lines[2] == "| paper | 3 | 91.00 ± 1.00 | 1M |"
    assert lines[3] == "| other | 3 | 90.17 ± 1.26 | 2M |"
    assert lines[4] == "| other − paper | 3 | -0.83 ± 1.26 |  |"
    # 95% interval: -5/6 -+ t(2) * 1.258 / sqrt(3), t(2) = 4.303
    lo, hi = report_lib.interval95(column.differences()["other"])
    half = 4.303 * math.sqrt(114 / 72) / math.sqrt(3)
    assert (lo, hi) == (pytest.approx(-5 / 6 - half), pytest.approx(-5 / 6 + half))
    assert "not resolved" in report_lib.verdict(column)
    clear = Column("top-1", {"paper": {0: 90.0, 1: 91.0, 2: 92.0},
                             "other": {0: 91.0, 1: 92.2, 2: 93.1}})  # +1.0, +1.2, +1.1
    assert "resolved: other is above paper" in report_lib.verdict(clear)


# -- resuming -------------------------------------------------------------------------------------

class _Killed(Exception):
    pass


@pytest.mark.slow
def test_an_interrupted_experiment_resumes_without_retraining_finished_arms(
        tmp_path, small_fashion_mnist_dir):
    base = protocol().replace(subset=256, val_images=128, epochs=2, batch_size=128,
                              eval_batch_size=500)
    experiments = [EXPERIMENTS["aux-heads"], EXPERIMENTS["averaging"]]  # 2 runs per seed
    calls = []

    def killed_in_the_third(cfg, **kw):
        calls.append((cfg.seed, cfg.model.aux_logits, kw["resume"]))
        if len(calls) == 3:  # the third run stops after its first epoch, checkpointed
            train(cfg, stop_after=1, **kw)
            raise _Killed
        return train(cfg, **kw)

    with pytest.raises(_Killed):
        train_arms(experiments, tmp_path, [0, 1], base=base, device="cpu", progress=False,
                   data_dir=small_fashion_mnist_dir, trainer=killed_in_the_third)
    finished = [run_dir(tmp_path, arm, 0) for arm in experiments[0].arms]
    before = {p: (p / "model.safetensors").read_bytes() for p in finished}
    stamps = {p: (p / "results.json").stat().st_mtime_ns for p in finished}

    calls.clear()

    def counted(cfg, **kw):
        calls.append((cfg.seed, cfg.model.aux_logits, kw["resume"]))
        return train(cfg, **kw)

    train_arms(experiments, tmp_path, [0, 1], base=base, device="cpu", progress=False,
               data_dir=small_fashion_mnist_dir, trainer=counted)
    # Only seed 1's runs: the interrupted one resumed, the last one fresh.
    assert calls == [(1, True, True), (1, False, False)]
    for p in finished:
        assert (p / "model.safetensors").read_bytes() == before[p]
        assert (p / "results.json").stat().st_mtime_ns == stamps[p]
    resumed = run_dir(tmp_path, experiments[0].arms[0], 1)
    assert len((resumed / "metrics.csv").read_text().splitlines()) == 1 + 2

    # The reports of both experiments from those runs.
    aux = report_lib.build_report(experiments[0], tmp_path, [0, 1], base=base,
                                  data_dir=small_fashion_mnist_dir)
    assert [c.name for c in aux.columns] == [report_lib.TOP1, report_lib.GRADIENT,
                                             report_lib.PROBE]
    assert all(s.n == 2 for c in aux.columns for s in c.spreads().values())
    assert {len(curve) for arm in aux.curves.values() for curve in arm.values()} == {2}
    paths = report_lib.write_report(aux, tmp_path)
    assert [p.name for p in paths] == ["table.md", "result.json", "plot.png"]
    assert "| no aux heads − aux heads (weight 0.3) | 2 |" in paths[0].read_text()
    averaging = report_lib.build_report(experiments[1], tmp_path, [0, 1], base=base,
                                        data_dir=small_fashion_mnist_dir)
    final, raw = averaging.columns[0].values.values()
    assert set(final) == set(raw) == {0, 1}
    # A report refuses runs trained with other settings.
    with pytest.raises(RunError, match="trained with other settings"):
        report_lib.build_report(experiments[1], tmp_path, [0, 1], base=base.replace(lr=0.1))


def test_a_folder_left_before_the_run_started_is_cleared_and_a_foreign_one_refused(tmp_path):
    empty = tmp_path / "started"
    (empty / "checkpoints").mkdir(parents=True)
    assert _resumable(empty) is False and not empty.exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not a run directory of this experiment"):
        _resumable(foreign)
    assert (foreign / "notes.txt").exists()
    killed = tmp_path / "killed"
    (killed / "checkpoints").mkdir(parents=True)
    (killed / "checkpoints" / "last.pt").write_bytes(b"x")
    assert _resumable(killed) is True


def test_raw_weights_are_the_last_checkpoints_not_the_average(tmp_path):
    cfg = protocol().replace(width=0.125)
    model = GoogLeNet(cfg.model)
    average = GoogLeNet(cfg.model)
    (tmp_path / "checkpoints").mkdir()
    torch.save({"format": 2, "model": model.state_dict()}, tmp_path / "checkpoints" / "last.pt")
    prep = Preprocessing(28, 28, 28, (0.5,), (0.5,), 1)
    loaded = LoadedModel(average.drop_aux(), prep, [str(i) for i in range(10)],
                         tmp_path)
    raw = measure.raw_weights(tmp_path, loaded)
    for key, value in raw.model.state_dict().items():
        assert torch.equal(value, model.state_dict()[key])
    assert not torch.equal(loaded.model.layers["linear"].weight, model.layers["linear"].weight)


def test_the_linear_probe_separates_what_is_linearly_separable_and_not_noise():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=g) * 3
    y = torch.arange(600) % 3
    x = centres[y] + torch.randn(600, 8, generator=g)
    assert measure.linear_probe(x[:300], y[:300], x[300:], y[300:], 3) > 95
    noise = torch.randn(600, 8, generator=g)
    assert measure.linear_probe(noise[:300], y[:300], noise[300:], y[300:], 3) < 50


# -- claim 3's gradient measurement ---------------------------------------------------------------

# Table 1's rows conv1 .. 4a, named independently of `GoogLeNet.lower_stage_parameters`.
LOWER = ("layers.conv1.", "layers.conv2.", "layers.3a.", "layers.3b.", "layers.4a.")


def _lower(model: GoogLeNet) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if n.startswith(LOWER)]


def _lower_norm(model: GoogLeNet) -> float:
    return math.sqrt(sum(float(p.grad.double().square().sum()) for p in _lower(model)))


@pytest.mark.parametrize("aux", [True, False])
def test_the_recorded_gradient_norm_includes_the_aux_losses(aux):
    cfg = protocol().replace(width=0.125, dropout=0.0, aux_dropout=0.0, precision="fp32",
                             channels_last=False, aux_logits=aux, label_smoothing=0.1)
    torch.manual_seed(0)
    model = GoogLeNet(cfg.model)
    start = copy.deepcopy(model)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))

    optimizer = make_optimizer(model, cfg)
    trainer = Trainer(model, optimizer, make_scheduler(optimizer, cfg, 1), cfg,
                      torch.device("cpu"))
    pos = Position()
    for _ in trainer.steps(iter([(x, y)]), pos):
        pass
    recorded = pos.grad_norm_sum / pos.grad_norm_steps
    assert pos.grad_norm_steps == 1

    # By hand: the main loss alone, and each aux loss alone, on the same starting weights.
    def lower_gradient(loss_of) -> tuple[list[torch.Tensor], GoogLeNet]:
        m = copy.deepcopy(start)
        m.train()
        loss_of(m).backward()
        return [p.grad.clone() for p in _lower(m)], m

    def main_loss(m):
        logits = m.forward_aux(x).logits if aux else m(x)
        return F.cross_entropy(logits, y, label_smoothing=0.1)

    main_grads, m = lower_gradient(main_loss)
    main_norm = _lower_norm(m)
    assert [id(p) for p in m.lower_stage_parameters()] == [id(p) for p in _lower(m)]
    if not aux:
        assert recorded == pytest.approx(main_norm, rel=1e-5)
        return
    aux_grads, _ = lower_gradient(lambda m: sum(
        F.cross_entropy(a, y, label_smoothing=0.1) for a in m.forward_aux(x).aux))
    total = math.sqrt(sum(float((g + 0.3 * a).double().square().sum())
                          for g, a in zip(main_grads, aux_grads, strict=True)))
    assert recorded == pytest.approx(total, rel=1e-5)
    # The aux losses' share is large enough that the main loss alone is clearly not it.
    assert abs(recorded - main_norm) > 1e-3 * main_norm


@pytest.mark.slow
def test_a_run_that_watches_gradients_writes_them_per_epoch(tmp_path, small_fashion_mnist_dir):
    cfg = protocol().replace(subset=256, val_images=128, epochs=2, batch_size=128,
                             eval_batch_size=500)
    train(cfg, out=tmp_path / "run", device="cpu", progress=False,
          data_dir=small_fashion_mnist_dir)
    header, *rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert header.endswith(",lower_grad_norm") and len(rows) == 2
    assert all(float(r.split(",")[-1]) > 0 for r in rows)


# -- the command line ------------------------------------------------------------------------------

def test_cli_refuses_bad_arguments_in_one_line(capsys):
    assert main(["experiment", "dropout", "--seeds", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("inception experiment: error: --seeds must be an integer from 1 to 100; "
                   "got 0 (see inception experiment --help)")
    assert main(["experiment", "dropouts"]) == 2  # not one of the experiments: one line too
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_an_arm_names_its_runs_by_its_changes():
    assert Arm("x").run_name == "paper"
    assert Arm("x", {"module": "naive"}).run_name == "module=naive"
    assert Arm("x", {"b": 1, "a": 2}).run_name == "a=2,b=1"
