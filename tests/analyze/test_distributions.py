"""analyze.distributions (scipy.special) against scipy.stats, the independent reference, on grids
that reach into the tails; and the bisection root finder against scipy.optimize.brentq."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from attncmp.analyze.distributions import (
    beta_ppf,
    bisect_root,
    nct_cdf,
    nct_sf,
    norm_cdf,
    norm_ppf,
    norm_sf,
    t_ppf,
    t_sf,
)
from scipy import optimize, stats

RTOL = 1e-12


def assert_close(got, want, rtol=RTOL):
    """Equal within ``rtol`` relative where the reference is above 1e-300 (deep tails compared
    relative), equal where it is 0, +-inf or NaN."""
    got, want = np.broadcast_arrays(np.asarray(got, dtype=float), np.asarray(want, dtype=float))
    tiny = np.abs(want) <= 1e-300
    np.testing.assert_array_equal(got[tiny], want[tiny])
    np.testing.assert_allclose(got[~tiny], want[~tiny], rtol=rtol, atol=0)


X = np.concatenate([np.linspace(-40, 40, 161), [-1e300, -1e-10, 0.0, 1e-10, 1e300]])


def test_normal_cdf_sf_ppf():
    assert_close(norm_cdf(X), stats.norm.cdf(X))
    assert_close(norm_sf(X), stats.norm.sf(X))
    q = np.concatenate([[1e-300, 1e-100, 1e-12], np.linspace(0.001, 0.999, 101), [1 - 1e-12]])
    assert_close(norm_ppf(q), stats.norm.ppf(q))
    assert norm_sf(37.0) == pytest.approx(stats.norm.sf(37.0), rel=RTOL) and norm_sf(37.0) > 0


@pytest.mark.parametrize("df", [1, 2, 3.5, 9, 30, 99, 1000, 1e6])
def test_student_t_sf_and_ppf(df):
    assert_close(t_sf(X, df), stats.t.sf(X, df))
    q = np.concatenate([[1e-200, 1e-12, 0.0005], np.linspace(0.01, 0.99, 99), [0.9995]])
    assert_close(t_ppf(q, df), stats.t.ppf(q, df))
    assert_close(t_ppf(0.975, df), stats.t.ppf(0.975, df))  # scalar in, scalar out


def test_noncentral_t_both_tails():
    rng = np.random.default_rng(0)
    # everywhere (both tails, and Boost's NaN corners), and where the power calculation looks
    x = np.concatenate([rng.uniform(-60, 60, 20000), rng.uniform(1, 8, 3000)])
    df = np.concatenate([rng.uniform(1, 3000, 20000), rng.uniform(1, 300, 3000)])
    nc = np.concatenate([rng.uniform(-40, 40, 20000), rng.uniform(0, 12, 3000)])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # Boost: series did not converge
        cdf_ref, sf_ref = stats.nct.cdf(x, df, nc), stats.nct.sf(x, df, nc)
    assert_close(nct_cdf(x, df, nc), cdf_ref)  # NaN where scipy.stats gives NaN
    # the upper tail by reflection keeps its relative precision (1 - cdf would not); where
    # nctdtr cannot evaluate it, the bound nct.sf clips to
    up = nct_sf(x, df, nc)
    assert np.isnan(nct_cdf(x, df, nc)).any() and not np.isnan(up).any()
    assert_close(up, sf_ref)
    assert np.isnan(nct_sf(np.nan, 5, 1.0)) and np.isnan(nct_sf(1.0, 5, np.nan))
    far = stats.nct.sf(60.0, 20, 1.0)
    assert 0 < far < 1e-16 and nct_sf(60.0, 20, 1.0) == pytest.approx(far, rel=RTOL, abs=0)
    assert 1.0 - nct_cdf(60.0, 20, 1.0) == 0.0  # why the reflection


def test_beta_quantile():
    rng = np.random.default_rng(1)
    a = rng.integers(1, 500, 2000)
    b = rng.integers(1, 500, 2000)
    for q in (rng.uniform(0, 1, 2000), 0.025, 0.975, 1e-10):
        assert_close(beta_ppf(q, a, b), stats.beta.ppf(q, a, b))


def test_bisect_root_against_brentq():
    for c in (0.1, 2.0, 7.3):
        f = lambda x, c=c: x**3 - c  # noqa: E731
        got = bisect_root(f, 0.0, 5.0)
        assert got == pytest.approx(c ** (1 / 3), rel=4e-16)
        assert abs(got - optimize.brentq(f, 0.0, 5.0)) <= 2e-12 + 4 * np.finfo(float).eps * got
    assert bisect_root(lambda x: x - 1.0, 1.0, 3.0) == 1.0  # a root at an end
    assert bisect_root(lambda x: 2.0 - x, 0.0, 5.0) == 2.0  # falling function
    with pytest.raises(ValueError, match="opposite signs"):
        bisect_root(lambda x: x * x + 1.0, -1.0, 1.0)
    assert math.isfinite(bisect_root(math.atan, -1e-9, 20.0))
