"""`inception experiment`: the arms, the table's arithmetic, resuming, the gradient measurement."""

import copy
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from inception import distributed
from inception.cli import main
from inception.cost import table1_cost
from inception.experiments import claims, measure, stats, structure
from inception.experiments import report as report_lib
from inception.experiments.claims import EXPERIMENTS, Arm, protocol, select
from inception.experiments.runner import (
    _resumable,
    chosen_lr,
    jobs,
    plan,
    run_dir,
    shape,
    train_arms,
)
from inception.experiments.table import Column, Spread, markdown_table, paired_difference
from inception.model import GoogLeNet
from inception.preprocessing import Preprocessing
from inception.train import train
from inception.train.config import RunError
from inception.train.engine import Position, Trainer
from inception.train.optim import make_optimizer, make_scheduler
from inception.train.run import _start
from inception.weights import LoadedModel

ABLATIONS = [e.name for e in EXPERIMENTS.values() if e.kind == "ablation"]


def _flat(cfg) -> dict:
    d = cfg.to_dict()
    return {**{k: v for k, v in d.items() if k != "model"}, **d["model"]}


@pytest.mark.parametrize("name", ABLATIONS)
def test_each_arm_differs_from_the_papers_in_exactly_its_changes(name):
    experiment = EXPERIMENTS[name]
    base = experiment.base(3)
    paper = _flat(experiment.baseline.config(base, 3))
    for arm in experiment.arms[1:]:
        other = _flat(arm.config(base, 3))
        assert {k for k in paper if paper[k] != other[k]} == set(arm.changes)
        if not arm.changes:  # the same runs, evaluated with other weights
            assert (experiment.baseline.weights, arm.weights) == ("final", "raw")
    assert experiment.baseline.changes == {}
    assert paper["seed"] == 3 and paper["init_by_name"]


def test_the_protocol_has_the_paper_values_the_claims_are_about():
    model = protocol().model
    assert (model.module, model.pool_branch, model.aux_logits, model.aux_weight, model.head,
            model.dropout) == ("reduced", True, True, 0.3, "avgpool", 0.4)
    assert protocol().averaging != "none"


@pytest.mark.parametrize("name", ABLATIONS)
def test_the_layers_two_arms_share_start_from_the_same_weights(name, tmp_path,
                                                                 small_fashion_mnist_dir):
    """What the run itself builds before its first step (`train.run._start`), arm by arm."""
    experiment = EXPERIMENTS[name]
    states = []
    for i, arm in enumerate(experiment.arms):
        cfg = arm.config(experiment.base(), seed=4).replace(subset=512, val_images=256)
        _, _, model = _start(cfg, "fashion-mnist", small_fashion_mnist_dir, tmp_path / str(i),
                             torch.device("cpu"), distributed.SINGLE, fresh=True)
        states.append(model.state_dict())
    paper = states[0]
    for arm, other in zip(experiment.arms[1:], states[1:], strict=True):
        shared = [k for k in other if k in paper and other[k].shape == paper[k].shape]
        weights = [k for k in shared if other[k].dim() > 1]
        assert weights or "width" in arm.changes  # another width shares no weight's shape
        assert [k for k in shared if not torch.equal(other[k], paper[k])] == []
    if name == "aux-heads":  # adding the heads changes none of the main network's weights
        assert set(states[1]) < set(paper) and len(shared) == len(states[1])


def test_a_layers_initial_weights_depend_on_the_seed_and_its_name_only():
    cfg = protocol().model
    a, b = GoogLeNet(cfg, init_seed=1), GoogLeNet(cfg.replace(pool_branch=False), init_seed=1)
    c = GoogLeNet(cfg, init_seed=2)
    name = "layers.3a.branch1.conv.weight"
    assert torch.equal(a.state_dict()[name], b.state_dict()[name])
    assert not torch.equal(a.state_dict()[name], c.state_dict()[name])
    torch.manual_seed(0)
    stream = GoogLeNet(cfg)  # without init_seed: torch's global stream, as it always was
    torch.manual_seed(0)
    assert torch.equal(stream.state_dict()[name], GoogLeNet(cfg).state_dict()[name])


