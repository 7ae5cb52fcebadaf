"""An experiment's result from its finished runs: the table, the verdicts, the plot, JSON.

`OUT/<experiment>/` gets `table.md`, `result.json` and `plot.png`. Test top-1 is each run's
`results.json` (evaluated once, at the end of training; a run without a test figure is refused)
except for the averaging experiment, whose two arms are the same runs evaluated with different
weights through `inception eval`'s path. Measurements are cached per run (`measures.json`) and
the side-by-side training speed of the reductions experiment in `OUT/reductions/cost.json`:
delete them to measure again.

Verdicts (`Comparison`): each claim's primary metric, arm minus the paper's arm, paired by seed;
the paired t test of no difference and, where the claim names a margin δ, the two one-sided
tests of a difference inside ±δ, both Holm-corrected over every primary comparison reported
together (`correct`). Other columns are secondary: their 95% intervals are not corrected.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from inception.cost import table1_cost
from inception.experiments import measure, stats
from inception.experiments.claims import Arm, Experiment
from inception.experiments.runner import (
    RESULTS_FILE,
    cached_measure,
    check_run_config,
    chosen_lr,
    read_json,
    run_dir,
    saved_config,
    seeds_of,
)
from inception.experiments.table import Column, Spread, markdown_table
from inception.files import write_json
from inception.plots import plot_experiment
from inception.train.config import RunError

TOP1 = "test top-1 (%)"
PROBE = "4a linear probe, test top-1 (%)"
MAIN_GRADIENT = "main-loss gradient at conv1..4a / above"
STEP_GRADIENT = "training-step gradient at conv1..4a"
LOSS_GAP = "gap: val − train loss"
TOP1_GAP = "gap: train − val top-1 (points)"
ALPHA = 0.05


@dataclass
class Comparison:
    """One arm against the paper's arm in the primary metric: the paired difference, the margin
    δ named in advance (or None), which way the claim expects it, and, once `correct` has seen
    the whole family, the Holm decisions and the family's size."""

    experiment: str
    arm: str
    baseline: str
    metric: str
    diff: Spread
    delta: float | None
    expect: str
    rejected: bool = False
    equivalent: bool = False
    family: int = 1

    @property
    def key(self) -> str:
        return f"{self.experiment}: {self.arm}"

    def p(self) -> float:
        return stats.paired_t_p(self.diff.mean, self.diff.std, self.diff.n)

    def tost_p(self) -> float | None:
        if self.delta is None:
            return None
        return stats.equivalence_p(self.diff.mean, self.diff.std, self.diff.n, self.delta)

    def verdict(self) -> str:
        """for / against / equivalent within ±δ / unresolved (with the seeds it would take)."""
        d = self.diff
        if self.rejected:
            above = d.mean > 0
            supports = above if self.expect == "higher" else not above
            side = "above" if above else "below"
            return f"{'for' if supports else 'against'} the claim: resolved, {side} the paper's arm"
        if self.equivalent:
            word = "for" if self.expect == "not higher" else "against"
            return f"{word} the claim: equivalent within ±{self.delta:g}"
        effect = self.delta if self.delta is not None else abs(d.mean)
        need = stats.seeds_to_resolve(effect, d.std, ALPHA / self.family) if d.std > 0 else None
        more = (f"about {need} seeds would resolve a difference of {effect:.2g} at this spread"
                if need else "more seeds than the budget allows would be needed")
        return f"unresolved ({more})"

    def line(self) -> str:
        d = self.diff
        lo, hi = stats.interval(d.mean, d.std, d.n)
        clo, chi = stats.interval(d.mean, d.std, d.n, 1 - ALPHA / self.family)
        margin = f"; margin ±{self.delta:g}" if self.delta is not None else ""
        return (f"**{self.metric}, {self.arm} − {self.baseline}: {d.format(signed=True)} over "
                f"{d.n} seeds; 95% interval [{lo:+.2f}, {hi:+.2f}]; corrected for {self.family} "
                f"comparisons [{clo:+.2f}, {chi:+.2f}]{margin}. Verdict: {self.verdict()}.**")

    def to_dict(self) -> dict[str, Any]:
        return {"arm": self.arm, "metric": self.metric, "difference": self.diff.to_dict(),
                "delta": self.delta, "expect": self.expect, "p": self.p(),
                "tost_p": self.tost_p(), "holm_rejected": self.rejected,
                "holm_equivalent": self.equivalent, "family": self.family,
                "verdict": self.verdict()}


def correct(comparisons: list[Comparison], alpha: float = ALPHA) -> None:
    """Holm over the family: the t tests of no difference, and the equivalence tests of those
    comparisons that name a margin (each family at `alpha`)."""
    rejected = stats.holm({c.key: c.p() for c in comparisons}, alpha)
    equivalent = stats.holm({c.key: c.tost_p() for c in comparisons if c.delta is not None},
                            alpha)
    for c in comparisons:
        c.rejected, c.equivalent = rejected[c.key], equivalent.get(c.key, False)
        c.family = len(comparisons)


