"""Statistics against scipy.stats on the same inputs, plus invariants and edge cases."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from attncmp.analyze.stats import (
    WILCOXON_NORMAL,
    bootstrap,
    bootstrap_mean_ci,
    correct_pvalues,
    detectable_effect,
    hodges_lehmann_ci,
    mean_ci,
    min_attainable_p,
    min_corrected_p,
    paired_bootstrap_ci,
    paired_t_test,
    paired_test,
    partial_spearman,
    rankdata,
    samples_needed,
    signed_rank_null_cdf,
    spearman,
    spearman_with_ci,
    wilcoxon_signed_rank,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from ._stores import study_store


def _tplus_tminus(d):
    nz = d[d != 0]
    r = stats.rankdata(np.abs(nz))
    return r[nz > 0].sum(), r[nz < 0].sum()


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(3, 120),
    shift=st.floats(-1, 1),
    rounding=st.sampled_from([None, 1]),
)
def test_paired_test_matches_scipy(seed, n, shift, rounding):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = x + shift + rng.normal(size=n)
    if rounding is not None:  # ties and zero differences
        x, y = np.round(x, rounding), np.round(y, rounding)
    r = paired_test(x, y, n_boot=0)
    d = y - x
    assert r.n == n and r.n_dropped == 0 and r.n_zero == int(np.sum(d == 0))
    assert r.mean_diff == pytest.approx(d.mean(), abs=1e-12)
    assert r.mean_baseline == pytest.approx(x.mean()) and r.mean_variant == pytest.approx(y.mean())
    if d.std() > 0:
        tt = stats.ttest_rel(y, x)
        assert r.t_statistic == pytest.approx(tt.statistic, rel=1e-10)
        assert r.t_pvalue == pytest.approx(tt.pvalue, rel=1e-10, abs=1e-300)
        assert r.cohens_dz == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-12)
    if np.any(d != 0):
        # the documented method choice, made here independently: exact for at most 50 non-zero
        # differences without ties (zeros dropped), else normal approximation + continuity
        nz = d[d != 0]
        exact = len(nz) <= 50 and len(np.unique(np.abs(nz))) == len(nz)
        w = stats.wilcoxon(
            d,
            zero_method="wilcox",
            method="exact" if exact else "asymptotic",
            correction=not exact,
        )
        assert r.wilcoxon_method == (
            "exact" if exact else "normal approximation with continuity correction"
        )
        assert r.wilcoxon_statistic == pytest.approx(w.statistic)
        assert r.wilcoxon_pvalue == pytest.approx(w.pvalue, rel=1e-10, abs=1e-300)
        tp, tm = _tplus_tminus(d)
        assert r.rank_biserial == pytest.approx((tp - tm) / (tp + tm), abs=1e-12)
    lo, hi = stats.t.interval(0.95, n - 1, loc=x.mean(), scale=stats.sem(x))
    assert r.ci_baseline == pytest.approx((lo, hi), rel=1e-10, abs=1e-12)


def test_bca_interval_agrees_with_scipy_bootstrap():
    rng = np.random.default_rng(4)
    x = rng.normal(size=200)
    y = x + 0.2 + rng.gamma(1.0, 1.0, size=200) - 1.0  # skewed differences
    r = paired_test(x, y, n_boot=20000, seed=1, ci_method="BCa")
    ref = stats.bootstrap((y - x,), np.mean, n_resamples=20000, method="BCa", random_state=2)
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert r.ci_diff[0] == pytest.approx(ref.confidence_interval.low, abs=0.03 * width)
    assert r.ci_diff[1] == pytest.approx(ref.confidence_interval.high, abs=0.03 * width)
    # percentile as well
    b = paired_bootstrap_ci(x, y, n_boot=20000, seed=1, method="percentile")
    refp = stats.bootstrap(
        (y - x,), np.mean, n_resamples=20000, method="percentile", random_state=2
    )
    assert b.ci[0] == pytest.approx(refp.confidence_interval.low, abs=0.03 * width)
    assert b.ci[1] == pytest.approx(refp.confidence_interval.high, abs=0.03 * width)


def test_bootstrap_is_seeded_and_records_its_seed():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    a, b = paired_test(x, y, seed=11, ci_method="BCa"), paired_test(x, y, seed=11, ci_method="BCa")
    c = paired_test(x, y, seed=12, ci_method="BCa")
    assert a == b and a.ci_diff == b.ci_diff and a.seed == 11
    assert a.ci_diff != c.ci_diff
    assert a.bootstrap_method == "BCa" and a.wilcoxon_zero_method == "wilcox"
    assert a.as_dict()["ci_method"] == "paired bootstrap BCa"
    lo90, hi90 = a.confidence_interval(0.90)
    assert a.ci_diff[0] < lo90 < hi90 < a.ci_diff[1]
    assert a.confidence_interval() == a.ci_diff


def test_default_ci_is_the_paired_t_interval_at_any_level():
    rng = np.random.default_rng(9)
    x = rng.gamma(2.0, 1.0, size=33)
    y = x + rng.gamma(1.0, 0.5, size=33) - 0.4
    r = paired_test(x, y)
    assert r.ci_method == "t" and r.bootstrap is None and r.bootstrap_method is None
    assert r.as_dict()["ci_method"] == "paired t interval"
    for level in (0.95, 0.8):
        ref = stats.ttest_1samp(y - x, 0.0).confidence_interval(level)
        got = r.confidence_interval(level)
        assert got == pytest.approx((ref.low, ref.high), rel=1e-10)
    # the interval and the t-test agree: 0 is outside exactly when p < 0.05
    assert (r.t_pvalue < 0.05) == (not r.ci_diff[0] <= 0 <= r.ci_diff[1])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(6, 45), shift=st.floats(-1, 1))
def test_hodges_lehmann_interval_is_the_inverted_wilcoxon_test(seed, n, shift):
    """Reference: the set of shifts theta the exact signed-rank test does not reject."""
    d = np.random.default_rng(seed).normal(size=n) + shift
    est, lo, hi, method = hodges_lehmann_ci(d, 0.95)
    walsh = [(d[i] + d[j]) / 2 for i in range(n) for j in range(i, n)]
    assert est == pytest.approx(np.median(walsh), abs=1e-12) and "exact" in method
    eps = 1e-9
    for theta, inside in ((lo + eps, True), (hi - eps, True), (lo - eps, False), (hi + eps, False)):
        p = stats.wilcoxon(d - theta, method="exact").pvalue
        assert (p > 0.05) == inside, (theta, p)


def test_signed_rank_null_and_attainable_p():
    for n in (1, 4, 9):  # brute force over all sign patterns
        signs = np.array(list(itertools.product([0, 1], repeat=n)))
        tplus = signs @ np.arange(1, n + 1)
        ref = np.array([np.mean(tplus <= c) for c in range(n * (n + 1) // 2 + 1)])
        np.testing.assert_allclose(signed_rank_null_cdf(n), ref, rtol=0, atol=1e-15)
    # the smallest exact two-sided p is the all-one-sign pattern, as scipy computes it
    for n in (5, 8, 20):
        assert min_attainable_p(n) == pytest.approx(stats.wilcoxon(np.arange(1.0, n + 1)).pvalue)
    assert min_attainable_p(60) == pytest.approx(
        stats.wilcoxon(np.arange(1.0, 61), method="asymptotic", correction=True).pvalue
    )
    assert min_attainable_p(5, "t") == 0.0
    assert min_corrected_p(5, 4) == pytest.approx(4 * 2 / 32)
    assert samples_needed(4) == 8 and samples_needed(20) == 10 and samples_needed(1) == 6
    assert detectable_effect(5, 4) == math.inf
    # power at the detectable effect (t-test, Bonferroni level) is 80%, checked by simulation
    dz = detectable_effect(30, 4, test="t")
    rng = np.random.default_rng(1)
    d = rng.normal(dz, 1.0, size=(4000, 30))
    p = stats.ttest_1samp(d, 0.0, axis=1).pvalue
    assert np.mean(p < 0.05 / 4) == pytest.approx(0.8, abs=0.03)


def test_two_dimensional_input_is_refused():
    a = np.ones((5, 2))
    with pytest.raises(ValueError, match="1-D"):
        paired_test(a, a + 1)
    with pytest.raises(ValueError, match="1-D"):
        correct_pvalues(np.full((2, 2), 0.1))


def test_correlation_interval_honours_its_level():
    rng = np.random.default_rng(5)
    x = rng.normal(size=80)
    r = spearman_with_ci(x, x + rng.normal(size=80), n_boot=2000, seed=1)
    lo80, hi80 = r.confidence_interval(0.8)
    assert r.ci[0] < lo80 < hi80 < r.ci[1]
    q = np.quantile(r.distribution, [0.1, 0.9])
    assert (lo80, hi80) == pytest.approx(tuple(q))


def test_t_interval_bound_has_p_equal_to_alpha():
    rng = np.random.default_rng(2)
    x = rng.normal(1.0, 2.0, size=37)
    m, lo, hi = mean_ci(x, 0.95)
    assert stats.ttest_1samp(x, lo).pvalue == pytest.approx(0.05, rel=1e-8)
    assert stats.ttest_1samp(x, hi).pvalue == pytest.approx(0.05, rel=1e-8)


def test_wilcoxon_method_is_chosen_explicitly_never_a_permutation_test(monkeypatch):
    # scipy's method="auto" runs a permutation test (~1 s a call) for n <= 13 with ties/zeros
    def no_permutation(*a, **k):
        raise AssertionError("scipy's slow permutation path was taken")

    monkeypatch.setattr(stats, "permutation_test", no_permutation)
    ties_zeros = np.array([0.0, 0.1, 0.1, -0.2, 0.3, 0.0, 0.4, -0.1, 0.2, 0.5])
    r = paired_test(np.zeros(10), ties_zeros, n_boot=0)
    assert r.wilcoxon_method == "normal approximation with continuity correction"
    w = stats.wilcoxon(ties_zeros, method="asymptotic", correction=True)
    assert r.wilcoxon_pvalue == pytest.approx(w.pvalue, rel=1e-12)
    assert r.n_zero == 2 and r.wilcoxon_zero_method == "wilcox"
    # zeros but no ties among the rest: exact on the non-zero differences (zeros dropped)
    zeros = np.array([0.0, 0.0, 1.5, -0.3, 2.2, 0.7, -1.1, 3.3, 0.2])
    st_, p, method = wilcoxon_signed_rank(zeros)
    ref = stats.wilcoxon(zeros[zeros != 0], method="exact")
    assert method == "exact" and p == pytest.approx(ref.pvalue, rel=1e-12)
    assert st_ == pytest.approx(ref.statistic)
    # no ties, no zeros, n <= 50: exact, as scipy's own choice
    clean = np.random.default_rng(3).normal(size=30)
    assert wilcoxon_signed_rank(clean)[1] == pytest.approx(stats.wilcoxon(clean).pvalue)
    assert wilcoxon_signed_rank(clean)[2] == "exact"
    assert wilcoxon_signed_rank(np.zeros(4)) == (0.0, 1.0, "all differences zero")
    assert math.isnan(wilcoxon_signed_rank([])[1])
    # its speed (small samples with ties used to take about a second per test) is measured in
    # benchmarks/bench_calibration.py, not asserted here


def test_mean_ci_clipped_to_the_metric_range():
    # a per-sample proportion near 0 (e.g. gold pointing accuracy): the t interval dips below 0
    x = np.array([0.0] * 18 + [1.0, 0.5])
    m, lo, hi = mean_ci(x, 0.95)
    assert lo < 0  # the plain t interval (unchanged without bounds)
    mb, lob, hib = mean_ci(x, 0.95, bounds=(0.0, 1.0))
    assert (mb, hib) == (m, hi) and lob == 0.0
    # near the upper bound
    y = 1.0 - x
    _, lo1, hi1 = mean_ci(y, 0.95, bounds=(0.0, 1.0))
    assert hi1 == 1.0 and 0.0 <= lo1 < 1.0
    r = paired_test(x, y, n_boot=100, bounds=(0.0, 1.0))
    for lo_, hi_ in (r.ci_baseline, r.ci_variant, r.ci_diff):
        assert -1.0 <= lo_ <= hi_ <= 1.0
    assert r.ci_baseline[0] == 0.0 and r.ci_variant[1] == 1.0 and r.mean_ci_bounds == (0.0, 1.0)
    assert paired_test(x, y, n_boot=0).ci_baseline[0] < 0  # unclipped without bounds
    with pytest.raises(ValueError, match="bounds"):
        mean_ci(x, 0.95, bounds=(1.0, 0.0))
    with pytest.raises(ValueError, match="bounds"):
        mean_ci(x, 0.95, bounds=(0.0,))


def test_nan_pairs_are_dropped_and_counted():
    x = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0])
    y = np.array([1.5, np.nan, 3.0, 4.1, 5.9, 6.2])
    r = paired_test(x, y, n_boot=100)
    assert r.n == 4 and r.n_dropped == 2
    assert r.mean_diff == pytest.approx(np.mean([0.5, 0.1, 0.9, 0.2]))
    assert all(math.isfinite(v) for v in (r.t_pvalue, r.wilcoxon_pvalue, *r.ci_diff))


def test_zero_and_constant_differences():
    x = np.arange(10.0)
    r = paired_test(x, x.copy(), n_boot=50)
    assert r.wilcoxon_pvalue == 1.0 and r.wilcoxon_statistic == 0.0
    assert r.t_pvalue == 1.0 and r.t_statistic == 0.0 and r.cohens_dz == 0.0
    assert r.rank_biserial == 0.0 and r.n_zero == 10
    assert r.ci_diff == (0.0, 0.0)
    c = paired_test(x, x + 1.0, n_boot=50)
    assert c.t_statistic == math.inf and c.t_pvalue == 0.0 and c.rank_biserial == 1.0
    assert c.pct_change == pytest.approx(100 * 1.0 / 4.5)


def test_empty_and_tiny_inputs_give_nan_not_crash():
    e = paired_test([], [], n_boot=10)
    assert e.n == 0 and math.isnan(e.mean_diff) and math.isnan(e.wilcoxon_pvalue)
    one = paired_test([1.0], [2.0], n_boot=10)
    assert one.n == 1 and one.mean_diff == 1.0 and math.isnan(one.t_pvalue)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_test([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="confidence"):
        paired_test([1, 2], [1, 2], confidence=95)


def _holm_ref(p):
    m = len(p)
    order = np.argsort(p)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj


@settings(max_examples=50, deadline=None)
@given(p=st.lists(st.floats(0, 1), min_size=1, max_size=40))
def test_holm_and_bh(p):
    p = np.array(p)
    h = correct_pvalues(p, "holm")
    np.testing.assert_allclose(h, _holm_ref(p), rtol=1e-12)
    b = correct_pvalues(p, "bh")
    np.testing.assert_allclose(b, stats.false_discovery_control(p, method="bh"), rtol=1e-10)
    assert np.all(h >= p - 1e-15) and np.all(b >= p - 1e-15) and np.all(b <= h + 1e-15)


def test_correction_ignores_nan_in_family_size():
    p = np.array([0.01, np.nan, 0.02])
    h = correct_pvalues(p, "holm")
    assert math.isnan(h[1]) and h[0] == pytest.approx(0.02) and h[2] == pytest.approx(0.02)
    with pytest.raises(ValueError, match="holm"):
        correct_pvalues(p, "bonferroni")


def test_spearman_matches_scipy_with_bootstrap_ci():
    rng = np.random.default_rng(5)
    x = rng.normal(size=150)
    y = 0.5 * x + rng.normal(size=150)
    r = spearman_with_ci(x, y, n_boot=4000, seed=3)
    ref = stats.spearmanr(x, y)
    assert r.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert r.pvalue == pytest.approx(ref.pvalue, rel=1e-10)

    def rho(a, b, axis=-1):
        return stats.spearmanr(a, b, axis=axis).statistic

    bref = stats.bootstrap(
        (x, y),
        lambda a, b: stats.spearmanr(a, b).statistic,
        paired=True,
        vectorized=False,
        n_resamples=4000,
        method="percentile",
        random_state=0,
    )
    lo, hi = bref.confidence_interval
    assert r.ci[0] == pytest.approx(lo, abs=0.03) and r.ci[1] == pytest.approx(hi, abs=0.03)
    assert r.ci[0] < r.statistic < r.ci[1]


def test_partial_spearman_equals_formula_with_one_covariate():
    rng = np.random.default_rng(6)
    z = rng.normal(size=300)
    x = z + rng.normal(size=300)
    y = z + 0.3 * x + rng.normal(size=300)
    rxy = stats.spearmanr(x, y).statistic
    rxz = stats.spearmanr(x, z).statistic
    ryz = stats.spearmanr(y, z).statistic
    want = (rxy - rxz * ryz) / math.sqrt((1 - rxz**2) * (1 - ryz**2))
    r = partial_spearman(x, y, z, n_boot=200, seed=1)
    assert r.statistic == pytest.approx(want, abs=1e-10)
    dof = 300 - 3
    t = want * math.sqrt(dof / (1 - want**2))
    assert r.pvalue == pytest.approx(2 * stats.t.sf(abs(t), dof), rel=1e-8)
    assert r.ci[0] < r.statistic < r.ci[1]
    # confounded: x and y related only through z -> partial near 0, plain Spearman not
    y2 = z + rng.normal(size=300)
    assert abs(partial_spearman(x, y2, z).statistic) < 0.12 < stats.spearmanr(x, y2).statistic


def test_generic_bootstrap_with_a_vectorised_statistic():
    rng = np.random.default_rng(7)
    a = rng.normal(size=80)
    res = bootstrap([a], lambda x, axis=-1: np.median(x, axis=axis), n_boot=1000, seed=0)
    assert res.estimate == pytest.approx(np.median(a))
    assert res.ci[0] < res.estimate < res.ci[1] and len(res.distribution) == 1000
    m = bootstrap_mean_ci(a, n_boot=1000, seed=0)
    assert m.estimate == pytest.approx(a.mean()) and m.method == "BCa"
    with pytest.raises(ValueError, match="method"):
        bootstrap([a], None, method="basic")


# ----------------------------------------------------------------------------------------------
# the own implementations against scipy.stats (the independent reference; analyze never imports
# it): ranks, Wilcoxon, paired t, Spearman, quantiles, power
# ----------------------------------------------------------------------------------------------
def close(got, want, rtol=1e-12):
    """``got == want`` within ``rtol`` relative (also in the deep tails, above 1e-300), exactly
    equal below that, at 0 and at +-inf; NaN matches NaN."""
    if math.isnan(want):
        return math.isnan(got)
    if abs(want) <= 1e-300 or math.isinf(want):
        return got == want
    return abs(got - want) <= rtol * abs(want)


rows = st.integers(1, 4).flatmap(
    lambda b: st.integers(0, 30).flatmap(
        lambda n: st.lists(
            st.lists(
                st.one_of(
                    st.integers(-3, 3).map(float),  # many ties
                    st.floats(-1e6, 1e6, allow_nan=False),
                    st.just(math.nan),
                ),
                min_size=n,
                max_size=n,
            ),
            min_size=b,
            max_size=b,
        )
    )
)


@settings(max_examples=300, deadline=None)
@given(rows)
def test_rankdata_matches_scipy(x):
    a = np.array(x, dtype=np.float64).reshape(len(x), -1)
    np.testing.assert_array_equal(rankdata(a), stats.rankdata(a, axis=-1))
    np.testing.assert_array_equal(rankdata(a[0]), stats.rankdata(a[0]))


def test_rankdata_edge_cases():
    assert rankdata([]).shape == (0,) and rankdata(np.zeros((3, 0))).shape == (3, 0)
    np.testing.assert_array_equal(rankdata(5.0), [1.0])
    np.testing.assert_array_equal(rankdata([7, 7, 7, 7]), [2.5, 2.5, 2.5, 2.5])
    np.testing.assert_array_equal(rankdata([[3, 1, 2], [1, 1, 9]]), [[3, 1, 2], [1.5, 1.5, 3]])
    r = rankdata([[1.0, np.nan, 2.0], [2.0, 1.0, 0.0]])
    assert np.isnan(r[0]).all() and list(r[1]) == [3.0, 2.0, 1.0]  # NaN row all NaN (scipy)
    big = np.random.default_rng(0).integers(0, 50, size=(3, 20000)).astype(float)
    np.testing.assert_array_equal(rankdata(big), stats.rankdata(big, axis=-1))


def _scipy_wilcoxon(d, method):
    if method == "exact":
        return stats.wilcoxon(d, zero_method="wilcox", method="exact")
    return stats.wilcoxon(d, zero_method="wilcox", method="asymptotic", correction=True)


def check_wilcoxon(d):
    d = np.asarray(d, dtype=np.float64)
    s, p, method = wilcoxon_signed_rank(d)
    f = d[np.isfinite(d)]
    if len(f) == 0 or np.all(f == 0):
        return method
    nz = np.abs(f[f != 0])
    want = "exact" if len(nz) <= 50 and len(np.unique(nz)) == len(nz) else "asymptotic"
    assert method == ("exact" if want == "exact" else WILCOXON_NORMAL)
    ref = _scipy_wilcoxon(f, want)
    assert s == ref.statistic, (s, ref.statistic)
    assert close(p, float(ref.pvalue)), (p, ref.pvalue)
    return method


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.integers(-4, 4).map(float),  # ties and zeros
            st.floats(-100, 100, allow_nan=False, allow_infinity=False),
            st.sampled_from([math.nan, math.inf]),
        ),
        min_size=0,
        max_size=70,
    )
)
def test_wilcoxon_matches_scipy(d):
    check_wilcoxon(d)


def test_wilcoxon_small_huge_and_tail_cases():
    rng = np.random.default_rng(11)
    assert check_wilcoxon([2.5]) == "exact" and wilcoxon_signed_rank([2.5])[1] == 1.0
    assert check_wilcoxon([1.0, -2.0]) == "exact"
    assert check_wilcoxon([1.0, 1.0]) == WILCOXON_NORMAL  # n = 2 with a tie
    assert check_wilcoxon([0.0, 0.0, 3.0]) == "exact"
    # deepest exact tail: 50 positive differences, p = 2 / 2**50
    s, p, _ = wilcoxon_signed_rank(np.arange(1.0, 51.0))
    assert s == 0.0 and p == 2.0**-49 and check_wilcoxon(np.arange(1.0, 51.0)) == "exact"
    assert check_wilcoxon(np.arange(1.0, 52.0)) == WILCOXON_NORMAL  # n = 51: asymptotic
    for n in (200, 5000, 20000):  # asymptotic, down to p far below 1e-300 (exactly 0 there)
        for shift in (0.0, 0.05, 0.5, 3.0):
            check_wilcoxon(rng.normal(shift, 1.0, size=n))
            check_wilcoxon(np.round(rng.normal(shift, 1.0, size=n), 1))
    assert wilcoxon_signed_rank(np.full(300, 0.7))[1] < 1e-50
    check_wilcoxon(np.full(300, 0.7))  # all tied
    check_wilcoxon(np.r_[np.zeros(5), np.full(12, -1.0)])


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.sampled_from([2, 3, 4, 7, 30, 500]),
    shift=st.sampled_from([0.0, 0.3, 3.0, 40.0]),
    rounding=st.sampled_from([None, 0, 1]),
)
def test_paired_t_and_spearman_match_scipy(seed, n, shift, rounding):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = x * rng.choice([-1.0, 0.2, 1.0]) + shift + rng.normal(scale=0.1, size=n)
    if rounding is not None:
        x, y = np.round(x, rounding), np.round(y, rounding)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tt = stats.ttest_rel(y, x)
        sr = stats.spearmanr(x, y)
    t, p = paired_t_test(y - x)
    assert close(t, float(tt.statistic)) and close(p, float(tt.pvalue)), (t, p, tt)
    rho, ps = spearman(x, y)
    assert close(rho, float(sr.statistic)) and close(ps, float(sr.pvalue)), (rho, ps, sr)


def test_spearman_and_t_edge_cases():
    assert all(math.isnan(v) for v in spearman([1.0], [2.0]))
    assert all(math.isnan(v) for v in spearman([1, 1, 1], [1, 2, 3]))  # constant: undefined
    assert all(math.isnan(v) for v in spearman([1, np.nan, 3], [1, 2, 3]))  # NaN propagates
    assert spearman([1, 2, 3, 4], [2, 4, 8, 16]) == (1.0, 0.0)
    n2 = spearman([1.0, 2.0], [2.0, 1.0])
    ref = stats.spearmanr([1.0, 2.0], [2.0, 1.0])
    assert n2[0] == ref.statistic and math.isnan(n2[1]) and math.isnan(ref.pvalue)
    assert all(math.isnan(v) for v in paired_t_test([3.0]))
    assert paired_t_test([2.0, 2.0, 2.0]) == (math.inf, 0.0)  # ttest_rel gives the same
    with pytest.raises(ValueError, match="equal lengths"):
        spearman([1, 2, 3], [1, 2])


def test_spearman_bootstrap_ranks_resamples_like_rankdata():
    # the CI resamples dense codes ranked by counting; its distribution must be the one of
    # ranking every resample of the values themselves (scipy's rankdata as the reference)
    rng = np.random.default_rng(8)
    x = np.round(rng.normal(size=60), 1)  # ties
    y = np.round(x + rng.normal(size=60), 1)

    def ref_stat(a, b, axis=-1):
        ra, rb = stats.rankdata(a, axis=-1), stats.rankdata(b, axis=-1)
        ra, rb = ra - ra.mean(-1, keepdims=True), rb - rb.mean(-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (ra * rb).sum(-1) / np.sqrt((ra * ra).sum(-1) * (rb * rb).sum(-1))

    r = spearman_with_ci(x, y, n_boot=500, seed=4)
    ref = bootstrap([x, y], ref_stat, n_boot=500, seed=4, method="percentile")
    np.testing.assert_allclose(r.distribution, ref.distribution, rtol=1e-14, equal_nan=True)
    assert r.ci == pytest.approx(ref.ci, rel=1e-14)
    rho, p = stats.spearmanr(x, y)
    assert r.statistic == rho and r.pvalue == p


def test_quantiles_and_power_match_scipy():
    for n in (2, 3, 10, 37, 1000):
        for c in (0.5, 0.9, 0.95, 0.999):
            m, lo, hi = mean_ci(np.arange(float(n)) ** 1.5, c)
            a = np.arange(float(n)) ** 1.5
            h = stats.t.ppf((1 + c) / 2, n - 1) * a.std(ddof=1) / math.sqrt(n)
            assert lo == pytest.approx(m - h, rel=1e-13) and hi == pytest.approx(m + h, rel=1e-13)
    for n in (51, 60, 400):
        want = stats.wilcoxon(np.arange(1.0, n + 1), method="asymptotic", correction=True).pvalue
        assert close(min_attainable_p(n), float(want))
    # detectable effect: scipy's t.ppf + nct + brentq as the reference; brentq stops within
    # xtol = 2e-12 of the root, the bisection goes down to adjacent floats
    from scipy.optimize import brentq

    def reference(n, m, alpha, power, test):
        n_eff = max(n * (3.0 / math.pi) if test == "wilcoxon" else float(n), 2.0)
        df = n_eff - 1.0
        crit = stats.t.ppf(1.0 - alpha / (2.0 * m), df)

        def pw(dz):
            nc = dz * math.sqrt(n_eff)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                up, lo = stats.nct.sf(crit, df, nc), stats.nct.cdf(-crit, df, nc)
            up = 1.0 if not math.isfinite(up) else up
            lo = 0.0 if not math.isfinite(lo) else lo
            return up + lo - power

        return brentq(pw, 1e-9, 20.0)

    for n in (3, 8, 30, 64, 500, 10000):
        for m in (1, 4, 48):
            for test in ("wilcoxon", "t"):
                for power in (0.5, 0.8, 0.95):
                    if min_corrected_p(n, m, test) >= 0.05:
                        assert detectable_effect(n, m, 0.05, power, test) == math.inf
                        continue
                    try:
                        want = reference(n, m, 0.05, power, test)
                    except ValueError:  # no root below d_z = 20: both refuse
                        with pytest.raises(ValueError, match="opposite signs"):
                            detectable_effect(n, m, 0.05, power, test)
                        continue
                    got = detectable_effect(n, m, 0.05, power, test)
                    assert abs(got - want) <= 2e-12 + 1e-15 * want, (n, m, test, power)


# ----------------------------------------------------------------------------------------------
# what the default analysis imports
# ----------------------------------------------------------------------------------------------
IMPORTS = textwrap.dedent(
    """
    import sys
    import attncmp.analyze.stats
    assert "scipy.stats" not in sys.modules and "scipy.special" not in sys.modules, "on import"
    from attncmp.analyze.outputs import AnalysisOptions, run_analysis
    res = run_analysis([sys.argv[1]], sys.argv[2], AnalysisOptions(jobs=1, quiet=True))
    print("VERDICT", res.summary["verdict"]["overall"])
    print("SCIPY", [m for m in ("scipy.special", "scipy.stats", "scipy.optimize")
                    if m in sys.modules])
    """
)


def test_default_analysis_never_imports_scipy_stats(tmp_path):
    """A full default analysis, figures drawn in this process (jobs=1), in a fresh interpreter:
    its statistics use scipy.special (imported on first use), never scipy.stats or
    scipy.optimize (about 1 s and 0.5 s to import)."""
    store = study_store(tmp_path / "store.h5", n=24, n_layers=1, n_heads=2)
    r = subprocess.run(
        [sys.executable, "-c", IMPORTS, str(store), str(tmp_path / "analysis")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "VERDICT " in r.stdout
    loaded = r.stdout.split("SCIPY ", 1)[1]
    assert "scipy.special" in loaded  # the statistics ran, through scipy.special
    assert "scipy.stats" not in loaded and "scipy.optimize" not in loaded, loaded
    assert (tmp_path / "analysis" / "attention_vs_error.png").exists()
