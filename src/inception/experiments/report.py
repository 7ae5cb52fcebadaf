"""An experiment's result from its finished runs: the table, the verdicts, the plot, JSON.

`OUT/<experiment>/` gets `table.md`, `result.json` and `plot.png`. Test top-1 is each run's
`results.json` (evaluated once, at the end of training; a run without a test figure is refused)
except for the averaging experiment, whose two arms are the same runs evaluated with different
weights through `inception eval`'s path. Measurements are cached per run (`measures.json`) and
the side-by-side training speed of the reductions experiment in `OUT/reductions/cost.json`:
delete them to measure again.

Verdicts (`Comparison`): each claim's primary metric, arm minus the paper's arm, paired by seed;
the paired t test of no difference and, where the claim names a margin δ, the two one-sided
tests of a difference inside ±δ, all in one Holm family over every primary comparison reported
together (`correct`; `scripts/claims_summary.py` corrects the whole set of `result.json`
files). Other columns are secondary: their 95% intervals are not corrected.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from inception.cost import table1_cost
from inception.experiments import measure, stats
from inception.experiments.claims import OVERFITTING_LOSS_GAP, Arm, Experiment
from inception.experiments.runner import (
    DIVERGED_FILE,
    RESULTS_FILE,
    cached_measure,
    check_run_config,
    chosen_lr,
    read_json,
    run_dir,
    saved_config,
    seeds_of,
    shared_cores,
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
SHARED_CORES = 0.25  # a run trained "beside other work" when others took more than this


@dataclass
class Comparison:
    """One arm against the paper's arm in the primary metric: the paired difference, the margin
    δ named in advance (or None), which way the claim expects it, and, once `correct` has seen
    the whole family, the Holm-adjusted p-values, the decisions and the family's size."""

    experiment: str
    arm: str
    baseline: str
    metric: str
    diff: Spread
    delta: float | None
    expect: str
    p_adjusted: float = 1.0
    tost_adjusted: float | None = None
    family: int = 1

    @property
    def key(self) -> str:
        return f"{self.experiment}: {self.arm}"

    @property
    def testable(self) -> bool:
        """At least two seeds and a finite difference: something a t test can take."""
        return self.diff.n >= 2 and math.isfinite(self.diff.mean) and math.isfinite(
            self.diff.std)

    def p(self) -> float:
        return stats.paired_t_p(self.diff.mean, self.diff.std, self.diff.n)

    def tost_p(self) -> float | None:
        if self.delta is None:
            return None
        return stats.equivalence_p(self.diff.mean, self.diff.std, self.diff.n, self.delta)

    @property
    def rejected(self) -> bool:
        """Holm rejects "no difference" (family-wise 5%)."""
        return self.p_adjusted < ALPHA

    @property
    def equivalent(self) -> bool:
        """Holm rejects "a difference of δ or more" (TOST, in the same family)."""
        return self.tost_adjusted is not None and self.tost_adjusted < ALPHA

    def verdict(self) -> str:
        """for / against / equivalent within ±δ / unresolved (with the seeds it would take).
        Equivalence comes first: a resolved difference inside ±δ is one the claim's margin
        calls negligible."""
        d = self.diff
        if self.equivalent:
            word = "for" if self.expect == "not higher" else "against"
            small = "; a difference is resolved but smaller than δ" if self.rejected else ""
            return f"{word} the claim: equivalent within ±{self.delta:g}{small}"
        if self.rejected:
            above = d.mean > 0
            supports = above if self.expect == "higher" else not above
            side = "above" if above else "below"
            return f"{'for' if supports else 'against'} the claim: resolved, {side} the paper's arm"
        if not self.testable:
            return "unresolved (fewer than two seeds)"
        return f"unresolved ({self.seeds_needed()})"

    def seeds_needed(self) -> str:
        """What more seeds would settle, at the spread observed and the family's strictest level
        (5%/m, power 0.8): the observed difference when it is δ or larger (or no δ is named),
        else a difference of δ and equivalence within ±δ."""
        d, level, most = self.diff, ALPHA / self.family, 200
        if d.std <= 0:
            return "the paired differences do not vary: no seed count settles it"

        def count(n: int | None) -> str:
            return f"about {n}" if n else f"more than {most}"

        if self.delta is None or abs(d.mean) >= self.delta:
            n = stats.seeds_to_resolve(abs(d.mean), d.std, level, max_n=most)
            return (f"{count(n)} seeds would resolve the observed difference of "
                    f"{abs(d.mean):.2g} at this spread")
        n = stats.seeds_to_resolve(self.delta, d.std, level, max_n=most)
        eq = stats.seeds_for_equivalence(self.delta, d.std, d.mean, level, max_n=most)
        return (f"{count(n)} seeds would resolve a difference of {self.delta:g}, and "
                f"{count(eq)} show one inside ±{self.delta:g}, at this spread")

    def line(self) -> str:
        d = self.diff
        lo, hi = stats.interval(d.mean, d.std, d.n)
        blo, bhi = stats.interval(d.mean, d.std, d.n, 1 - ALPHA / self.family)
        margin = f"; margin ±{self.delta:g}" if self.delta is not None else ""
        tost = (f", equivalence {self.tost_adjusted:.3g}" if self.tost_adjusted is not None
                else "")
        return (f"**{self.metric}, {self.arm} − {self.baseline}: {d.format(signed=True)} over "
                f"{d.n} seeds; 95% interval [{lo:+.2f}, {hi:+.2f}]; simultaneous interval for "
                f"{self.family} hypotheses [{blo:+.2f}, {bhi:+.2f}]{margin}; Holm-adjusted p: "
                f"difference {self.p_adjusted:.3g}{tost}. Verdict: {self.verdict()}.**")

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "arm": self.arm, "baseline": self.baseline,
                "metric": self.metric, "difference": self.diff.to_dict(), "delta": self.delta,
                "expect": self.expect, "p": self.p(), "tost_p": self.tost_p(),
                "p_adjusted": self.p_adjusted, "tost_adjusted": self.tost_adjusted,
                "family": self.family, "verdict": self.verdict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Comparison:
        """A comparison read back from `result.json` (to be corrected in another family)."""
        d = data["difference"]
        return cls(data["experiment"], data["arm"], data["baseline"], data["metric"],
                   Spread(d["mean"], d["std"], d["n"]), data["delta"], data["expect"])


