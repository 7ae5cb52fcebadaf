"""`inception.experiments.stats`: t quantiles and intervals, the paired t test, TOST, Holm, and
the seeds a comparison needs, checked against table values, scipy's own tests and Monte Carlo."""

import math
import statistics

import numpy as np
import pytest
from scipy import stats as scipy_stats

from inception.experiments import stats

# Paired differences of 5 seeds (points of top-1), for the checks against scipy's t tests.
DIFFS = [0.42, 0.10, 0.55, 0.31, 0.18]


def _summary(values):
    return statistics.fmean(values), statistics.stdev(values), len(values)


# --- t quantiles and intervals ---------------------------------------------------------------

@pytest.mark.parametrize(("df", "value"), [(1, 12.706), (2, 4.303), (30, 2.042), (40, 2.021),
                                           (120, 1.980)])
def test_t_quantile_matches_the_table(df, value):
    assert round(stats.t_quantile(0.975, df), 3) == value


def test_t_quantile_beyond_30_df_is_neither_2_nor_the_30_df_value():
    t40 = stats.t_quantile(0.975, 40)
    assert 1.96 < t40 < stats.t_quantile(0.975, 30)
    assert abs(t40 - 2.0) > 0.02
    assert stats.t_quantile(0.025, 7) == pytest.approx(-stats.t_quantile(0.975, 7))


def test_t_quantile_refuses_no_degrees_of_freedom():
    with pytest.raises(ValueError):
        stats.t_quantile(0.975, 0)


def test_interval_by_hand():
    # mean 0.5, std 0.3, 4 seeds: 0.5 ± t(0.975, 3) 0.3 / 2, t(0.975, 3) = 3.182446
    lo, hi = stats.interval(0.5, 0.3, 4)
    assert lo == pytest.approx(0.5 - 3.182446 * 0.15, abs=1e-6)
    assert hi == pytest.approx(0.5 + 3.182446 * 0.15, abs=1e-6)
    # 90% from 3 seeds: t(0.95, 2) = 2.919986
    lo, hi = stats.interval(-1.0, 0.6, 3, level=0.90)
    half = 2.919986 * 0.6 / math.sqrt(3)
    assert (lo, hi) == pytest.approx((-1.0 - half, -1.0 + half), abs=1e-6)


def test_interval_matches_scipy_ttest_interval():
    mean, std, n = _summary(DIFFS)
    expected = scipy_stats.ttest_1samp(DIFFS, 0.0).confidence_interval(0.95)
    assert stats.interval(mean, std, n) == pytest.approx((expected.low, expected.high))


def test_interval_of_one_seed_is_unbounded():
    assert stats.interval(0.7, 0.0, 1) == (-math.inf, math.inf)


# --- the paired t test -----------------------------------------------------------------------

def test_paired_t_p_matches_scipy():
    mean, std, n = _summary(DIFFS)
    assert stats.paired_t_p(mean, std, n) == pytest.approx(
        scipy_stats.ttest_1samp(DIFFS, 0.0).pvalue, rel=1e-10)
    flipped = [-d for d in DIFFS]
    assert stats.paired_t_p(*_summary(flipped)) == pytest.approx(stats.paired_t_p(mean, std, n))


def test_paired_t_p_degenerate_cases():
    assert stats.paired_t_p(0.4, 0.0, 3) == 0.0
    assert stats.paired_t_p(0.0, 0.0, 3) == 1.0
    assert stats.paired_t_p(0.4, 0.1, 1) == 1.0


# --- equivalence (TOST) ----------------------------------------------------------------------

def test_equivalence_p_matches_scipy_one_sided_tests():
    mean, std, n = _summary(DIFFS)
    delta = 0.6
    lower = scipy_stats.ttest_1samp(DIFFS, -delta, alternative="greater").pvalue
    upper = scipy_stats.ttest_1samp(DIFFS, delta, alternative="less").pvalue
    assert stats.equivalence_p(mean, std, n, delta) == pytest.approx(max(lower, upper))


@pytest.mark.parametrize(("mean", "std", "n", "delta", "expected"), [
    (0.05, 0.10, 5, 0.30, True),    # 90% interval [-0.045, 0.145]
    (0.20, 0.30, 3, 0.30, False),   # 90% interval [-0.31, 0.71]
    (-0.25, 0.05, 10, 0.30, True),  # close to the margin but tight
    (-0.25, 0.20, 10, 0.30, False),
    (0.05, 0.10, 1, 0.30, False),   # one seed shows nothing
    (0.10, 0.0, 3, 0.30, True),
    (0.30, 0.0, 3, 0.30, False),    # on the margin is not inside it
])
def test_equivalence_cases(mean, std, n, delta, expected):
    assert stats.equivalence(mean, std, n, delta) is expected
    assert (stats.equivalence_p(mean, std, n, delta) < 0.05) is expected


