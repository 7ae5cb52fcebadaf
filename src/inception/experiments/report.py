"""An experiment's result from its finished runs: the table, the verdict line, the plot, JSON.

`OUT/<experiment>/` gets `table.md`, `result.json` and `plot.png`. Test top-1 is each run's
`results.json` (evaluated once, at the end of training) except for the averaging experiment,
whose two arms are the same runs evaluated with different weights through `inception eval`'s
path. Measurements are cached per run (`measures.json`) and the side-by-side training speed of
the reductions experiment in `OUT/reductions/cost.json`: delete them to measure again.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from inception.cost import table1_cost
from inception.experiments import measure
from inception.experiments.claims import Arm, Experiment, protocol
from inception.experiments.runner import (
    RESULTS_FILE,
    cached_measure,
    check_run_config,
    read_json,
    run_dir,
    saved_config,
)
from inception.experiments.table import Column, Spread, markdown_table
from inception.files import write_json
from inception.plots import plot_experiment
from inception.train.config import TrainConfig

TOP1 = "test top-1 (%)"
PROBE = "4a linear probe, test top-1 (%)"
GRADIENT = "gradient norm at conv1..4a (mean of epochs)"

# Student's t, two-sided 95%, by degrees of freedom (any statistics table); beyond 30: 2.042,
# t(30), which is above every t of more degrees of freedom.
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
       17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064,
       25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042}


def interval95(diff: Spread) -> tuple[float, float]:
    """The 95% confidence interval of a paired difference's mean (Student's t)."""
    if diff.n < 2:
        return float("-inf"), float("inf")
    half = T95.get(diff.n - 1, 2.0) * diff.std / diff.n ** 0.5
    return diff.mean - half, diff.mean + half


def verdict(column: Column) -> str:
    """Whether the seeds resolve each arm's difference from the paper's arm in `column`: the
    difference's 95% interval excludes 0 or not."""
    lines = []
    for arm, diff in column.differences().items():
        lo, hi = interval95(diff)
        baseline = next(iter(column.values))
        if lo > 0 or hi < 0:
            side = "above" if lo > 0 else "below"
            what = f"resolved: {arm} is {side} {baseline}"
        else:
            what = "not resolved: the interval contains 0"
        lines.append(f"{column.name}, {arm} − {baseline}: {diff.format(signed=True)} over "
                     f"{diff.n} seeds; 95% interval [{lo:+.2f}, {hi:+.2f}] ({what})")
    return "\n".join(lines)


