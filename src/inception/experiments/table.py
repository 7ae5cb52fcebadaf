"""The arithmetic of an experiment's table: means and spreads over seeds, paired differences.

Spreads are sample standard deviations (n - 1 in the denominator; 0 for a single seed). The
difference between an arm and the baseline is taken seed by seed (the two runs of one seed share
their data order, and their initial weights where both build the same layers in the same order)
and then averaged, with the standard deviation of those paired differences as its spread.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    """The mean and sample standard deviation of `n` values."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """The spread of `values` (at least one)."""
        if not values:
            raise ValueError("no values: every arm needs at least one finished seed")
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), std, len(values))

    def format(self, digits: int = 2, signed: bool = False) -> str:
        """"mean ± std" with `digits` decimals (and the mean's sign when `signed`)."""
        sign = "+" if signed else ""
        return f"{self.mean:{sign}.{digits}f} ± {self.std:.{digits}f}"

    def to_dict(self) -> dict[str, float | int]:
        """{"mean", "std", "n"}, for JSON."""
        return {"mean": self.mean, "std": self.std, "n": self.n}


def paired_difference(baseline: Mapping[int, float], arm: Mapping[int, float]) -> Spread:
    """`arm - baseline` seed by seed, over the seeds both have."""
    seeds = sorted(set(baseline) & set(arm))
    if not seeds:
        raise ValueError("the two arms share no seed")
    return Spread.of([arm[s] - baseline[s] for s in seeds])


@dataclass(frozen=True)
class Column:
    """One measured quantity of every arm: {arm name: {seed: value}}, the first arm the
    baseline."""

    name: str
    values: Mapping[str, Mapping[int, float]]
    digits: int = 2

    def spreads(self) -> dict[str, Spread]:
        """Each arm's mean and spread over its seeds."""
        return {arm: Spread.of([v[s] for s in sorted(v)]) for arm, v in self.values.items()}

    def differences(self) -> dict[str, Spread]:
        """Each arm after the first against the first (the paper's)."""
        arms = list(self.values)
        return {arm: paired_difference(self.values[arms[0]], self.values[arm])
                for arm in arms[1:]}


def markdown_table(columns: Sequence[Column], fixed: Mapping[str, Mapping[str, str]] | None = None
                   ) -> str:
    """One row per arm (mean ± std over seeds and the seed count) and a row per difference
    against the paper's arm (paired by seed, mean ± std); `fixed` adds columns measured once
    per arm (e.g. parameters), {column: {arm: text}}."""
    fixed = fixed or {}
    arms = list(columns[0].values)
    header = ["arm", "seeds", *(c.name for c in columns), *fixed]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    spreads = [c.spreads() for c in columns]
    for arm in arms:
        cells = [arm, str(spreads[0][arm].n),
                 *(s[arm].format(c.digits) for s, c in zip(spreads, columns, strict=True)),
                 *(f[arm] for f in fixed.values())]
        lines.append("| " + " | ".join(cells) + " |")
    diffs = [c.differences() for c in columns]
    for arm in arms[1:]:
        cells = [f"{arm} − {arms[0]}", str(diffs[0][arm].n),
                 *(d[arm].format(c.digits, signed=True) for d, c in zip(diffs, columns,
                                                                        strict=True)),
                 *("" for _ in fixed)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