def test_equivalence_is_the_90_percent_interval_inside_the_margin():
    lo, hi = stats.interval(0.05, 0.10, 5, 0.90)
    assert stats.equivalence(0.05, 0.10, 5, delta=max(-lo, hi) + 1e-9)
    assert not stats.equivalence(0.05, 0.10, 5, delta=max(-lo, hi) - 1e-9)


# --- Holm ------------------------------------------------------------------------------------

TEXTBOOK = {"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005}


def test_holm_textbook_example():
    # ascending: d 0.005 <= 0.05/4, a 0.01 <= 0.05/3, c 0.03 > 0.05/2: stop (b retained too)
    assert stats.holm(TEXTBOOK, alpha=0.05) == {"a": True, "b": False, "c": False, "d": True}


def test_holm_adjusted_textbook_example():
    # d 4 x 0.005, a 3 x 0.01, c 2 x 0.03, b max(0.06, 1 x 0.04): monotone
    assert stats.holm_adjusted(TEXTBOOK) == pytest.approx(
        {"a": 0.03, "b": 0.06, "c": 0.06, "d": 0.02})
    assert list(stats.holm_adjusted(TEXTBOOK)) == list(TEXTBOOK)


def test_holm_adjusted_is_capped_at_1():
    assert stats.holm_adjusted({"x": 0.6, "y": 0.7}) == {"x": 1.0, "y": 1.0}


def test_holm_rejects_exactly_the_adjusted_p_values_at_most_alpha():
    rng = np.random.default_rng(3)
    for _ in range(50):
        p = {f"h{i}": float(v) for i, v in enumerate(rng.uniform(0, 0.1, size=6))}
        adjusted = stats.holm_adjusted(p)
        assert stats.holm(p, 0.05) == {k: adjusted[k] <= 0.05 for k in p}
        assert all(adjusted[k] >= p[k] for k in p)


def test_holm_of_one_is_the_plain_test_and_of_none_is_empty():
    assert stats.holm({"x": 0.05}) == {"x": True}
    assert stats.holm({"x": 0.051}) == {"x": False}
    assert stats.holm({}) == {}
    assert stats.holm_adjusted({}) == {}


def test_holm_refuses_a_p_value_outside_0_1():
    with pytest.raises(ValueError):
        stats.holm({"x": 1.5})
    with pytest.raises(ValueError):
        stats.holm_adjusted({"x": float("nan")})


# --- power and seeds -------------------------------------------------------------------------

def _mc_t_power(effect, sd, n, alpha=0.05, draws=20_000, seed=0):
    """Fraction of `draws` experiments of n seeds whose two-sided t test rejects a zero mean."""
    x = np.random.default_rng(seed).normal(effect, sd, size=(draws, n))
    t = x.mean(axis=1) / (x.std(axis=1, ddof=1) / math.sqrt(n))
    return float(np.mean(np.abs(t) > scipy_stats.t.ppf(1 - alpha / 2, n - 1)))


def _mc_tost_power(delta, sd, n, true_diff=0.0, alpha=0.05, draws=20_000, seed=0):
    """Fraction of `draws` experiments of n seeds whose 90% interval lies inside ±delta."""
    x = np.random.default_rng(seed).normal(true_diff, sd, size=(draws, n))
    half = scipy_stats.t.ppf(1 - alpha, n - 1) * x.std(axis=1, ddof=1) / math.sqrt(n)
    m = x.mean(axis=1)
    return float(np.mean((m - half > -delta) & (m + half < delta)))


def _normal_seeds(effect, sd, alpha_one_side, power_quantile):
    """The seeds a z test with a known sd needs: ((z(1 - alpha) + z(power)) sd / effect)^2."""
    z = scipy_stats.norm.ppf
    return ((z(1 - alpha_one_side) + z(power_quantile)) * sd / effect) ** 2


def test_t_test_power_at_no_effect_is_alpha():
    assert stats.t_test_power(0.0, 0.3, 6) == pytest.approx(0.05)


@pytest.mark.parametrize(("effect", "sd", "n"), [(0.3, 0.25, 8), (0.3, 0.35, 13), (0.5, 0.5, 10)])
def test_seeds_to_resolve_exact_values(effect, sd, n):
    # (0.5, 0.5): d = 1, 10 pairs for 80% power, as in Cohen's tables
    assert stats.seeds_to_resolve(effect, sd) == n
    assert stats.t_test_power(effect, sd, n) >= 0.8 > stats.t_test_power(effect, sd, n - 1)
    normal = _normal_seeds(effect, sd, 0.025, 0.8)
    assert math.ceil(normal) <= n <= math.ceil(normal) + 2


def test_seeds_to_resolve_matches_monte_carlo():
    n = stats.seeds_to_resolve(0.3, 0.25)
    at_n, below = _mc_t_power(0.3, 0.25, n), _mc_t_power(0.3, 0.25, n - 1)
    assert at_n >= 0.8 > below  # exact: 0.828 and 0.754
    assert at_n == pytest.approx(stats.t_test_power(0.3, 0.25, n), abs=0.015)
    assert below == pytest.approx(stats.t_test_power(0.3, 0.25, n - 1), abs=0.015)


def test_seeds_to_resolve_is_monotone():
    by_sd = [stats.seeds_to_resolve(0.3, sd) for sd in (0.1, 0.2, 0.25, 0.35, 0.5, 0.8)]
    by_effect = [stats.seeds_to_resolve(effect, 0.3) for effect in (0.1, 0.2, 0.3, 0.5, 1.0)]
    assert by_sd == sorted(by_sd) and by_sd[0] < by_sd[-1]
    assert by_effect == sorted(by_effect, reverse=True) and by_effect[0] > by_effect[-1]
    assert stats.seeds_to_resolve(-0.3, 0.25) == stats.seeds_to_resolve(0.3, 0.25)


def test_seeds_to_resolve_gives_up_at_max_n():
    assert stats.seeds_to_resolve(0.01, 1.0) is None
    assert stats.seeds_to_resolve(0.3, 0.35, max_n=12) is None


def test_tost_power_matches_monte_carlo_where_the_shortcut_says_0():
    # 5 seeds: the two noncentral t's give P(T1 > c) + P(T2 < -c) - 1 < 0; the power is 0.178
    df, c = 4, scipy_stats.t.ppf(0.95, 4)
    nc = 0.3 * math.sqrt(5) / 0.35
    shortcut = scipy_stats.nct.sf(c, df, nc) + scipy_stats.nct.cdf(-c, df, -nc) - 1
    exact = stats.tost_power(0.3, 0.35, 5)
    assert shortcut < 0 < exact
    assert _mc_tost_power(0.3, 0.35, 5) == pytest.approx(exact, abs=0.015)
    assert _mc_tost_power(0.3, 0.3, 9, true_diff=0.1) == pytest.approx(
        stats.tost_power(0.3, 0.3, 9, true_diff=0.1), abs=0.015)


def test_tost_power_at_the_margin_is_at_most_alpha():
    assert stats.tost_power(0.3, 0.35, 20, true_diff=0.3) <= 0.05
    assert stats.tost_power(0.3, 0.35, 20, true_diff=-0.3) <= 0.05


@pytest.mark.parametrize(("delta", "sd", "n"), [(0.3, 0.35, 14), (0.25, 0.25, 11)])
def test_seeds_for_equivalence_exact_values(delta, sd, n):
    assert stats.seeds_for_equivalence(delta, sd) == n
    assert stats.tost_power(delta, sd, n) >= 0.8 > stats.tost_power(delta, sd, n - 1)
    # z-TOST with a known sd needs ((z(1-a) + z(1-b/2)) sd / delta)^2 seeds; the t one more
    normal = _normal_seeds(delta, sd, 0.05, 0.9)
    assert math.ceil(normal) <= n <= math.ceil(normal) + 3


def test_seeds_for_equivalence_matches_monte_carlo():
    n = stats.seeds_for_equivalence(0.3, 0.25)
    at_n, below = _mc_tost_power(0.3, 0.25, n), _mc_tost_power(0.3, 0.25, n - 1)
    assert at_n >= 0.8 > below  # exact: 0.838 and 0.751 at 8 and 7 seeds
    assert at_n == pytest.approx(stats.tost_power(0.3, 0.25, n), abs=0.015)
    assert below == pytest.approx(stats.tost_power(0.3, 0.25, n - 1), abs=0.015)


def test_seeds_for_equivalence_is_monotone():
    by_sd = [stats.seeds_for_equivalence(0.3, sd) for sd in (0.15, 0.25, 0.35, 0.5)]
    by_delta = [stats.seeds_for_equivalence(delta, 0.3) for delta in (0.2, 0.3, 0.5, 1.0)]
    by_true = [stats.seeds_for_equivalence(0.3, 0.3, true_diff=d) for d in (0.0, 0.05, 0.1, 0.15)]
    assert by_sd == sorted(by_sd) and by_sd[0] < by_sd[-1]
    assert by_delta == sorted(by_delta, reverse=True) and by_delta[0] > by_delta[-1]
    assert by_true == sorted(by_true) and by_true[0] < by_true[-1]


def test_seeds_for_equivalence_is_none_outside_the_margin():
    assert stats.seeds_for_equivalence(0.3, 0.35, true_diff=0.3, max_n=30) is None