def test_the_paper_heads_regime_gives_the_aux_heads_the_papers_geometry():
    model = GoogLeNet(claims.paper_heads().model).eval()
    shapes = {}
    for tap in ("4a", "4d"):
        model.layers[tap].register_forward_hook(
            lambda m, i, o, tap=tap: shapes.__setitem__(tap, tuple(o.shape[-2:])))
    model(torch.zeros(1, 1, 56, 56))
    assert shapes == {"4a": (14, 14), "4d": (14, 14)}
    for tap in ("4a", "4d"):
        head = model.aux[tap]
        x = torch.ones(1, head.conv.conv.in_channels, 14, 14, requires_grad=True)
        pooled = head.pool(x)
        assert pooled.shape[-2:] == (4, 4)  # the paper's 5x5/3 -> 4x4
        pooled.sum().backward()
        assert bool((x.grad > 0).all())  # every position reaches the head


def test_the_compute_matched_naive_network_costs_what_the_reduced_one_does():
    reduced = table1_cost(protocol().model).total_ops
    naive = protocol().model.replace(module="naive")
    widths = [w / 1000 for w in range(80, 101)]
    best = min(widths, key=lambda w: abs(table1_cost(naive.replace(width=w)).total_ops - reduced))
    assert best == claims.MATCHED_NAIVE_WIDTH
    matched = table1_cost(naive.replace(width=best)).total_ops
    assert abs(matched / reduced - 1) < 0.02