@dataclass
class Report:
    """An experiment's measured columns ({arm: {seed: value}}), the columns measured once per
    arm (`fixed`), the per-epoch curves of claim 3 and anything else `result.json` records."""

    experiment: Experiment
    columns: list[Column]
    fixed: dict[str, dict[str, str]] = field(default_factory=dict)
    curves: dict[str, dict[int, list[float]]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        return markdown_table(self.columns, self.fixed)

    def verdict(self) -> str:
        """One verdict line per arm and per column measured over seeds."""
        return "\n".join(verdict(c) for c in self.columns)

    def text(self) -> str:
        """The Markdown section: the sentence, the table, the verdicts and the cost."""
        e = self.experiment
        runs, minutes = self.extra.get("runs", 0), self.extra.get("train_minutes", 0.0)
        return (f"## {e.name} (section {e.section}, field `{e.field}`)\n\n> {e.sentence}\n\n"
                f"{self.table()}\n\n{self.verdict()}\n\nCost: {runs} training runs, "
                f"{minutes:.1f} minutes of wall time in all (their results.json).\n")

    def to_json(self) -> dict[str, Any]:
        """Every value per seed, the means, spreads and differences, as `result.json` holds."""
        return {"experiment": self.experiment.name, "sentence": self.experiment.sentence,
                "field": self.experiment.field,
                "columns": {c.name: {"values": {a: {str(s): v for s, v in vals.items()}
                                                for a, vals in c.values.items()},
                                     "mean_std": {a: s.to_dict() for a, s in c.spreads().items()},
                                     "differences": {a: d.to_dict()
                                                     for a, d in c.differences().items()}}
                            for c in self.columns},
                "fixed": self.fixed, "curves": self.curves, **self.extra}


def _finished(out: Path, experiment: Experiment, seeds: list[int]) -> dict[str, dict[int, Path]]:
    """{arm: {seed: run}} over the seeds whose runs have finished for every arm, so that each
    arm's row and the paired differences cover the same seeds."""
    runs = {arm.name: {s: run_dir(out, arm, s) for s in seeds} for arm in experiment.arms}
    shared = [s for s in seeds if all((r[s] / RESULTS_FILE).exists() for r in runs.values())]
    if not shared:
        raise FileNotFoundError(f"{experiment.name}: no seed has finished runs of every arm "
                                f"under {out}/runs; run `inception experiment "
                                f"{experiment.name} --out {out}` first")
    return {arm: {s: r[s] for s in shared} for arm, r in runs.items()}


def _top1(run: Path, results: dict[str, Any], arm: Arm, experiment: Experiment,
          data_dir: str | None) -> float:
    if "weights" in experiment.measures:
        return cached_measure(run, f"top1_{arm.weights}",
                              lambda: measure.weights_top1(run, arm.weights, data_dir))
    return results.get("test_top1", results.get("val_top1"))


def build_report(experiment: Experiment, out: Path, seeds: list[int],
                 base: TrainConfig | None = None, data_dir: str | None = None,
                 rate_repeats: int = 7) -> Report:
    """The report of `experiment` from whichever of its runs have finished."""
    base = base or protocol()
    runs = _finished(out, experiment, seeds)
    arms = {arm.name: arm for arm in experiment.arms}
    for arm, done in runs.items():
        for seed, run in done.items():
            check_run_config(run, arms[arm].config(base, seed))
    results = {r: read_json(r / RESULTS_FILE) for done in runs.values() for r in done.values()}
    top1 = Column(TOP1, {a: {s: _top1(r, results[r], arms[a], experiment, data_dir)
                             for s, r in done.items()} for a, done in runs.items()})
    report = Report(experiment, [top1])
    walls = {r: res["wall_s"] for r, res in results.items()}  # a shared run counts once
    report.extra.update(runs=len(walls), train_minutes=round(sum(walls.values()) / 60, 1))
    if "gradients" in experiment.measures:
        report.curves = {a: {s: measure.gradient_curve(r) for s, r in done.items()}
                         for a, done in runs.items()}
        report.columns.append(Column(GRADIENT, {
            a: {s: statistics.fmean(c) for s, c in curves.items()}
            for a, curves in report.curves.items()}, digits=3))
    if "probe" in experiment.measures:
        def probe(run: Path) -> float:
            return cached_measure(run, "probe_top1", lambda: measure.probe_top1(
                run, saved_config(run), data_dir))

        report.columns.append(Column(PROBE, {a: {s: probe(r) for s, r in done.items()}
                                             for a, done in runs.items()}))
    if "cost" in experiment.measures:
        _add_cost(report, out, base, rate_repeats)
    return report


def _add_cost(report: Report, out: Path, base: TrainConfig, repeats: int) -> None:
    """Parameters, multiply-adds and training images/s (measured side by side, cached)."""
    arms = report.experiment.arms
    configs = {a.name: a.config(base, 0) for a in arms}
    reports = {name: table1_cost(cfg.model) for name, cfg in configs.items()}
    costs = {name: {"params": r.total_params, "macs": r.total_ops} for name, r in reports.items()}
    path = Path(out) / report.experiment.name / "cost.json"
    if path.exists():
        rates = read_json(path)["training_images_per_s"]
    else:
        rates = measure.training_rates(configs, repeats=repeats)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {"training_images_per_s": rates, "repeats": repeats,
                          "batch": base.batch_size, "threads": torch.get_num_threads()})
    first = arms[0].name
    report.fixed = {
        "params": {a: f"{c['params'] / 1e6:.2f}M" for a, c in costs.items()},
        "multiply-adds / image": {a: f"{c['macs'] / 1e6:.1f}M" for a, c in costs.items()},
        "training img/s (side by side)": {
            a: f"{r:.0f} ({r / rates[first]:.2f}x)" for a, r in rates.items()},
    }
    report.extra["cost"] = {"network": costs, "training_images_per_s": rates}


def write_report(report: Report, out: Path) -> list[Path]:
    """`OUT/<name>/table.md`, `result.json` and `plot.png`."""
    folder = Path(out) / report.experiment.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "table.md").write_text(report.text())
    write_json(folder / "result.json", report.to_json())
    plot = plot_experiment(folder / "plot.png",
                           f"{report.experiment.name}: {report.experiment.field}",
                           {c.name: dict(c.values) for c in report.columns},
                           report.curves, GRADIENT.split(" (")[0])
    return [folder / "table.md", folder / "result.json", plot]
