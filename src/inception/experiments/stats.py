"""The statistics of an experiment's comparison: two arms, paired seed by seed.

Each experiment trains its arms on the same seeds, and what it reports is the paired
difference, arm minus the paper's arm, per seed (e.g. test top-1 in points): its mean, its sample
standard deviation `std` (n - 1 in the denominator) and the seed count `n`. Everything here takes
those three numbers, as `inception.experiments.table.Spread` holds them, and assumes the paired
differences are independent draws from a normal distribution.

- Difference: `interval` (exact Student t with n - 1 degrees of freedom, not 2.0 beyond a table's
  end) and `paired_t_p`, the two-sided one-sample t test of a zero mean.
- Equivalence: `equivalence` and `equivalence_p`, the two one-sided tests (TOST) of a difference
  inside (-delta, +delta), for claims that a change does *not* matter.
- Several tests in one family (the columns and arms of one experiment, or all experiments):
  `holm` and `holm_adjusted`, the Holm-Bonferroni step-down, which holds the family-wise error
  rate at alpha without the independence the tests do not have (they share seeds).
- Planning: `seeds_to_resolve` and `seeds_for_equivalence`, the fewest seeds that give a test the
  wanted power, from the exact power of the t test (`t_test_power`, noncentral t) and of TOST
  (`tost_power`).

Distributions come from `scipy.stats`; nothing here re-derives a quantile or a tail.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from scipy import integrate, stats


def t_quantile(p: float, df: int) -> float:
    """The `p` quantile of Student's t with `df` degrees of freedom (exact, from scipy), e.g.
    t_quantile(0.975, 2) = 4.303: the critical value of a two-sided 95% interval from 3 seeds.
    """
    if df < 1:
        raise ValueError(f"Student's t needs at least 1 degree of freedom, got {df}")
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile's probability is in (0, 1), got {p}")
    return float(stats.t.ppf(p, df))


def _check_level(level: float, name: str = "level") -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"{name} is in (0, 1), got {level}")


def interval(mean: float, std: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """The two-sided `level` confidence interval of the mean of `n` paired differences with this
    `mean` and sample standard deviation `std`: mean ± t(1 - (1 - level)/2, n - 1) std / sqrt(n).

    One seed gives no spread, so no interval: (-inf, inf) when n < 2, so that an unresolved
    comparison never reads as resolved.
    """
    _check_level(level)
    if n < 2:
        return -math.inf, math.inf
    half = t_quantile(1.0 - (1.0 - level) / 2.0, n - 1) * std / math.sqrt(n)
    return mean - half, mean + half


def paired_t_p(mean: float, std: float, n: int) -> float:
    """The two-sided p-value of the one-sample t test that the paired differences' true mean is
    0: P(|T| >= |mean| / (std / sqrt(n))) for T ~ t(n - 1).

    Degenerate cases, so that a table can always be filled: n < 2 gives 1.0 (no test without a
    spread); std 0 gives 0.0 when mean != 0 (every seed moved the same way by the same amount)
    and 1.0 when mean == 0.
    """
    if n < 2:
        return 1.0
    if std == 0:
        return 0.0 if mean != 0 else 1.0
    t = abs(mean) / (std / math.sqrt(n))
    return float(2.0 * stats.t.sf(t, n - 1))


def equivalence_p(mean: float, std: float, n: int, delta: float) -> float:
    """The p-value of TOST (two one-sided t tests, n - 1 degrees of freedom) that the true mean
    difference lies inside (-delta, +delta): the larger of the p of "mean <= -delta" (against
    "above -delta") and that of "mean >= +delta" (against "below +delta"). Small means equivalent;
    being a single p-value it can go through `holm` with the family's other tests.

    n < 2 gives 1.0; std 0 gives 0.0 when |mean| < delta and 1.0 otherwise.
    """
    if delta <= 0:
        raise ValueError(f"an equivalence margin is positive, got {delta}")
    if n < 2:
        return 1.0
    if std == 0:
        return 0.0 if abs(mean) < delta else 1.0
    se = std / math.sqrt(n)
    p_lower = stats.t.sf((mean + delta) / se, n - 1)  # H0: mean <= -delta
    p_upper = stats.t.cdf((mean - delta) / se, n - 1)  # H0: mean >= +delta
    return float(max(p_lower, p_upper))


def equivalence(mean: float, std: float, n: int, delta: float, alpha: float = 0.05) -> bool:
    """Whether TOST at level `alpha` shows the true mean difference inside (-delta, +delta): the
    (1 - 2 alpha) confidence interval (90% at alpha 0.05) lies strictly inside the margin. The
    same decision as equivalence_p(...) < alpha.
    """
    if delta <= 0:
        raise ValueError(f"an equivalence margin is positive, got {delta}")
    _check_level(2 * alpha, "2 alpha")
    lo, hi = interval(mean, std, n, 1.0 - 2.0 * alpha)
    return -delta < lo and hi < delta


def _check_p_values(p_values: Mapping[str, float]) -> None:
    for name, p in p_values.items():
        if not 0.0 <= p <= 1.0:  # also refuses NaN
            raise ValueError(f"p-value of {name!r} is not in [0, 1]: {p}")


def holm_adjusted(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values, by name: with the m p-values in ascending order p(1) <= ... <=
    p(m), the i-th adjusted is max over j <= i of min(1, (m - j + 1) p(j)). Monotone in the raw
    p-values and capped at 1; a hypothesis is rejected at family-wise level alpha exactly when its
    adjusted p-value is <= alpha (`holm`).
    """
    _check_p_values(p_values)
    m = len(p_values)
    adjusted: dict[str, float] = {}
    running = 0.0
    for rank, name in enumerate(sorted(p_values, key=p_values.__getitem__)):
        running = max(running, min(1.0, (m - rank) * p_values[name]))
        adjusted[name] = running
    return {name: adjusted[name] for name in p_values}