def secondary_line(column: Column) -> str:
    """Each arm's difference in a secondary column with its uncorrected 95% interval."""
    lines = []
    baseline = next(iter(column.values))
    for arm, d in column.differences().items():
        lo, hi = stats.interval(d.mean, d.std, d.n)
        lines.append(f"{column.name}, {arm} − {baseline}: {d.format(column.digits, signed=True)}"
                     f" over {d.n} seeds; 95% interval [{lo:+.3g}, {hi:+.3g}] (secondary, "
                     "uncorrected)")
    return "\n".join(lines)


@dataclass
class Report:
    """An experiment's measured columns ({arm: {seed: value}}, the primary first), the columns
    measured once per arm (`fixed`), per-epoch curves, the primary comparisons and anything else
    `result.json` records."""

    experiment: Experiment
    columns: list[Column]
    fixed: dict[str, dict[str, str]] = field(default_factory=dict)
    curves: dict[str, dict[int, list[float]]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    comparisons: list[Comparison] = field(default_factory=list)
    body: str = ""  # Markdown of another kind of experiment (branches, crops)

    def table(self) -> str:
        return markdown_table(self.columns, self.fixed) if self.columns[0].differences() else ""

    def text(self) -> str:
        """The Markdown section: the sentence, the plan, the table, the verdicts and the cost."""
        e = self.experiment
        runs, minutes = self.extra.get("runs", 0), self.extra.get("train_minutes", 0.0)
        verdicts = "\n\n".join(c.line() for c in self.comparisons)
        secondary = "\n".join(secondary_line(c) for c in self.columns[1:]
                              if len(c.values) > 1)
        margin = f"margin ±{e.delta:g}" if e.delta is not None else "no margin"
        plan = (f"Regime `{e.regime}`; primary metric: {e.primary}; {margin}; "
                f"{e.planned_seeds} seeds planned.")
        parts = [f"## {e.name} (section {e.section})", f"> {e.sentence}", plan, self.table(),
                 self.body, verdicts, secondary,
                 f"Cost: {runs} training runs, {minutes:.1f} minutes of wall time in all "
                 "(their results.json)."]
        return "\n\n".join(p for p in parts if p) + "\n"

    def to_json(self) -> dict[str, Any]:
        """Every value per seed, the means, spreads, differences and verdicts."""
        e = self.experiment
        return {"experiment": e.name, "sentence": e.sentence, "regime": e.regime,
                "primary": e.primary, "delta": e.delta, "planned_seeds": e.planned_seeds,
                "columns": {c.name: {"values": {a: {str(s): v for s, v in vals.items()}
                                                for a, vals in c.values.items()},
                                     "mean_std": {a: s.to_dict() for a, s in c.spreads().items()},
                                     "differences": {a: d.to_dict()
                                                     for a, d in c.differences().items()}}
                            for c in self.columns},
                "comparisons": [c.to_dict() for c in self.comparisons],
                "fixed": self.fixed, "curves": self.curves, **self.extra}


def finished_runs(out: Path, experiment: Experiment, seeds: list[int] | None = None
                  ) -> dict[str, dict[int, Path]]:
    """{arm: {seed: run}} over the seeds whose runs have finished for every arm (at the arm's
    chosen learning rate), so that each arm's row and the paired differences cover the same
    seeds."""
    runs = {}
    for arm in experiment.arms:
        lr = chosen_lr(out, experiment, arm)
        if experiment.lr_grid is not None and lr is None:
            runs[arm.name] = {}
            continue
        runs[arm.name] = {s: run_dir(out, experiment, arm, s, lr)
                          for s in seeds_of(experiment, seeds)}
    shared = [s for s in seeds_of(experiment, seeds)
              if all(s in r and (r[s] / RESULTS_FILE).exists() for r in runs.values())]
    if not shared:
        raise FileNotFoundError(f"{experiment.name}: no seed has finished runs of every arm "
                                f"under {out}/runs; run `inception experiment "
                                f"{experiment.name} --out {out}` first")
    return {arm: {s: r[s] for s in shared} for arm, r in runs.items()}


def test_top1(run: Path, results: dict[str, Any]) -> float:
    """The run's test top-1; a run that evaluated no test set is refused (its validation figure
    is not a test figure)."""
    if "test_top1" not in results:
        raise RunError(f"{run}/results.json has no test_top1 (the run held out no validation "
                       "split, so its final figure is not a test figure); train it again")
    return results["test_top1"]


def _top1(run: Path, results: dict[str, Any], arm: Arm, experiment: Experiment,
          data_dir: str | None) -> float:
    if "weights" in experiment.measures:
        return cached_measure(run, f"top1_{arm.weights}",
                              lambda: measure.weights_top1(run, arm.weights, data_dir))
    return test_top1(run, results)


def build_report(experiment: Experiment, out: Path, seeds: list[int] | None = None,
                 data_dir: str | None = None, rate_repeats: int = 7) -> Report:
    """The report of an ablation from whichever of its runs have finished (its comparisons
    corrected within this one experiment; `correct` a family of several)."""
    runs = finished_runs(out, experiment, seeds)
    arms = {arm.name: arm for arm in experiment.arms}
    for arm, done in runs.items():
        lr = chosen_lr(out, experiment, arms[arm])
        for seed, run in done.items():
            check_run_config(run, arms[arm].config(experiment.base(), seed, lr))
    results = {r: read_json(r / RESULTS_FILE) for done in runs.values() for r in done.values()}
    top1 = Column(TOP1, {a: {s: _top1(r, results[r], arms[a], experiment, data_dir)
                             for s, r in done.items()} for a, done in runs.items()})
    report = Report(experiment, [top1])
    walls = {r: res["wall_s"] for r, res in results.items()}  # a shared run counts once
    report.extra.update(runs=len(walls), train_minutes=round(sum(walls.values()) / 60, 1),
                        learning_rates={a: chosen_lr(out, experiment, arms[a])
                                        for a in runs})
    _add_measures(report, runs, data_dir)
    if "cost" in experiment.measures:
        _add_cost(report, out, rate_repeats)
    primary = next(c for c in report.columns if c.name == experiment.primary)
    report.columns = [primary, *(c for c in report.columns if c is not primary)]
    report.comparisons = [
        Comparison(experiment.name, arm, experiment.baseline.name, primary.name, diff,
                   experiment.delta, arms[arm].expect)
        for arm, diff in primary.differences().items()]
    correct(report.comparisons)
    return report


def _add_measures(report: Report, runs: dict[str, dict[int, Path]],
                  data_dir: str | None) -> None:
    """The columns an experiment measures besides test top-1 (`Experiment.measures`)."""
    measures = report.experiment.measures

    def column(name: str, value, digits: int = 2) -> Column:
        return Column(name, {a: {s: value(r) for s, r in done.items()}
                             for a, done in runs.items()}, digits=digits)

    if "gradients" in measures:
        report.curves = {a: {s: measure.gradient_curve(r) for s, r in done.items()}
                         for a, done in runs.items()}
        report.columns.append(Column(MAIN_GRADIENT, {
            a: {s: statistics.fmean(c) for s, c in curves.items()}
            for a, curves in report.curves.items()}, digits=3))
        report.columns.append(column(STEP_GRADIENT, lambda r: statistics.fmean(
            measure.gradient_curve(r, "lower_grad_norm")), 3))
    if "probe" in measures:
        report.columns.append(column(PROBE, lambda r: cached_measure(
            r, "probe_top1", lambda: measure.probe_top1(r, saved_config(r), data_dir))))
    if "gap" in measures:
        def gap(r: Path) -> dict[str, float]:
            return cached_measure(r, "gap", lambda: measure.generalization_gap(
                r, saved_config(r), data_dir))

        report.columns.append(column(LOSS_GAP, lambda r: gap(r)["loss_gap"], 3))
        report.columns.append(column(TOP1_GAP, lambda r: gap(r)["top1_gap"]))


def _add_cost(report: Report, out: Path, repeats: int) -> None:
    """Parameters, multiply-adds and training images/s (measured side by side, cached)."""
    experiment = report.experiment
    configs = {a.name: a.config(experiment.base(), 0) for a in experiment.arms}
    reports = {name: table1_cost(cfg.model) for name, cfg in configs.items()}
    costs = {name: {"params": r.total_params, "macs": r.total_ops} for name, r in reports.items()}
    path = Path(out) / experiment.name / "cost.json"
    if path.exists():
        rates = read_json(path)["training_images_per_s"]
    else:
        rates = measure.training_rates(configs, repeats=repeats)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {"training_images_per_s": rates, "repeats": repeats,
                          "batch": experiment.base().batch_size,
                          "threads": torch.get_num_threads()})
    first = experiment.arms[0].name
    report.fixed = {
        "params": {a: f"{c['params'] / 1e6:.2f}M" for a, c in costs.items()},
        "multiply-adds / image": {a: f"{c['macs'] / 1e6:.1f}M" for a, c in costs.items()},
        "training img/s (side by side)": {
            a: f"{r:.0f} ({r / rates[first]:.2f}x)" for a, r in rates.items()},
    }
    report.extra["cost"] = {"network": costs, "training_images_per_s": rates}


def write_report(report: Report, out: Path) -> list[Path]:
    """`OUT/<name>/table.md`, `result.json` and `plot.png` (unless the report drew its own)."""
    folder = Path(out) / report.experiment.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "table.md").write_text(report.text())
    write_json(folder / "result.json", report.to_json())
    plot = folder / "plot.png"
    if report.experiment.kind == "ablation":
        plot_experiment(plot, f"{report.experiment.name} ({report.experiment.regime})",
                        {c.name: dict(c.values) for c in report.columns}, report.curves,
                        MAIN_GRADIENT)
    return [folder / "table.md", folder / "result.json", plot]