def test_the_declared_regimes_test_what_their_claims_need():
    # Averaging where it can matter: the learning rate at the end is most of the start's, and
    # the running mean covers the second half of the run.
    polyak = claims.polyak()
    assert polyak.schedule == "step" and polyak.lr_step_gamma ** (polyak.epochs - 1) > 0.7
    assert (polyak.averaging, polyak.average_start) == ("polyak", 0.5)
    # Overfitting: far more parameters per training image than the base regime, as many steps.
    over, base = claims.overfitting(), protocol()
    params = table1_cost(over.model).total_params
    assert params / over.subset > 150 and params / base.subset < 40
    assert over.epochs * (over.subset // over.batch_size) <= base.epochs * (
        base.subset // base.batch_size)
    # The LRN variant for the gradient measure has no BatchNorm.
    assert claims.paper_heads_lrn().model.norm == "lrn"


def test_seeds_are_planned_from_the_pilot_spread_and_capped():

    pool = EXPERIMENTS["pool-branch"]
    assert pool.planned_seeds == min(claims.MAX_SEEDS, stats.seeds_to_resolve(0.3, 0.35))
    assert EXPERIMENTS["avg-pool"].planned_seeds == stats.seeds_to_resolve(0.3, 0.15)
    assert all(3 <= e.planned_seeds <= claims.MAX_SEEDS for e in EXPERIMENTS.values())


def test_runs_are_shared_within_a_regime_and_the_grid_comes_first(tmp_path):
    todo = jobs(EXPERIMENTS.values(), tmp_path, [0, 1])
    folders = [j.folder(tmp_path) for j in todo]
    assert len(folders) == len(set(folders))
    grid = [j for j in todo if j.experiment.name == "reductions"]
    assert len(grid) == 3 * len(claims.LR_GRID) and todo[:len(grid)] == grid
    # the grid's run at the regime's own rate is the arm's ordinary run, shared
    assert tmp_path / "runs" / "base" / "paper-seed0" in folders
    assert (tmp_path / "runs" / "base" / "paper-seed1") in folders  # pool-branch's seed 1
    # the reductions arms' later seeds wait for their grid
    assert not any(j.experiment.name == "reductions" and j.seed == 1 for j in todo)


def test_the_plan_lists_every_run_train_arms_trains_before_any_has(tmp_path):
    regime_lr = protocol().lr
    trained = []

    def trainer(cfg, out, **kw):  # every grid chooses the regime's own rate
        trained.append(out)
        out.mkdir(parents=True)
        (out / "config.json").write_text(json.dumps({"train": cfg.to_dict()}))
        (out / "results.json").write_text(json.dumps(
            {"val_top1": 90 if cfg.lr == regime_lr else 10, "test_top1": 1, "wall_s": 1}))

    experiments = select("all")
    train_arms(experiments, tmp_path, device="cpu", progress=False, trainer=trainer,
               threads=torch.get_num_threads())
    planned = [j.folder(tmp_path) for j in plan(experiments)]
    assert sorted(planned) == sorted(trained) and len(set(planned)) == len(planned)
    assert len(planned) == 85  # the planned seeds; docs/claims.md prices them
    # a run's cost depends on all but its seed and learning rate
    base = protocol()
    assert shape(base) == shape(base.replace(seed=7, lr=0.05))
    assert shape(base) != shape(base.replace(epochs=9))


def test_each_run_chooses_its_threads_when_it_starts(tmp_path, monkeypatch):
    """A process busy for a moment when the experiment starts costs that run a thread, not every
    run after it; a resumed run keeps its recorded threads; --threads N holds for every run."""
    from inception.experiments import runner

    tiny = protocol().replace(subset=256, val_images=128, epochs=1)
    monkeypatch.setitem(claims.REGIMES, "base", lambda seed=0: tiny.replace(seed=seed))
    experiment, used = EXPERIMENTS["pool-branch"], []

    def trainer(cfg, out, resume, **kw):
        used.append((cfg.seed, cfg.model.pool_branch, resume, torch.get_num_threads()))
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"train": cfg.to_dict()}))
        (out / "results.json").write_text('{"val_top1": 1, "test_top1": 1, "wall_s": 1}')

    free = iter([(1, 1.0), (2, 0.0), (2, 0.1)])  # free cores seen before each new run
    monkeypatch.setattr(runner, "cpu_threads",  # capped at torch's count, as devices' is
                        lambda: (lambda n, o: (min(n, torch.get_num_threads()), o))(*next(free)))
    started = run_dir(tmp_path, experiment, experiment.arms[1], 1)  # a run killed earlier
    started.mkdir(parents=True)
    (started / "config.json").write_text(json.dumps({"train": {}, "threads": 1}))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train_arms([experiment], tmp_path, [0, 1], progress=False, trainer=trainer)
        assert used == [(0, True, False, 1), (0, False, False, 2), (1, True, False, 2),
                        (1, False, True, 1)]
        assert torch.get_num_threads() == 2  # restored for the reports
        used.clear()
        train_arms([experiment], tmp_path / "other", [0], progress=False, trainer=trainer,
                   threads=1)
        assert [u[3] for u in used] == [1, 1]

        def killed(cfg, **kw):
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            train_arms([experiment], tmp_path / "killed", [0], progress=False, trainer=killed,
                       threads=1)
        assert torch.get_num_threads() == 2  # restored however the runs end
    finally:
        torch.set_num_threads(before)


def test_the_grid_picks_each_arms_best_validation_top1_on_a_seed_of_its_own(tmp_path):
    experiment = EXPERIMENTS["reductions"]
    arm = experiment.arms[1]
    for lr, top1 in zip(claims.LR_GRID, (80.0, 85.5, 85.5, 70.0), strict=True):
        folder = run_dir(tmp_path, experiment, arm, claims.GRID_SEED, lr)
        folder.mkdir(parents=True)
        if lr != 0.4:
            (folder / "results.json").write_text(f'{{"val_top1": {top1}, "test_top1": 1}}')
    assert chosen_lr(tmp_path, experiment, arm) is None  # not every grid run has ended
    (run_dir(tmp_path, experiment, arm, claims.GRID_SEED, 0.4) / "diverged.json").write_text(
        "{}")
    assert chosen_lr(tmp_path, experiment, arm) == 0.1  # a tie goes to the smaller rate
    assert claims.GRID_SEED not in range(experiment.planned_seeds)  # never a compared seed


