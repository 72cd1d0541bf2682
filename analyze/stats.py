"""Paired statistics with the sample as the statistical unit (numpy + scipy.special).

Sign convention everywhere: **difference = variant - baseline** (positive when the variant's value
is larger). Every random procedure takes a ``seed`` and records it in its result; identical inputs
give identical outputs. Bootstrap procedures resample *sample indices* (pairs stay together).

The tests, ranks and correlations are computed here with numpy and the distribution functions of
:mod:`analyze.distributions` (``scipy.special``), never ``scipy.stats`` (about a second to
import): each is checked against its ``scipy.stats`` counterpart in ``tests/analyze``.

References: Efron, "Better bootstrap confidence intervals", JASA 82, 1987 (BCa); Wilcoxon (1945);
Kerby, "The simple difference formula", Comprehensive Psychology 3, 2014 (matched-pairs
rank-biserial); Lakens, Frontiers in Psychology 4:863, 2013 (Cohen's d_z); Holm, Scand. J. Stat. 6,
1979; Benjamini & Hochberg, JRSS B 57, 1995.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .distributions import bisect_root, nct_cdf, nct_sf, norm_cdf, norm_ppf, norm_sf, t_ppf, t_sf

__all__ = [
    "PairedResult",
    "CorrelationResult",
    "BootstrapResult",
    "paired_test",
    "correct_pvalues",
    "spearman_with_ci",
    "partial_spearman",
    "bootstrap",
    "bootstrap_mean_ci",
    "paired_bootstrap_ci",
    "mean_ci",
    "wilcoxon_signed_rank",
    "paired_t_test",
    "rankdata",
    "spearman",
    "hodges_lehmann_ci",
    "signed_rank_null_cdf",
    "min_attainable_p",
    "min_corrected_p",
    "samples_needed",
    "detectable_effect",
    "CI_METHODS",
    "CORRECTIONS",
    "PAIRED_COLUMNS",
    "WILCOXON_ZERO_METHOD",
    "WILCOXON_EXACT_MAX_N",
    "BOOTSTRAP_METHOD",
]

WILCOXON_ZERO_METHOD = "wilcox"  # zero differences are dropped before ranking (counted in n_zero)
WILCOXON_EXACT_MAX_N = 50  # exact null distribution up to this many non-zero differences
WILCOXON_EXACT = "exact"
WILCOXON_NORMAL = "normal approximation with continuity correction"
BOOTSTRAP_METHOD = "BCa"
_BLOCK = 1 << 22  # resampled values generated at once (memory bound for large n)


# ----------------------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------------------
def _vector(x: Any, name: str) -> np.ndarray:
    """``x`` as a 1-D float64 array; a scalar becomes length 1, 2-D input is refused (a paired
    test on two ``(5, 2)`` arrays must not silently become n = 10)."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0:
        return a.reshape(1)
    if a.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D (one value per sample), got shape {a.shape}")
    return a


def _check_confidence(confidence: float) -> None:
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"`confidence` must be in (0, 1), got {confidence}")


def _check_boot(n_boot: int) -> None:
    if n_boot < 0:
        raise ValueError(f"`n_boot` must be >= 0, got {n_boot}")


def _pairs(baseline: Any, variant: Any) -> tuple[np.ndarray, np.ndarray, int]:
    x = _vector(baseline, "baseline")
    y = _vector(variant, "variant")
    if x.shape != y.shape:
        raise ValueError(
            f"`baseline` and `variant` must have equal lengths (paired), got {len(x)} and {len(y)}"
        )
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok], int((~ok).sum())


# ----------------------------------------------------------------------------------------------
# bootstrap
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BootstrapResult:
    """A bootstrap estimate. ``distribution`` holds the ``n_boot`` resampled statistics."""

    estimate: float
    ci: tuple[float, float]
    confidence: float
    n: int
    n_boot: int
    seed: int
    method: str
    distribution: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.zeros(0))
    jackknife: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.zeros(0))

    def confidence_interval(self, confidence_level: float | None = None) -> tuple[float, float]:
        """The interval at ``confidence_level`` (default: the level it was computed at)."""
        if confidence_level is None or confidence_level == self.confidence:
            return self.ci
        _check_confidence(confidence_level)
        return _interval(
            self.estimate, self.distribution, self.jackknife, confidence_level, self.method
        )


