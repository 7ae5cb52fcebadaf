"""The experiments that measure trained models rather than train arms: section 4's branches
and Table 3's test-time structure, from the paper's arm of the base regime.

- `branches`: every Inception module's four branches zeroed one at a time at inference on the
  test set (`inception.experiments.branches`), per seed. Its primary metric is the trend with
  depth that section 4 asks for ("the ratio of 3x3 and 5x5 convolutions should increase as we
  move to higher layers"): per model, Spearman's rank correlation between a module's depth
  (3a = 1 .. 5b = 9) and the 3x3 and 5x5 branches' share of the loss the module's branches
  cost when zeroed, per share of the module's channels they have (`loss_share_trend`); tested
  against 0 over the seeds (a model without a finite rho is left out).
- `crops`: Table 3's layout, 1 and 7 models x 1, 10 and 144 crops, each cell's error and cost
  (crops x models), on the first `CROPS_IMAGES` test images (`inception.experiments.crops`).

Both are cached: a run's branch ablation in its `measures.json`, the crop grid in
`OUT/crops/grid.json`. `build_reports` builds every kind of experiment's report and corrects
their primary comparisons together.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from scipy import stats as scipy_stats

from inception.experiments import branches, crops, report
from inception.experiments.claims import Experiment
from inception.experiments.measure import run_splits
from inception.experiments.report import (
    Comparison,
    Report,
    finished_runs,
    read_json,
    wall_minutes,
)
from inception.experiments.runner import (
    cached_measure,
    check_run_config,
    saved_config,
)
from inception.experiments.table import Column, Spread
from inception.files import write_json
from inception.weights import load

CROPS_IMAGES = 2_000  # Table 3's grid: 144 crops x 7 models of every image is the cost
WIDE = ("3x3", "5x5")

log = logging.getLogger(__name__)


def loss_share_trend(result: branches.BranchResult) -> tuple[float, list[float]]:
    """(Spearman's rho between depth and the 3x3 and 5x5 branches' importance per channel, that
    importance per module): their share of the loss the module's branches cost when zeroed one
    at a time, divided by their share of the module's output channels. Table 1 already gives
    them a larger share of the channels higher up; the ratio asks whether the trained network
    relies on them more than their share of channels says. A module whose branches cost nothing
    has no value and is left out; rho is NaN with fewer than three modules left."""
    ratios = []
    for module in result.modules:
        cells = {b: v for b, v in result.loss_increase[module].items() if v is not None}
        total = sum(max(v, 0.0) for v in cells.values())
        design = sum(result.channel_share[module][b] or 0.0 for b in WIDE)
        ratios.append(sum(max(cells[b], 0.0) for b in WIDE if b in cells) / total / design
                      if total > 0 and design > 0 else math.nan)
    kept = [(i + 1, r) for i, r in enumerate(ratios) if math.isfinite(r)]
    if len(kept) < 3:
        return math.nan, ratios
    rho = scipy_stats.spearmanr([d for d, _ in kept], [r for _, r in kept]).statistic
    return float(rho), ratios


def _ablation(run: Path, data_dir: str | None) -> branches.BranchResult:
    def compute() -> dict[str, Any]:
        test = run_splits(saved_config(run), data_dir)[2]
        return branches.branch_ablation(load(run), test.images, test.labels).to_json()

    return branches.BranchResult.from_json(cached_measure(run, "branches", compute))


def branches_report(experiment: Experiment, out: Path, seeds: list[int] | None,
                    data_dir: str | None) -> Report:
    """The branch ablation of every finished seed of the paper's arm, aggregated."""
    runs = _checked_runs(out, experiment, seeds)
    results = {s: _ablation(r, data_dir) for s, r in runs.items()}
    trends = {s: loss_share_trend(r) for s, r in results.items()}
    name = experiment.baseline.name
    column = Column(experiment.primary, {name: {s: t[0] for s, t in trends.items()
                                                if math.isfinite(t[0])}}, digits=3)
    if not column.values[name]:
        raise FileNotFoundError(f"{experiment.name}: no model gives a depth trend (fewer than "
                                "three modules whose branches cost anything)")
    report = Report(experiment, [column])
    summary = branches.aggregate(list(results.values()))
    folder = Path(out) / experiment.name
    folder.mkdir(parents=True, exist_ok=True)
    branches.plot_branches(summary, folder / "plot.png",
                           f"branches zeroed at inference, {len(results)} models")
    report.body = _branch_table(results, trends)
    report.extra.update(runs=len(runs), train_minutes=wall_minutes(runs.values()),
                        branches=summary, shares={str(s): t[1] for s, t in trends.items()})
    report.comparisons = [Comparison(experiment.name, "depth trend", "none (0)",
                                     experiment.primary, Spread.of(list(column.values[name]
                                                                        .values())),
                                     None, "higher")]
    return report