def holm(p_values: Mapping[str, float], alpha: float = 0.05) -> dict[str, bool]:
    """Which hypotheses the Holm-Bonferroni step-down rejects at family-wise level `alpha`, by
    name. The p-values are taken in ascending order and the i-th (from 1) is rejected while
    p(i) <= alpha / (m - i + 1); at the first that is not, it and all larger ones are retained.
    Valid under any dependence between the tests, which share seeds here.
    """
    _check_level(alpha, "alpha")
    _check_p_values(p_values)
    m = len(p_values)
    rejected = dict.fromkeys(p_values, False)
    for rank, name in enumerate(sorted(p_values, key=p_values.__getitem__)):
        if p_values[name] > alpha / (m - rank):
            break
        rejected[name] = True
    return rejected


def t_test_power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """The exact power of the two-sided paired t test at level `alpha` from `n` seeds when the
    paired differences are N(effect, sd^2): P(|T| > t(1 - alpha/2, n - 1)) for T noncentral t
    with n - 1 degrees of freedom and noncentrality effect sqrt(n) / sd.
    """
    if sd <= 0:
        raise ValueError(f"the paired differences' standard deviation is positive, got {sd}")
    if n < 2:
        return 0.0
    df = n - 1
    crit = t_quantile(1.0 - alpha / 2.0, df)
    nc = effect * math.sqrt(n) / sd
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def tost_power(delta: float, sd: float, n: int, true_diff: float = 0.0,
               alpha: float = 0.05) -> float:
    """The exact power of TOST at level `alpha` with margin ±`delta` from `n` seeds when the
    paired differences are N(true_diff, sd^2).

    TOST shows equivalence when both T1 = (m + delta) / (s / sqrt(n)) > c and
    T2 = (m - delta) / (s / sqrt(n)) < -c, c = t(1 - alpha, n - 1), i.e. when the sample mean m
    lies in (-delta + c s / sqrt(n), delta - c s / sqrt(n)), an interval that is empty once
    s >= delta sqrt(n) / c. T1 and T2 share m and s, so their noncentral t distributions cannot be
    combined as if independent; conditioning on s instead (m and s are independent, and
    V = s sqrt(n - 1) / sd is chi-distributed with n - 1 degrees of freedom):

        power = ∫_0^{v*} [Φ(a - c v / sqrt(n - 1)) - Φ(-b + c v / sqrt(n - 1))] chi_{n-1}(v) dv

    with a = (delta - true_diff) sqrt(n) / sd, b = (delta + true_diff) sqrt(n) / sd and
    v* = delta sqrt(n (n - 1)) / (c sd), where the bracket reaches 0 (Owen's exact formula; the
    integral is scipy's `quad`). The usual shortcut P(T1 > c) + P(T2 < -c) - 1 from the two
    noncentral t's is a lower bound, loose at few seeds.
    """
    if delta <= 0:
        raise ValueError(f"an equivalence margin is positive, got {delta}")
    if sd <= 0:
        raise ValueError(f"the paired differences' standard deviation is positive, got {sd}")
    if n < 2:
        return 0.0
    df = n - 1
    crit = t_quantile(1.0 - alpha, df)
    a = (delta - true_diff) * math.sqrt(n) / sd
    b = (delta + true_diff) * math.sqrt(n) / sd
    scale = crit / math.sqrt(df)
    v_max = delta * math.sqrt(n * df) / (crit * sd)

    def integrand(v: float) -> float:
        inside = stats.norm.cdf(a - scale * v) - stats.norm.cdf(-b + scale * v)
        return max(0.0, float(inside)) * float(stats.chi.pdf(v, df))

    power, _ = integrate.quad(integrand, 0.0, v_max, limit=200, epsabs=1e-10, epsrel=1e-8)
    return min(1.0, max(0.0, power))


def _first_n(power_at, power: float, max_n: int) -> int | None:
    """The smallest n in [2, max_n] with power_at(n) >= power (power grows with n)."""
    _check_level(power, "power")
    for n in range(2, max_n + 1):
        if power_at(n) >= power:
            return n
    return None


def seeds_to_resolve(effect: float, sd: float, alpha: float = 0.05, power: float = 0.8,
                     max_n: int = 200) -> int | None:
    """The fewest seeds (at least 2) for which the two-sided paired t test at level `alpha`
    detects a true mean difference `effect` with probability `power`, when the paired differences
    have standard deviation `sd` (`t_test_power`, exact with the noncentral t). None if `max_n`
    seeds do not reach it.

    What an experiment's table cannot say from its seeds: e.g. a 0.3-point difference whose seeds
    scatter by 0.25 points needs 8 of them, not 3.
    """
    _check_level(alpha, "alpha")
    return _first_n(lambda n: t_test_power(effect, sd, n, alpha), power, max_n)


def seeds_for_equivalence(delta: float, sd: float, true_diff: float = 0.0, alpha: float = 0.05,
                          power: float = 0.8, max_n: int = 200) -> int | None:
    """The fewest seeds (at least 2) for which TOST at level `alpha` shows the difference inside
    ±`delta` with probability `power`, when its true value is `true_diff` and the paired
    differences have standard deviation `sd` (`tost_power`, exact). None if `max_n` seeds do not
    reach it (always when |true_diff| >= delta, where the power stays below alpha).
    """
    _check_level(alpha, "alpha")
    return _first_n(lambda n: tost_power(delta, sd, n, true_diff, alpha), power, max_n)