def test_a_diverged_run_is_recorded_and_the_others_go_on(tmp_path, monkeypatch):
    from inception.train.config import Diverged

    tiny = protocol().replace(subset=256, val_images=128, epochs=1)
    monkeypatch.setitem(claims.REGIMES, "base", lambda seed=0: tiny.replace(seed=seed))
    experiment = EXPERIMENTS["pool-branch"]
    trained = []

    def trainer(cfg, out, **kw):
        trained.append((cfg.seed, cfg.model.pool_branch))
        if not cfg.model.pool_branch and cfg.seed == 1:
            out.mkdir(parents=True)
            (out / "config.json").write_text(json.dumps({"train": cfg.to_dict()}))
            raise Diverged("the loss became nan at step 3")
        out.mkdir(parents=True)
        (out / "config.json").write_text(json.dumps({"train": cfg.to_dict()}))
        (out / "results.json").write_text('{"val_top1": 1, "test_top1": 1, "wall_s": 1}')

    train_arms([experiment], tmp_path, [0, 1, 2], device="cpu", progress=False,
               trainer=trainer, threads=torch.get_num_threads())
    assert len(trained) == 6  # every run was tried
    diverged = run_dir(tmp_path, experiment, experiment.arms[1], 1) / "diverged.json"
    assert "nan at step 3" in json.loads(diverged.read_text())["error"]
    trained.clear()
    train_arms([experiment], tmp_path, [0, 1, 2], device="cpu", progress=False,
               trainer=trainer)
    assert trained == []  # a diverged run has ended: it is not trained again
    report = report_lib.build_report(experiment, tmp_path, [0, 1, 2])
    assert report.comparisons[0].diff.n == 2  # seed 1 has no pair
    assert report.extra["diverged"] == [str(diverged.parent)]
    assert "1 runs diverged" in report.text()
    sessions = json.loads((run_dir(tmp_path, experiment, experiment.arms[0], 0)
                           / "sharing.json").read_text())["sessions"]
    assert len(sessions) == 1 and sessions[0]["threads"] == torch.get_num_threads()
    assert "trained beside other work" in report.text()


def test_a_verdict_follows_the_direction_the_claim_expects():
    up = report_lib.Comparison("branches", "depth trend", "0", "rho",
                               Spread.of([0.5, 0.6, 0.7, 0.55]), None, "higher")
    report_lib.correct([up])
    assert up.verdict() == "for the claim: resolved, above the paper's arm"
    down = report_lib.Comparison("e", "no aux", "aux", "top-1",
                                 Spread.of([0.5, 0.6, 0.7, 0.55]), 0.3, "lower")
    report_lib.correct([down])
    assert down.verdict().startswith("against the claim: resolved, above")
    single = report_lib.Comparison("e", "x", "y", "top-1", Spread.of([1.0]), 0.3, "lower")
    report_lib.correct([single])
    assert single.verdict() == "unresolved (fewer than two seeds)" and single.family == 1


def test_an_unresolved_verdict_names_the_seeds_that_would_settle_it():
    # a large difference at a large spread: equivalence within ±0.5 is out of reach, and the
    # seeds named are those that resolve the difference observed, not one of δ
    far = report_lib.Comparison("e", "naive", "reduced", "top-1", Spread.of([-7.0, -12.0, -18.0]),
                                0.5, "not higher")
    report_lib.correct([far])
    n = stats.seeds_to_resolve(37 / 3, far.diff.std, 0.05 / far.family)  # family: t test, TOST
    assert far.verdict() == (f"unresolved (about {n} seeds would resolve the observed difference "
                             "of 12 at this spread)")
    assert stats.seeds_to_resolve(0.5, far.diff.std, 0.05) is None  # δ itself: beyond 200
    near = report_lib.Comparison("e", "x", "y", "top-1", Spread.of([0.1, -0.2, 0.3, 0.05]), 0.3,
                                 "lower")
    report_lib.correct([near])
    assert "would resolve a difference of 0.3, and about" in near.verdict()
    assert "show one inside ±0.3" in near.verdict()