def correct(comparisons: list[Comparison]) -> None:
    """Holm over one family holding every comparison's test of no difference and, where it
    names a margin, its equivalence test (TOST): the family-wise error rate of all the verdicts
    together is 5%. A comparison without two seeds stays out (p = 1)."""
    p_values = {}
    for c in comparisons:
        if c.testable:
            p_values[f"{c.key} (difference)"] = c.p()
            if c.delta is not None:
                p_values[f"{c.key} (equivalence)"] = c.tost_p()
    adjusted = stats.holm_adjusted(p_values) if p_values else {}
    for c in comparisons:
        c.p_adjusted = adjusted.get(f"{c.key} (difference)", 1.0)
        c.tost_adjusted = adjusted.get(f"{c.key} (equivalence)",
                                       None if c.delta is None else 1.0)
        c.family = max(1, len(p_values))


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
        diverged = self.extra.get("diverged") or []
        notes = [self.extra.get("regime_check", ""),
                 f"{len(diverged)} runs diverged (loss NaN or infinite) and are left out: "
                 + ", ".join(diverged) if diverged else ""]
        shared = self.extra.get("shared_cores") or {}
        beside = sum(1 for c in shared.values() if c is not None and c > SHARED_CORES)
        unknown = sum(1 for c in shared.values() if c is None)
        parts = [f"## {e.name} (section {e.section})", f"> {e.sentence}", plan, self.table(),
                 self.body, verdicts, secondary, *notes,
                 f"Cost: {runs} training runs, {minutes:.1f} minutes of wall time in all "
                 f"(their results.json); {beside} of them trained beside other work (more "
                 f"than {SHARED_CORES:g} cores busy elsewhere), {unknown} without a record "
                 "(sharing.json)."]
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


def diverged_runs(out: Path, experiment: Experiment, seeds: list[int] | None) -> list[str]:
    """The runs of the experiment's seeds whose loss became NaN or infinite: left out of the
    paired comparison (their seed has no pair), listed in the report."""
    found = []
    for arm in experiment.arms:
        lr = chosen_lr(out, experiment, arm)
        found += [str(run_dir(out, experiment, arm, s, lr)) for s in seeds_of(experiment, seeds)
                  if (run_dir(out, experiment, arm, s, lr) / DIVERGED_FILE).exists()]
    return found


def overfitting_check(report: Report) -> str:
    """Whether the `overfitting` regime did overfit: the paper's arm's mean loss gap against
    the threshold declared with the regime (`claims.OVERFITTING_LOSS_GAP`)."""
    gaps = next(c for c in report.columns if c.name == LOSS_GAP).spreads()
    gap = gaps[report.experiment.baseline.name].mean
    met = "met" if gap > OVERFITTING_LOSS_GAP else "NOT met"
    return (f"Regime check, declared in advance: the paper's arm overfits (validation minus "
            f"training loss above {OVERFITTING_LOSS_GAP:g}): {gap:.3f}, {met}.")


def wall_minutes(runs: Iterable[Path]) -> float:
    """The runs' training wall time in all (their `results.json`), in minutes; each distinct
    run counts once, however many arms share it."""
    return round(statistics.fsum(read_json(Path(r) / RESULTS_FILE)["wall_s"]
                                 for r in set(runs)) / 60, 1)


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
    report.extra.update(runs=len(results), train_minutes=wall_minutes(results),
                        learning_rates={a: chosen_lr(out, experiment, arms[a])
                                        for a in runs})
    _add_measures(report, runs, data_dir)
    if "cost" in experiment.measures:
        _add_cost(report, out, rate_repeats)
    report.extra["diverged"] = diverged_runs(out, experiment, seeds)
    report.extra["shared_cores"] = {str(r): shared_cores(r) for r in results}
    if experiment.regime == "overfitting":
        report.extra["regime_check"] = overfitting_check(report)
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
            return cached_measure(r, f"gap{measure.GAP_IMAGES}", lambda: (
                measure.generalization_gap(r, saved_config(r), data_dir)))

        report.columns.append(column(LOSS_GAP, lambda r: gap(r)["loss_gap"], 3))
        report.columns.append(column(TOP1_GAP, lambda r: gap(r)["top1_gap"]))


def _add_cost(report: Report, out: Path, repeats: int) -> None:
    """Parameters, multiply-adds and training images/s (measured side by side, cached)."""
    experiment = report.experiment
    configs = {a.name: a.config(experiment.base(), 0) for a in experiment.arms}
    reports = {name: table1_cost(cfg.model) for name, cfg in configs.items()}
    costs = {name: {"params": r.total_params, "macs": r.total_ops} for name, r in reports.items()}
    path = Path(out) / experiment.name / "cost.json"
    cached = read_json(path)["training_images_per_s"] if path.exists() else {}
    if set(cached) == set(configs):
        rates = cached
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
    return [p for p in (folder / "table.md", folder / "result.json", plot) if p.exists()]