def _resample_indices(rng: np.random.Generator, n: int, n_boot: int):
    """Yield blocks of resample index rows ``[b, n]`` (deterministic given the generator)."""
    per = max(1, _BLOCK // max(n, 1))
    done = 0
    while done < n_boot:
        b = min(per, n_boot - done)
        yield rng.integers(0, n, size=(b, n))
        done += b


def _interval(est, dist, jack, confidence, method) -> tuple[float, float]:
    dist = np.asarray(dist)
    dist = dist[np.isfinite(dist)]
    if len(dist) == 0 or not np.isfinite(est):
        return (math.nan, math.nan)
    alpha = (1.0 - confidence) / 2.0
    if np.all(dist == dist[0]):
        return (float(dist[0]), float(dist[0]))
    if method == "percentile":
        lo, hi = np.quantile(dist, [alpha, 1.0 - alpha])
        return (float(lo), float(hi))
    # BCa (Efron 1987)
    prop = (np.sum(dist < est) + 0.5 * np.sum(dist == est)) / len(dist)
    prop = min(max(prop, 1.0 / (2 * len(dist))), 1.0 - 1.0 / (2 * len(dist)))
    z0 = norm_ppf(prop)
    jm = jack.mean() if len(jack) else 0.0
    num = np.sum((jm - jack) ** 3)
    den = 6.0 * np.sum((jm - jack) ** 2) ** 1.5
    a = num / den if den > 0 else 0.0
    out = []
    for q in (alpha, 1.0 - alpha):
        zq = norm_ppf(q)
        adj = norm_cdf(z0 + (z0 + zq) / (1.0 - a * (z0 + zq)))
        out.append(float(np.quantile(dist, adj)))
    return (out[0], out[1])


def bootstrap(
    columns: Sequence[Any],
    statistic: Callable[..., np.ndarray] | None = None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    method: str = BOOTSTRAP_METHOD,
) -> BootstrapResult:
    r"""Bootstrap a statistic of one or more paired columns by resampling sample indices.

    Parameters
    ----------
    columns : equal-length 1-D arrays; row ``i`` of every column is sample ``i`` (kept together).
    statistic : vectorised ``f(*cols, axis=-1) -> values`` (default: mean of the first column).
    method : ``"BCa"`` (bias-corrected and accelerated, Efron 1987; acceleration from the
        jackknife) or ``"percentile"``.

    NaN rows (in any column) are dropped first. ``n_boot = 0`` gives a NaN interval.
    """
    _check_confidence(confidence)
    _check_boot(n_boot)
    if method not in ("BCa", "percentile"):
        raise ValueError(f"`method` must be 'BCa' or 'percentile', got {method!r}")
    cols = [_vector(c, f"columns[{i}]") for i, c in enumerate(columns)]
    if not cols:
        raise ValueError("`columns` is empty")
    n0 = len(cols[0])
    if any(len(c) != n0 for c in cols):
        raise ValueError(f"`columns` must have equal lengths, got {[len(c) for c in cols]}")
    ok = np.all([np.isfinite(c) for c in cols], axis=0) if n0 else np.zeros(0, dtype=bool)
    cols = [c[ok] for c in cols]
    n = len(cols[0])
    is_mean = statistic is None
    if is_mean:

        def statistic(x, *rest, axis=-1):
            return np.mean(x, axis=axis)

    if n == 0:
        return BootstrapResult(math.nan, (math.nan, math.nan), confidence, 0, n_boot, seed, method)
    est = float(statistic(*cols, axis=-1))
    if n_boot == 0 or n < 2:
        return BootstrapResult(est, (math.nan, math.nan), confidence, n, n_boot, seed, method)
    rng = np.random.default_rng(seed)
    parts = []
    for idx in _resample_indices(rng, n, n_boot):
        parts.append(np.asarray(statistic(*[c[idx] for c in cols], axis=-1), dtype=np.float64))
    dist = np.concatenate(parts)
    jack = np.zeros(0)
    if method == "BCa":
        if is_mean:
            jack = (cols[0].sum() - cols[0]) / (n - 1)
        else:
            jack = np.empty(n)
            per = max(1, _BLOCK // max(n, 1))
            base = np.arange(n - 1)
            for lo in range(0, n, per):
                ii = np.arange(lo, min(n, lo + per))
                loo = base[None, :] + (base[None, :] >= ii[:, None])  # rows: leave-one-out
                jack[ii] = statistic(*[c[loo] for c in cols], axis=-1)
    ci = _interval(est, dist, jack, confidence, method)
    return BootstrapResult(est, ci, confidence, n, n_boot, seed, method, dist, jack)


def bootstrap_mean_ci(
    x: Any, *, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95, method: str = "BCa"
) -> BootstrapResult:
    """Bootstrap CI of the mean of ``x`` (NaN dropped)."""
    return bootstrap([x], None, n_boot=n_boot, seed=seed, confidence=confidence, method=method)


def paired_bootstrap_ci(
    baseline: Any,
    variant: Any,
    *,
    statistic: Callable[..., np.ndarray] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    method: str = "BCa",
) -> BootstrapResult:
    """Paired bootstrap CI (pairs resampled together) of ``statistic(baseline, variant)``.

    Default statistic: mean of ``variant - baseline``.
    """
    x, y, _ = _pairs(baseline, variant)
    if statistic is None:
        return bootstrap(
            [y - x], None, n_boot=n_boot, seed=seed, confidence=confidence, method=method
        )
    return bootstrap(
        [x, y], statistic, n_boot=n_boot, seed=seed, confidence=confidence, method=method
    )


def mean_ci(
    x: Any, confidence: float = 0.95, bounds: tuple[float, float] | None = None
) -> tuple[float, float, float]:
    r"""Mean and t-based CI, :math:`\bar x \pm t_{(1+c)/2,\,n-1}\, s/\sqrt{n}` (NaN dropped).

    ``bounds = (low, high)``: the range the values (hence their mean) cannot leave, e.g.
    ``(0, 1)`` for a per-sample proportion such as gold pointing accuracy (each metric's
    ``range`` in :mod:`analyze.registry`, :func:`analyze.registry.metric_range`). The t
    interval is then clipped to it: near a bound (a rare event, a saturated weight) the
    symmetric interval would otherwise reach impossible values (an accuracy below 0). Clipping
    removes only impossible values, so the coverage of the interval is unchanged; use
    ``bounds=None`` for the plain t interval.

    Returns ``(mean, low, high)``; the interval is NaN for fewer than two values.
    """
    _check_confidence(confidence)
    a = _vector(x, "x")
    a = a[np.isfinite(a)]
    n = len(a)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    m = float(a.mean())
    if n < 2:
        return (m, math.nan, math.nan)
    se = float(a.std(ddof=1)) / math.sqrt(n)
    t = float(t_ppf((1.0 + confidence) / 2.0, n - 1))
    lo, hi = m - t * se, m + t * se
    if bounds is not None:
        blo, bhi = _check_bounds(bounds)
        lo, hi = min(max(lo, blo), bhi), min(max(hi, blo), bhi)
    return (m, lo, hi)


def _check_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    try:
        blo, bhi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"`bounds` must be a (low, high) pair, got {bounds!r}") from None
    if not blo <= bhi:
        raise ValueError(f"`bounds` must satisfy low <= high, got {bounds!r}")
    return blo, bhi


# ----------------------------------------------------------------------------------------------
# ranks
# ----------------------------------------------------------------------------------------------
def rankdata(a: Any) -> np.ndarray:
    r"""Ranks along the last axis, ties given the average of the ranks they span (1-based):
    ``scipy.stats.rankdata(a, axis=-1)`` (``method="average"``, ``nan_policy="propagate"``).

    A value :math:`v` that occurs :math:`c` times after :math:`s` smaller values gets rank
    :math:`s + (c + 1)/2`. Vectorised over leading axes (one sort per row, then the tie groups
    of the sorted row: their first and last positions by running max/min), so a ``[b, n]``
    bootstrap block is ranked in one call. A row holding a NaN is all NaN. Returns float64
    (a scalar is ranked as a length-1 row).
    """
    x = np.asarray(a, dtype=np.float64)
    if x.ndim == 0:
        x = x.reshape(1)
    n = x.shape[-1]
    if n == 0:
        return np.zeros(x.shape)
    order = np.argsort(x, axis=-1)
    s = np.take_along_axis(x, order, axis=-1)
    pos = np.broadcast_to(np.arange(n, dtype=np.float64), s.shape)
    new = np.ones(s.shape, dtype=bool)  # a tie group starts here
    new[..., 1:] = s[..., 1:] != s[..., :-1]
    last = np.ones(s.shape, dtype=bool)  # a tie group ends here
    last[..., :-1] = new[..., 1:]
    first_pos = np.maximum.accumulate(np.where(new, pos, 0.0), axis=-1)
    last_pos = np.minimum.accumulate(np.where(last, pos, n - 1.0)[..., ::-1], axis=-1)[..., ::-1]
    ranks = np.empty(s.shape)
    np.put_along_axis(ranks, order, (first_pos + last_pos) / 2.0 + 1.0, axis=-1)
    if np.isnan(s[..., -1]).any():  # argsort puts NaN last
        ranks[np.isnan(x).any(axis=-1)] = np.nan
    return ranks


def spearman(x: Any, y: Any) -> tuple[float, float]:
    r"""Spearman's rank correlation and its two-sided p-value, as ``scipy.stats.spearmanr``.

    .. math::

        \rho = \operatorname{corr}(\operatorname{rank} x, \operatorname{rank} y),\qquad
        t = \rho \sqrt{\frac{n - 2}{(1 + \rho)(1 - \rho)}},\qquad
        p = 2\, P(T_{n-2} > |t|)

    Ties get average ranks (:func:`rankdata`); :math:`\rho` is the Pearson correlation of the
    ranks (``numpy.corrcoef``, clipped to [-1, 1]). NaN anywhere, fewer than two pairs or a
    constant input give ``(nan, nan)``; :math:`|\rho| = 1` gives p = 0 (NaN for n = 2). Returns
    ``(rho, pvalue)``. Reference: Zar, "Significance testing of the Spearman rank correlation
    coefficient", JASA 67, 1972.
    """
    a = _vector(x, "x")
    b = _vector(y, "y")
    if a.shape != b.shape:
        raise ValueError(f"`x` and `y` must have equal lengths, got {len(a)} and {len(b)}")
    n = len(a)
    if n < 2 or np.all(a == a[0]) or np.all(b == b[0]) or np.isnan(a).any() or np.isnan(b).any():
        return (math.nan, math.nan)
    rho = np.corrcoef(np.column_stack((rankdata(a), rankdata(b))), rowvar=False)[1, 0]
    dof = n - 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t = rho * np.sqrt(np.clip(dof / ((rho + 1.0) * (1.0 - rho)), 0.0, None))
    return (float(rho), float(2.0 * t_sf(abs(t), dof)))


# ----------------------------------------------------------------------------------------------
# paired t-test, Wilcoxon signed-rank
# ----------------------------------------------------------------------------------------------
def paired_t_test(d: Any) -> tuple[float, float]:
    r"""Two-sided one-sample t-test of the paired differences ``d`` against 0 (NaN dropped):
    ``scipy.stats.ttest_rel(variant, baseline)`` with ``d = variant - baseline``.

    .. math::

        t = \frac{\bar d}{s_d / \sqrt n},\qquad p = 2\, P(T_{n-1} > |t|)

    Returns ``(statistic, pvalue)``; fewer than two values give NaN, constant non-zero
    differences :math:`t = \pm\infty` with p = 0, all zero NaN.
    """
    a = _vector(d, "d")
    a = a[np.isfinite(a)]
    n = len(a)
    if n < 2:
        return (math.nan, math.nan)
    m = a.mean()
    var = np.mean((a - m) ** 2) * (n / (n - 1.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = m / np.sqrt(var / n)
    return (float(t), float(2.0 * t_sf(abs(t), n - 1)))


def wilcoxon_signed_rank(d: Any) -> tuple[float, float, str]:
    r"""Two-sided Wilcoxon signed-rank test of the paired differences ``d`` (NaN dropped).

    Returns ``(statistic, pvalue, method)``; the statistic is :math:`\min(T_+, T_-)` as in
    ``scipy.stats.wilcoxon``, whose p-values it reproduces. Zero differences are dropped
    before ranking (``zero_method="wilcox"``, Wilcoxon 1945); the test is then on the
    :math:`n'` non-zero differences, ranked by :math:`|d|` with average ranks for ties. The
    p-value method is chosen here, not by scipy's ``"auto"`` (which switches to a slow
    permutation test, about 1 s per call, for :math:`n \le 13` with ties or zeros):

    * ``"exact"`` (scipy's ``method="exact"``): :math:`n' \le` :data:`WILCOXON_EXACT_MAX_N`
      (50) and no ties among the :math:`|d|`. Conditional on the zeros, the signs of the
      non-zero differences are independent fair coins under the null, so the null distribution
      of :math:`T_+` on ranks :math:`1..n'` (:func:`signed_rank_null_cdf`) is exact with zeros
      present too; by its symmetry :math:`p = \min(1,\ 2 P(T_+ \le \min(T_+, T_-)))`.
    * otherwise the normal approximation with the tie-corrected variance and a continuity
      correction of 0.5 (scipy's ``method="asymptotic", correction=True``), labelled
      ``"normal approximation with continuity correction"``:

      .. math::

          \sigma^2 = \frac{n'(n'+1)(2n'+1) - \tfrac12 \sum_g (t_g^3 - t_g)}{24},\quad
          z = \frac{T_+ - n'(n'+1)/4 - \tfrac12 \operatorname{sign}(\cdot)}{\sigma},\quad
          p = 2\,(1 - \Phi(|z|))

      over the tie groups :math:`g` of sizes :math:`t_g`.

    All differences zero gives ``(0.0, 1.0, "all differences zero")``; no data gives NaN.
    """
    a = _vector(d, "d")
    a = a[np.isfinite(a)]
    if len(a) == 0:
        return (math.nan, math.nan, "")
    nz = a[a != 0]
    n = len(nz)
    if n == 0:
        return (0.0, 1.0, "all differences zero")
    mag = np.abs(nz)
    r = rankdata(mag)
    t_plus = float(r[nz > 0].sum())
    t_minus = float(r[nz < 0].sum())
    stat = min(t_plus, t_minus)
    counts = np.unique(mag, return_counts=True)[1].astype(np.float64)  # tie group sizes
    if n <= WILCOXON_EXACT_MAX_N and len(counts) == n:
        p = min(1.0, 2.0 * float(signed_rank_null_cdf(n)[int(stat)]))
        return (stat, p, WILCOXON_EXACT)
    mean = n * (n + 1.0) * 0.25
    var = n * (n + 1.0) * (2.0 * n + 1.0)
    se = math.sqrt((var - float(np.sum(counts**3 - counts)) / 2.0) / 24.0)
    z = (t_plus - mean) / se
    z -= math.copysign(0.5, z) / se if z != 0 else 0.0
    return (stat, float(2.0 * norm_sf(abs(z))), WILCOXON_NORMAL)


# ----------------------------------------------------------------------------------------------
# Hodges-Lehmann shift and the Wilcoxon-inverted interval
# ----------------------------------------------------------------------------------------------
WALSH_MAX_N = 3000  # Walsh averages are materialised (n (n + 1) / 2 values) up to this n


def signed_rank_null_cdf(n: int) -> np.ndarray:
    r"""Exact null CDF of the Wilcoxon signed-rank statistic :math:`T_+` for ``n`` untied,
    non-zero differences: ``cdf[c] = P(T_+ <= c)``, ``c = 0 .. n(n+1)/2``.

    Under the null the signs are independent fair coins, so the counts follow the generating
    function :math:`\prod_{i=1}^n (1 + x^i)` (computed by dynamic programming, exact in float64
    for ``n <= 50``; Wilcoxon 1945).
    """
    if n < 0:
        raise ValueError(f"`n` must be >= 0, got {n}")
    m = n * (n + 1) // 2
    counts = np.zeros(m + 1)
    counts[0] = 1.0
    for i in range(1, n + 1):
        counts[i:] = counts[i:] + counts[:-i]  # right side is a new array
    return np.cumsum(counts) / 2.0**n


def hodges_lehmann_ci(d: Any, confidence: float = 0.95) -> tuple[float, float, float, str]:
    r"""Hodges-Lehmann shift of paired differences with the Wilcoxon-inverted interval.

    .. math::

        \hat\theta = \operatorname{median}_{i \le j} \frac{d_i + d_j}{2},\qquad
        [W_{(k)},\ W_{(M - k + 1)}]

    over the :math:`M = n(n+1)/2` Walsh averages :math:`W`, with :math:`k` the largest integer
    such that :math:`P(T_+ \le k - 1) \le (1-c)/2` under the null: the set of shifts
    :math:`\theta` the two-sided signed-rank test on :math:`d - \theta` does not reject at level
    :math:`1 - c` (Hollander & Wolfe, *Nonparametric Statistical Methods*, 3rd ed., 3.2). Exact
    null distribution for :math:`n \le 50`, else the normal approximation
    :math:`k = \lfloor M/2 - z_{(1+c)/2}\sqrt{n(n+1)(2n+1)/24}\rfloor`. Zero differences are
    kept (the estimate is of the pseudo-median of ``d``). NaN dropped; ``n < 2`` or
    ``n >`` :data:`WALSH_MAX_N` gives NaN. Returns ``(estimate, low, high, method)``; the
    coverage is at least ``confidence`` for continuous symmetric differences.
    """
    _check_confidence(confidence)
    a = _vector(d, "d")
    a = np.sort(a[np.isfinite(a)])
    n = len(a)
    if n < 2 or n > WALSH_MAX_N:
        return (math.nan, math.nan, math.nan, "")
    i, j = np.triu_indices(n)
    w = np.sort((a[i] + a[j]) / 2.0)
    m = len(w)
    est = float(np.median(w))
    half = (1.0 - confidence) / 2.0
    if n <= WILCOXON_EXACT_MAX_N:
        cdf = signed_rank_null_cdf(n)
        # k = largest integer with P(T+ <= k - 1) <= half  (cdf[k-1] <= half)
        k = int(np.searchsorted(cdf, half, side="right"))
        method = "Hodges-Lehmann, exact Wilcoxon-inverted interval"
    else:
        sd = math.sqrt(n * (n + 1) * (2 * n + 1) / 24.0)
        k = int(math.floor(m / 2.0 - float(norm_ppf(1.0 - half)) * sd))
        method = "Hodges-Lehmann, Wilcoxon-inverted interval (normal approximation)"
    if k < 1:  # too few samples for this confidence: the interval is unbounded
        return (est, -math.inf, math.inf, method)
    return (est, float(w[k - 1]), float(w[m - k]), method)


# ----------------------------------------------------------------------------------------------
# what a family of tests can reach
# ----------------------------------------------------------------------------------------------
def min_attainable_p(n: int, test: str = "wilcoxon") -> float:
    r"""Smallest two-sided p-value ``test`` can return with ``n`` non-zero paired differences.

    Wilcoxon signed-rank (as :func:`wilcoxon_signed_rank` computes it): exact for
    :math:`n \le 50`, :math:`2 \cdot 2^{-n}` (all differences of one sign); above, the continuity
    corrected normal approximation at :math:`T_+ = 0`. Paired t-test: 0 for ``n >= 2`` (its
    statistic is unbounded). NaN for ``n < 1`` (t: ``n < 2``).
    """
    if test not in ("wilcoxon", "t"):
        raise ValueError(f"`test` must be 'wilcoxon' or 't', got {test!r}")
    if test == "t":
        return 0.0 if n >= 2 else math.nan
    if n < 1:
        return math.nan
    if n <= WILCOXON_EXACT_MAX_N:
        return min(1.0, 2.0 * 0.5**n)
    m = n * (n + 1) / 4.0
    sd = math.sqrt(n * (n + 1) * (2 * n + 1) / 24.0)
    return float(min(1.0, 2.0 * norm_sf((m - 0.5) / sd)))


def min_corrected_p(n: int, family_size: int, test: str = "wilcoxon") -> float:
    r"""Smallest corrected p-value a test can reach in a family of ``family_size`` tests.

    Holm and Benjamini-Hochberg both multiply the smallest raw p-value by :math:`m` (Holm's first
    step; BH's rank-1 term), so a family can reject anything only if
    :math:`m \cdot p_{\min}(n) < \alpha` (:func:`min_attainable_p`).
    """
    if family_size < 1:
        return math.nan
    return min(1.0, family_size * min_attainable_p(n, test))


def samples_needed(family_size: int, alpha: float = 0.05, test: str = "wilcoxon") -> int:
    """Smallest ``n`` with :func:`min_corrected_p` below ``alpha`` (t-test: 2)."""
    if not 0 < alpha < 1:
        raise ValueError(f"`alpha` must be in (0, 1), got {alpha}")
    n = 2 if test == "t" else 1
    while min_corrected_p(n, family_size, test) >= alpha:
        n += 1
    return n


def detectable_effect(
    n: int, family_size: int, alpha: float = 0.05, power: float = 0.8, test: str = "wilcoxon"
) -> float:
    r"""Smallest :math:`|d_z|` detected with probability ``power`` by one test of the family.

    Two-sided paired t-test at the Bonferroni level :math:`\alpha/m` (Holm's first step, the
    conservative bound for a single true effect), power from the noncentral t distribution with
    :math:`n - 1` degrees of freedom. For the Wilcoxon test the sample size is scaled by its
    asymptotic relative efficiency under normal differences, :math:`3/\pi` (Lehmann,
    *Nonparametrics*, 1975, 2.4); when :func:`min_corrected_p` cannot reach ``alpha`` no effect
    is detectable and the result is ``inf``.
    """
    if n < 2 or family_size < 1:
        return math.nan
    if min_corrected_p(n, family_size, test) >= alpha:
        return math.inf
    n_eff = n * (3.0 / math.pi) if test == "wilcoxon" else float(n)
    n_eff = max(n_eff, 2.0)
    df = n_eff - 1.0
    crit = float(t_ppf(1.0 - alpha / (2.0 * family_size), df))

    def pw(dz: float) -> float:
        nc = dz * math.sqrt(n_eff)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            up = float(nct_sf(crit, df, nc))
            lo = float(nct_cdf(-crit, df, nc))
        up = 1.0 if not math.isfinite(up) else up
        lo = 0.0 if not math.isfinite(lo) else lo
        return up + lo - power

    return bisect_root(pw, 1e-9, 20.0)


# ----------------------------------------------------------------------------------------------
# paired test
# ----------------------------------------------------------------------------------------------
CI_METHODS = ("t", "BCa", "percentile")
CORRECTIONS = ("holm", "bh")  # multiple-comparison corrections of correct_pvalues
CI_METHOD_NAMES = {
    "t": "paired t interval",
    "BCa": "paired bootstrap BCa",
    "percentile": "paired bootstrap percentile",
}


@dataclass(frozen=True)
class PairedResult:
    """Paired comparison of one per-sample quantity (difference = variant - baseline).

    Fields: ``n`` pairs used, ``n_dropped`` pairs with a NaN, ``n_zero`` zero differences;
    per-variant means with t-based CIs; ``mean_diff`` with its CI (``ci_method``: ``"t"``, the
    paired t interval :math:`\\bar d \\pm t_{n-1} s_d/\\sqrt n`, by default; ``"BCa"`` or
    ``"percentile"``: seeded paired bootstrap); ``pct_change = 100 * mean_diff / mean_baseline``
    (NaN if the baseline mean is 0); paired t-test (:func:`paired_t_test`, as
    ``scipy.stats.ttest_rel(variant, baseline)``), Wilcoxon signed-rank on the differences
    (:func:`wilcoxon_signed_rank`; ``zero_method`` recorded, ``"wilcox"``: zeros dropped;
    ``wilcoxon_method`` says whether the p-value is exact or the continuity-corrected normal
    approximation; all differences zero gives statistic 0 and p = 1); ``hl_shift`` with
    ``ci_shift``: the Hodges-Lehmann shift and the Wilcoxon-inverted interval that goes with the
    Wilcoxon p (:func:`hodges_lehmann_ci`);
    Cohen's :math:`d_z = \\bar d / s_d`; matched-pairs rank-biserial
    :math:`r = (T_+ - T_-)/(T_+ + T_-)` (positive when the variant tends to be larger).
    ``mean_ci_bounds``: the range the per-variant t intervals were clipped to (see
    :func:`mean_ci`), ``None`` when unclipped.
    """

    n: int
    n_dropped: int
    n_zero: int
    mean_baseline: float
    ci_baseline: tuple[float, float]
    mean_variant: float
    ci_variant: tuple[float, float]
    mean_diff: float
    ci_diff: tuple[float, float]
    pct_change: float
    t_statistic: float
    t_pvalue: float
    wilcoxon_statistic: float
    wilcoxon_pvalue: float
    cohens_dz: float
    rank_biserial: float
    confidence: float
    n_boot: int
    seed: int
    method: str = "paired t-test (as scipy.stats.ttest_rel) and Wilcoxon signed-rank"
    ci_method: str = "t"
    wilcoxon_zero_method: str = WILCOXON_ZERO_METHOD
    wilcoxon_method: str = ""
    hl_shift: float = math.nan
    ci_shift: tuple[float, float] = (math.nan, math.nan)
    mean_ci_bounds: tuple[float, float] | None = None
    bootstrap: BootstrapResult | None = field(default=None, repr=False, compare=False)

    @property
    def estimate(self) -> float:
        """The mean difference (variant - baseline)."""
        return self.mean_diff

    @property
    def bootstrap_method(self) -> str | None:
        """The bootstrap interval type when ``ci_method`` is a bootstrap, else ``None``."""
        return self.ci_method if self.ci_method in ("BCa", "percentile") else None

    def confidence_interval(self, confidence_level: float | None = None) -> tuple[float, float]:
        """CI of the mean difference at ``confidence_level`` (default: as computed), by
        ``ci_method`` (the t interval, or the kept bootstrap distribution)."""
        if confidence_level is None or confidence_level == self.confidence:
            return self.ci_diff
        _check_confidence(confidence_level)
        if self.ci_method == "t":
            return _t_interval(self.mean_diff, self._sd(), self.n, confidence_level)
        if self.bootstrap is None:
            return (math.nan, math.nan)
        return self.bootstrap.confidence_interval(confidence_level)

    def _sd(self) -> float:
        if not (self.n > 1 and math.isfinite(self.cohens_dz)):
            return 0.0 if self.cohens_dz in (math.inf, -math.inf) else math.nan
        return abs(self.mean_diff / self.cohens_dz) if self.cohens_dz != 0 else math.nan

    def as_dict(self) -> dict[str, Any]:
        """The flat fields (one CSV/JSON column each)."""
        return {
            "n": self.n,
            "n_dropped": self.n_dropped,
            "n_zero": self.n_zero,
            "mean_baseline": self.mean_baseline,
            "ci_baseline_low": self.ci_baseline[0],
            "ci_baseline_high": self.ci_baseline[1],
            "mean_variant": self.mean_variant,
            "ci_variant_low": self.ci_variant[0],
            "ci_variant_high": self.ci_variant[1],
            "mean_diff": self.mean_diff,
            "ci_diff_low": self.ci_diff[0],
            "ci_diff_high": self.ci_diff[1],
            "ci_method": CI_METHOD_NAMES.get(self.ci_method, self.ci_method),
            "pct_change": self.pct_change,
            "t_statistic": self.t_statistic,
            "t_pvalue": self.t_pvalue,
            "wilcoxon_statistic": self.wilcoxon_statistic,
            "wilcoxon_pvalue": self.wilcoxon_pvalue,
            "wilcoxon_method": self.wilcoxon_method,
            "hl_shift": self.hl_shift,
            "ci_shift_low": self.ci_shift[0],
            "ci_shift_high": self.ci_shift[1],
            "cohens_dz": self.cohens_dz,
            "rank_biserial": self.rank_biserial,
        }


#: the flat column names of :meth:`PairedResult.as_dict`, in order
PAIRED_COLUMNS = (
    "n",
    "n_dropped",
    "n_zero",
    "mean_baseline",
    "ci_baseline_low",
    "ci_baseline_high",
    "mean_variant",
    "ci_variant_low",
    "ci_variant_high",
    "mean_diff",
    "ci_diff_low",
    "ci_diff_high",
    "ci_method",
    "pct_change",
    "t_statistic",
    "t_pvalue",
    "wilcoxon_statistic",
    "wilcoxon_pvalue",
    "wilcoxon_method",
    "hl_shift",
    "ci_shift_low",
    "ci_shift_high",
    "cohens_dz",
    "rank_biserial",
)


def _t_interval(m: float, sd: float, n: int, confidence: float) -> tuple[float, float]:
    if n < 2 or not (math.isfinite(m) and math.isfinite(sd)):
        return (math.nan, math.nan)
    h = float(t_ppf((1.0 + confidence) / 2.0, n - 1)) * sd / math.sqrt(n)
    return (m - h, m + h)


def _rank_biserial(d: np.ndarray) -> float:
    nz = d[d != 0]
    if len(nz) == 0:
        return 0.0
    r = rankdata(np.abs(nz))
    tp = float(r[nz > 0].sum())
    tm = float(r[nz < 0].sum())
    return (tp - tm) / (tp + tm)


def paired_test(
    baseline: Any,
    variant: Any,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    ci_method: str = "t",
    bounds: tuple[float, float] | None = None,
) -> PairedResult:
    r"""Paired comparison of per-sample values; **difference = variant - baseline**.

    .. math::

        d_i = v_i - b_i,\quad \bar d \pm t_{(1+c)/2,\,n-1}\frac{s_d}{\sqrt n},\quad
        t = \frac{\bar d}{s_d/\sqrt n},\quad d_z = \frac{\bar d}{s_d},\quad
        r_{rb} = \frac{T_+ - T_-}{T_+ + T_-}

    Pairs where either value is NaN/inf are dropped and counted (``n_dropped``).

    The CI of the mean difference (``ci_method``): ``"t"`` (default) is the paired t interval,
    which the calibration benchmark (``benchmarks/bench_calibration.py``) shows at its nominal
    coverage for n = 20-80 on skewed per-sample metrics; ``"BCa"`` / ``"percentile"`` are seeded
    paired bootstrap intervals (``n_boot`` resamples of sample indices with
    ``numpy.random.default_rng(seed)``), which under-cover at small n (BCa excluded 0 in 7-10% of
    null runs at n = 40). The Wilcoxon test (:func:`wilcoxon_signed_rank`) drops zero
    differences (``zero_method="wilcox"``; ``n_zero`` counts them) and uses the exact null
    distribution for at most 50 non-zero differences without ties, else the normal approximation
    with continuity correction (``wilcoxon_method`` says which); if every difference is zero,
    statistic 0 and p = 1. Its estimate and interval are ``hl_shift`` / ``ci_shift``
    (:func:`hodges_lehmann_ci`). If all differences are equal and non-zero, t = +-inf and p = 0
    (d_z likewise infinite). Empty input gives NaN.

    ``bounds = (low, high)``: the range of the metric; the per-variant mean CIs (t intervals)
    are clipped to it (see :func:`mean_ci`).

    References: scipy.stats.ttest_rel, scipy.stats.wilcoxon; Efron (1987); Kerby (2014);
    Hollander & Wolfe (2013).
    """
    _check_confidence(confidence)
    _check_boot(n_boot)
    if ci_method not in CI_METHODS:
        raise ValueError(f"`ci_method` must be one of {', '.join(CI_METHODS)}, got {ci_method!r}")
    x, y, dropped = _pairs(baseline, variant)
    n = len(x)
    nan2 = (math.nan, math.nan)
    if n == 0:
        return PairedResult(
            0,
            dropped,
            0,
            math.nan,
            nan2,
            math.nan,
            nan2,
            math.nan,
            nan2,
            math.nan,
            math.nan,
            math.nan,
            math.nan,
            math.nan,
            math.nan,
            math.nan,
            confidence,
            n_boot,
            seed,
            ci_method=ci_method,
            mean_ci_bounds=bounds,
        )
    if bounds is not None:
        bounds = _check_bounds(bounds)
    d = y - x
    mb, lb, hb = mean_ci(x, confidence, bounds)
    mv, lv, hv = mean_ci(y, confidence, bounds)
    md = float(d.mean())
    pct = 100.0 * md / mb if mb != 0 else math.nan
    n_zero = int(np.sum(d == 0))
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    boot = None
    if ci_method == "t":
        ci = (md, md) if n > 1 and sd == 0 else _t_interval(md, sd, n, confidence)
        if bounds is not None and all(math.isfinite(v) for v in ci):
            span = bounds[1] - bounds[0]  # a difference of two values in bounds is within +-span
            ci = (max(ci[0], -span), min(ci[1], span))
    else:
        boot = bootstrap(
            [d], None, n_boot=n_boot, seed=seed, confidence=confidence, method=ci_method
        )
        ci = boot.ci
    if n < 2:
        t, tp, dz = math.nan, math.nan, math.nan
    elif sd == 0 or not np.isfinite(sd):
        t = 0.0 if md == 0 else math.copysign(math.inf, md)
        tp = 1.0 if md == 0 else 0.0
        dz = 0.0 if md == 0 else math.copysign(math.inf, md)
    else:
        t, tp = paired_t_test(d)
        dz = md / sd
    ws, wp, wmethod = wilcoxon_signed_rank(d)
    hl, hlo, hhi, _ = hodges_lehmann_ci(d, confidence)
    return PairedResult(
        n=n,
        n_dropped=dropped,
        n_zero=n_zero,
        mean_baseline=mb,
        ci_baseline=(lb, hb),
        mean_variant=mv,
        ci_variant=(lv, hv),
        mean_diff=md,
        ci_diff=ci,
        pct_change=pct,
        t_statistic=t,
        t_pvalue=tp,
        wilcoxon_statistic=ws,
        wilcoxon_pvalue=wp,
        cohens_dz=dz,
        rank_biserial=_rank_biserial(d),
        confidence=confidence,
        n_boot=n_boot,
        seed=seed,
        ci_method=ci_method,
        wilcoxon_method=wmethod,
        hl_shift=hl,
        ci_shift=(hlo, hhi),
        mean_ci_bounds=bounds,
        bootstrap=boot,
    )


# ----------------------------------------------------------------------------------------------
# multiple comparisons
# ----------------------------------------------------------------------------------------------
def correct_pvalues(p: Any, method: str = "holm") -> np.ndarray:
    r"""Adjusted p-values for a family of tests.

    ``"holm"`` (Holm 1979, step-down, controls the family-wise error rate):
    :math:`\tilde p_{(i)} = \max_{j \le i} \min\{1, (m - j + 1) p_{(j)}\}`.
    ``"bh"`` (Benjamini-Hochberg 1995, step-up, controls the false discovery rate):
    :math:`\tilde p_{(i)} = \min_{j \ge i} \min\{1, m\, p_{(j)} / j\}`.
    NaN p-values stay NaN and are not counted in the family size :math:`m`.
    """
    if method not in CORRECTIONS:
        raise ValueError(f"`method` must be 'holm' or 'bh', got {method!r}")
    a = _vector(p, "p")
    out = np.full(a.shape, np.nan)
    ok = np.isfinite(a)
    v = a[ok]
    m = len(v)
    if m == 0:
        return out
    if np.any((v < 0) | (v > 1)):
        raise ValueError("`p` values must lie in [0, 1]")
    order = np.argsort(v, kind="stable")
    s = v[order]
    i = np.arange(1, m + 1)
    if method == "holm":
        adj = np.maximum.accumulate(np.minimum(1.0, (m - i + 1) * s))
    else:
        adj = np.minimum.accumulate(np.minimum(1.0, m * s / i)[::-1])[::-1]
    res = np.empty(m)
    res[order] = adj
    out[ok] = res
    return out


# ----------------------------------------------------------------------------------------------
# correlation
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CorrelationResult:
    """A (partial) rank correlation with its bootstrap CI (percentile method).

    ``distribution`` keeps the ``n_boot`` resampled correlations, so
    :meth:`confidence_interval` can give the interval at any level."""

    n: int
    statistic: float
    pvalue: float
    ci: tuple[float, float]
    confidence: float
    method: str
    n_boot: int
    seed: int
    covariates: int = 0
    distribution: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.zeros(0))

    def confidence_interval(self, confidence_level: float | None = None) -> tuple[float, float]:
        """Percentile interval at ``confidence_level`` (default: the level it was computed at);
        NaN when no bootstrap was run."""
        if confidence_level is None or confidence_level == self.confidence:
            return self.ci
        _check_confidence(confidence_level)
        return _interval(
            self.statistic, self.distribution, np.zeros(0), confidence_level, "percentile"
        )


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    num = np.sum(a * b, axis=-1)
    den = np.sqrt(np.sum(a * a, axis=-1) * np.sum(b * b, axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def _ranks_of_codes(codes: np.ndarray) -> np.ndarray:
    """:func:`rankdata` of values given by their dense codes (``0 .. n - 1`` along the last axis,
    equal values equal codes; ``numpy.unique(..., return_inverse=True)``), by counting instead
    of sorting: a code with ``c`` copies after ``s`` smaller ones gets ``s + (c + 1) / 2``.
    Exact (half-integers), and O(n) per row: several times faster on a bootstrap block."""
    c = np.asarray(codes).astype(np.intp)
    shape, n = c.shape, c.shape[-1]
    c = c.reshape(-1, n)
    flat = c + (np.arange(c.shape[0]) * n)[:, None]  # [rows, n], one bin range per row
    counts = np.bincount(flat.ravel(), minlength=c.size).astype(np.float64)
    below = np.cumsum(counts.reshape(-1, n), axis=1).ravel() - counts
    return (below + (counts + 1.0) / 2.0)[flat].reshape(shape)


def _spearman_codes_stat(cx, cy, axis=-1):
    """Spearman's rho of resampled dense codes (the bootstrap statistic of
    :func:`spearman_with_ci`): the Pearson correlation of :func:`rankdata` of the values."""
    return _pearson_rows(_ranks_of_codes(cx), _ranks_of_codes(cy))


def _percentile_ci(samples, statistic, n_boot: int, seed: int, confidence: float):
    """Percentile bootstrap CI of ``statistic`` (samples resampled together) and the resampled
    values; NaNs when ``n_boot`` is 0."""
    if not n_boot:
        return (math.nan, math.nan), np.zeros(0)
    b = bootstrap(
        samples, statistic, n_boot=n_boot, seed=seed, confidence=confidence, method="percentile"
    )
    return b.ci, b.distribution


def spearman_with_ci(
    x: Any, y: Any, *, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> CorrelationResult:
    """Spearman's rho and its p-value (:func:`spearman`) with a percentile bootstrap CI
    over resampled samples (pairs kept together; ranks recomputed in every resample)."""
    _check_confidence(confidence)
    _check_boot(n_boot)
    a, b, _ = _pairs(x, y)
    n = len(a)
    if n < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return CorrelationResult(
            n, math.nan, math.nan, (math.nan, math.nan), confidence, "spearman", n_boot, seed
        )
    rho, p = spearman(a, b)
    # resample the dense codes of the values: same ranks per resample, ranked without a sort
    codes = [np.unique(v, return_inverse=True)[1] for v in (a, b)]
    ci, dist = _percentile_ci(codes, _spearman_codes_stat, n_boot, seed, confidence)
    return CorrelationResult(
        n,
        rho,
        p,
        ci,
        confidence,
        "spearman (bootstrap percentile CI)",
        n_boot,
        seed,
        distribution=dist,
    )


def _partial_from_ranks(rx, ry, rz) -> np.ndarray:
    """Pearson correlation of the residuals of rx and ry after least squares on rz (per row)."""
    # rx, ry: [..., n]; rz: [..., n, k]
    ones = np.ones(rz.shape[:-1] + (1,))
    Z = np.concatenate([ones, rz], axis=-1)
    pinv = np.linalg.pinv(Z)  # [..., k+1, n]
    bx = pinv @ rx[..., None]
    by = pinv @ ry[..., None]
    ex = rx - (Z @ bx)[..., 0]
    ey = ry - (Z @ by)[..., 0]
    return _pearson_rows(ex, ey)


def partial_spearman(
    x: Any,
    y: Any,
    covariate: Any,
    *,
    n_boot: int = 0,
    seed: int = 0,
    confidence: float = 0.95,
) -> CorrelationResult:
    r"""Rank-based partial correlation of ``x`` and ``y`` controlling for ``covariate``.

    All variables are ranked; the ranks of ``x`` and of ``y`` are regressed (least squares, with
    intercept) on the covariate ranks, and the residuals are correlated (Pearson). With one
    covariate this equals :math:`(r_{xy} - r_{xz} r_{yz}) / \sqrt{(1-r_{xz}^2)(1-r_{yz}^2)}` on
    Spearman coefficients. p-value: t-test with :math:`n - 2 - k` degrees of freedom
    (:math:`k` covariates). Optional percentile bootstrap CI (``n_boot > 0``).
    ``covariate`` may be 1-D or ``[n, k]``.
    """
    _check_confidence(confidence)
    _check_boot(n_boot)
    xa = _vector(x, "x")
    ya = _vector(y, "y")
    z = np.asarray(covariate, dtype=np.float64)
    if z.ndim == 1:
        z = z[:, None]
    if not (len(xa) == len(ya) == len(z)):
        raise ValueError(
            f"`x`, `y`, `covariate` must have equal lengths, got {len(xa)}, {len(ya)}, {len(z)}"
        )
    ok = np.isfinite(xa) & np.isfinite(ya) & np.all(np.isfinite(z), axis=1)
    xa, ya, z = xa[ok], ya[ok], z[ok]
    n, k = len(xa), z.shape[1]
    nan = CorrelationResult(
        n, math.nan, math.nan, (math.nan, math.nan), confidence, "partial spearman", n_boot, seed, k
    )
    if n < k + 3:
        return nan
    rx, ry = rankdata(xa), rankdata(ya)
    rz = rankdata(z.T).T
    r = float(_partial_from_ranks(rx, ry, rz))
    if not np.isfinite(r):
        return nan
    dof = n - 2 - k
    if abs(r) >= 1:
        p = 0.0
    else:
        t = r * math.sqrt(dof / (1 - r * r))
        p = float(2 * t_sf(abs(t), dof))

    def stat(xx, yy, *zz, axis=-1):
        rzz = np.stack([rankdata(c) for c in zz], axis=-1)
        return _partial_from_ranks(rankdata(xx), rankdata(yy), rzz)

    ci, dist = _percentile_ci(
        [xa, ya, *[z[:, j] for j in range(k)]], stat, n_boot, seed, confidence
    )
    return CorrelationResult(
        n, r, p, ci, confidence, "partial spearman (rank residuals)", n_boot, seed, k, dist
    )