def test_the_summary_corrects_every_result_json_as_one_family(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "claims_summary", Path(__file__).parents[1] / "scripts" / "claims_summary.py")
    summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summary)
    for name, values in (("pool-branch", [-0.2, -0.3, -0.25, -0.35]),
                         ("dropout", [0.1, -0.1, 0.05, -0.02])):
        c = report_lib.Comparison(name, "other", "paper", "top-1", Spread.of(values), 0.3,
                                  "lower")
        report_lib.correct([c])  # each file corrected alone, as a one-experiment command does
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(json.dumps({"comparisons": [c.to_dict()]}))
    found = summary.comparisons(tmp_path)
    assert {c.family for cs in found.values() for c in cs} == {4}
    rows = summary.rows(tmp_path)
    assert any(r.startswith("| pool-branch |") and "| 4 |" in r for r in rows)
    assert any(r.startswith("| aux-heads |") and "not run yet" in r for r in rows)


def test_the_results_block_is_each_table_md_with_its_plot(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "claims_summary", Path(__file__).parents[1] / "scripts" / "claims_summary.py")
    summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summary)
    (tmp_path / "out" / "dropout").mkdir(parents=True)
    (tmp_path / "out" / "dropout" / "table.md").write_text("## dropout (section 5)\n\n| a |\n")
    (tmp_path / "out" / "dropout" / "plot.png").write_bytes(b"png")
    lines = summary.results(tmp_path / "out", tmp_path / "docs" / "claims")
    assert "### dropout (section 5)" in lines and "| a |" in lines
    assert "![dropout: its plot.png](claims/dropout.png)" in lines
    assert (tmp_path / "docs" / "claims" / "dropout.png").read_bytes() == b"png"
    assert lines[lines.index("### reductions (section 4)") + 2] == "Not run yet."
    page = tmp_path / "claims.md"
    page.write_text(f"head\n{summary.RESULTS[0]}\nold\n{summary.RESULTS[1]}\ntail\n")
    assert summary.replace(page, "new", summary.RESULTS) == (
        f"head\n{summary.RESULTS[0]}\nnew\n{summary.RESULTS[1]}\ntail\n")


def test_the_training_cost_counts_shared_runs_and_prices_each_at_its_arms_quiet_median(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "claims_summary", Path(__file__).parents[1] / "scripts" / "claims_summary.py")
    summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summary)
    # base/paper: quiet runs of 100 s and 200 s, one shared run of 3600 s, one lr-grid run of
    # 300 s (its arm's too), one quiet run of 3000 s on 1 thread; polyak/paper: one run of 60 s
    # with no record
    base = EXPERIMENTS["pool-branch"].base()
    for folder, cfg, wall, busy, threads in (
            ("base/paper-seed0", base, 100, 0.1, 2),
            ("base/paper-seed1", dataclasses.replace(base, seed=1), 200, 0.0, 2),
            ("base/paper-seed2", dataclasses.replace(base, seed=2), 3600, 1.5, 2),
            ("base/paper-seed3", dataclasses.replace(base, seed=3), 3000, 0.0, 1),
            ("base/lr=0.1-seed100", dataclasses.replace(base, seed=100, lr=0.1), 300, 0.2, 2),
            ("polyak/paper-seed0", claims.polyak(), 60, None, None)):
        run = tmp_path / "runs" / folder
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"train": cfg.to_dict()}))
        (run / "results.json").write_text(json.dumps({"wall_s": wall}))
        if busy is not None:
            (run / "sharing.json").write_text(json.dumps(
                {"sessions": [{"wall_s": wall, "cores_busy_elsewhere": busy,
                               "threads": threads}]}))
    # quiet: 5 base runs at the median of 100, 200, 300 (200 s) + the polyak run's own 60 s
    assert summary.cost(tmp_path) == (
        "6 runs, 2.0 hours of wall time in all; 3 trained beside other work, with fewer than 2 "
        "threads or without a record; on a quiet machine (each run at its arm's median quiet "
        f"run) about {1060 / 3600:.1f} hours")