def _checked_runs(out: Path, experiment: Experiment, seeds: list[int] | None
                  ) -> dict[int, Path]:
    """The paper's arm's finished runs, each checked to be this regime's (`check_run_config`)."""
    runs = finished_runs(out, experiment, seeds)[experiment.baseline.name]
    for seed, run in runs.items():
        check_run_config(run, experiment.baseline.config(experiment.base(), seed))
    return runs


def _branch_table(results: dict[int, branches.BranchResult],
                  trends: dict[int, tuple[float, list[float]]]) -> str:
    """Per module: the design's 3x3 + 5x5 share of the output channels, their share of the
    output's energy, and their share of the loss the branches cost per share of channels (mean
    ± sd over the models)."""
    first = next(iter(results.values()))
    lines = ["| module | 3x3 + 5x5 channels (design) | their energy share | their loss share / "
             "channel share |", "|---|---|---|---|"]
    for i, module in enumerate(first.modules):
        design = sum(first.channel_share[module][b] or 0.0 for b in WIDE)
        energy = Spread.of([sum(r.energy_share[module][b] or 0.0 for b in WIDE)
                            for r in results.values()])
        loss = [t[1][i] for t in trends.values() if t[1][i] == t[1][i]]
        loss_text = Spread.of(loss).format(2) if loss else "n/a"
        lines.append(f"| {module} | {design:.2f} | {energy.format(2)} | {loss_text} |")
    return "\n".join(lines)


def crops_report(experiment: Experiment, out: Path, seeds: list[int] | None,
                 data_dir: str | None) -> Report:
    """Table 3's grid from the first 7 finished seeds of the paper's arm (1 model: seed 0)."""
    runs = _checked_runs(out, experiment, seeds)
    paths = [runs[s] for s in sorted(runs)]
    cache = Path(out) / experiment.name / "grid.json"
    key = {"runs": [str(p) for p in paths], "images": CROPS_IMAGES, "crops": [1, 10, 144],
           "data_dir": data_dir}
    grid = read_json(cache)["grid"] if cache.exists() and read_json(cache)["key"] == key \
        else None
    if grid is None:
        grid = crops.crop_grid(paths, crops=(1, 10, 144), models=(1, len(paths)),
                               subset=CROPS_IMAGES, data_dir=data_dir, precision="fp32")
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_json(cache, {"key": key, "grid": grid})
    cells = {f"{c['models']} x {c['crops']}": c["top1_error"] for c in grid}
    report = Report(experiment, [Column(experiment.primary, {"cells": dict(enumerate(
        cells.values()))})])
    report.body = crops.markdown_table(grid)
    report.extra.update(runs=len(paths), train_minutes=wall_minutes(paths), grid=grid,
                        images=CROPS_IMAGES)
    return report


def build_report(experiment: Experiment, out: Path, seeds: list[int] | None = None,
                 data_dir: str | None = None) -> Report:
    """The report of a `branches` or `crops` experiment."""
    if experiment.kind == "branches":
        return branches_report(experiment, out, seeds, data_dir)
    return crops_report(experiment, out, seeds, data_dir)


def build_reports(experiments: list[Experiment], out: Path, seeds: list[int] | None = None,
                  data_dir: str | None = None) -> list[Report]:
    """The reports of every experiment that has finished runs, their primary comparisons
    Holm-corrected together as one family; an experiment without any is left out with a
    warning (all of them without: `FileNotFoundError`)."""
    reports, missing = [], []
    for e in experiments:
        try:
            reports.append(report.build_report(e, out, seeds, data_dir) if e.kind == "ablation"
                           else build_report(e, out, seeds, data_dir))
        except FileNotFoundError as error:
            missing.append(str(error))
    if not reports:
        raise FileNotFoundError("; ".join(missing))
    for text in missing:
        log.warning("%s", text)
    report.correct([c for r in reports for c in r.comparisons])
    return reports