def test_select_refuses_an_unknown_experiment_by_name():
    assert len(select("all")) == len(EXPERIMENTS)
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
    diff = column.differences()["other"]
    comparison = report_lib.Comparison("e", "other", "paper", "top-1", diff, 0.3, "lower")
    report_lib.correct([comparison])
    half = 4.303 * math.sqrt(114 / 72) / math.sqrt(3)
    assert f"[{-5 / 6 - half:+.2f}, {-5 / 6 + half:+.2f}]" in comparison.line()
    assert comparison.verdict().startswith("unresolved (about ")
    clear = Column("top-1", {"paper": {0: 90.0, 1: 91.0, 2: 92.0},
                             "other": {0: 91.0, 1: 92.2, 2: 93.1}})  # +1.0, +1.2, +1.1
    up = report_lib.Comparison("e", "other", "paper", "top-1", clear.differences()["other"],
                               0.3, "lower")
    report_lib.correct([up])
    assert up.verdict() == "against the claim: resolved, above the paper's arm"


def test_holm_corrects_over_the_family_and_equivalence_needs_its_margin():
    def comparison(values, delta=0.3, expect="lower", name="e"):
        return report_lib.Comparison(name, "other", "paper", "top-1", Spread.of(values), delta,
                                     expect)

    alone = comparison([-0.30, -0.25, -0.35, -0.28, -0.2])
    report_lib.correct([alone])
    assert alone.rejected and alone.verdict().startswith("for the claim: resolved, below")
    # The same difference in a family of ten comparisons: Holm's first step (0.05 / 20) may
    # still reject it, but its simultaneous interval is wider than the 95% one.
    family = [comparison([-0.30, -0.25, -0.35, -0.28, -0.2], name="a")] + [
        comparison([0.1, -0.1, 0.2, -0.2, 0.0], name=str(i)) for i in range(9)]
    report_lib.correct(family)
    assert family[0].family == 20  # ten differences and their ten equivalence tests
    assert "simultaneous interval for 20 hypotheses" in family[0].line()
    same = comparison([0.02, -0.03, 0.01, 0.0, -0.01, 0.02, -0.02, 0.01])
    report_lib.correct([same])
    assert same.equivalent and same.verdict() == "against the claim: equivalent within ±0.3"
    no_worse = comparison([0.02, -0.03, 0.01, 0.0, -0.01, 0.02, -0.02, 0.01],
                          expect="not higher")
    report_lib.correct([no_worse])
    assert no_worse.verdict() == "for the claim: equivalent within ±0.3"


def test_a_run_without_a_test_figure_is_refused_not_reported_as_test(tmp_path):
    with pytest.raises(RunError, match="has no test_top1"):
        report_lib.test_top1(tmp_path, {"val_top1": 90.0})
    assert report_lib.test_top1(tmp_path, {"val_top1": 90.0, "test_top1": 89.0}) == 89.0


# -- resuming -------------------------------------------------------------------------------------

class _Killed(Exception):
    pass


def _small(regime):
    small = claims.REGIMES[regime]().replace(subset=256, val_images=128, epochs=2,
                                             batch_size=128, eval_batch_size=500)
    return lambda seed=0: small.replace(seed=seed)


@pytest.mark.slow
def test_an_interrupted_experiment_resumes_without_retraining_finished_arms(
        tmp_path, small_fashion_mnist_dir, monkeypatch):
    for regime in ("paper-heads", "polyak"):
        monkeypatch.setitem(claims.REGIMES, regime, _small(regime))
    experiments = [EXPERIMENTS["aux-heads"], EXPERIMENTS["averaging"]]  # 2 runs per seed
    calls = []

    def killed_in_the_third(cfg, **kw):
        calls.append((cfg.seed, cfg.model.aux_logits, kw["resume"]))
        if len(calls) == 3:  # the third run stops after its first epoch, checkpointed
            train(cfg, stop_after=1, **kw)
            raise _Killed
        return train(cfg, **kw)

    with pytest.raises(_Killed):
        train_arms(experiments, tmp_path, [0, 1], device="cpu", progress=False,
                   data_dir=small_fashion_mnist_dir, trainer=killed_in_the_third)
    finished = [run_dir(tmp_path, experiments[0], arm, 0) for arm in experiments[0].arms]
    before = {p: (p / "model.safetensors").read_bytes() for p in finished}
    stamps = {p: (p / "results.json").stat().st_mtime_ns for p in finished}

    calls.clear()

    def counted(cfg, **kw):
        calls.append((cfg.seed, cfg.model.aux_logits, kw["resume"]))
        return train(cfg, **kw)

    train_arms(experiments, tmp_path, [0, 1], device="cpu", progress=False,
               data_dir=small_fashion_mnist_dir, trainer=counted)
    # Only what was left: seed 0's averaging run (interrupted: resumed), then seed 1's.
    assert calls == [(0, True, True), (1, True, False), (1, False, False), (1, True, False)]
    for p in finished:
        assert (p / "model.safetensors").read_bytes() == before[p]
        assert (p / "results.json").stat().st_mtime_ns == stamps[p]
    resumed = run_dir(tmp_path, experiments[1], experiments[1].arms[0], 0)
    assert len((resumed / "metrics.csv").read_text().splitlines()) == 1 + 2

    # The reports of both experiments from those runs, corrected together.
    aux, averaging = structure.build_reports(experiments, tmp_path, [0, 1],
                                             data_dir=small_fashion_mnist_dir)
    assert [c.name for c in aux.columns] == [
        report_lib.TOP1, report_lib.MAIN_GRADIENT, report_lib.STEP_GRADIENT, report_lib.PROBE,
        report_lib.LOSS_GAP, report_lib.TOP1_GAP]
    assert all(s.n == 2 for c in aux.columns for s in c.spreads().values())
    assert {len(curve) for arm in aux.curves.values() for curve in arm.values()} == {2}
    assert aux.comparisons[0].family == 4  # 2 comparisons, each tested and with a margin
    paths = report_lib.write_report(aux, tmp_path)
    assert [p.name for p in paths] == ["table.md", "result.json", "plot.png"]
    text = paths[0].read_text()
    assert "| no aux heads − aux heads (weight 0.3) | 2 |" in text
    assert "for 4 hypotheses" in text and "Verdict: " in text
    final, raw = averaging.columns[0].values.values()
    assert set(final) == set(raw) == {0, 1}
    # A report refuses runs trained with other settings.
    small_polyak = claims.REGIMES["polyak"]
    monkeypatch.setitem(claims.REGIMES, "polyak",
                        lambda seed=0: small_polyak(seed).replace(lr=0.1))
    with pytest.raises(RunError, match="trained with other settings"):
        report_lib.build_report(experiments[1], tmp_path, [0, 1])


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
                             channels_last=False, aux_logits=aux, label_smoothing=0.1,
                             watch_gradients=True)
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


# -- the command line ------------------------------------------------------------------------------

def test_cli_refuses_bad_arguments_in_one_line(capsys):
    assert main(["experiment", "dropout", "--seeds", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("inception experiment: error: --seeds must be an integer from 1 to 100; "
                   "got 0 (see inception experiment --help)")
    assert main(["experiment", "dropouts"]) == 2  # not one of the experiments: one line too
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_an_arm_names_its_runs_by_its_changes():
    assert Arm("x").run_name() == "paper"
    assert Arm("x", {"module": "naive"}).run_name() == "module=naive"
    assert Arm("x", {"b": 1, "a": 2}).run_name(0.1) == "a=2,b=1,lr=0.1"
