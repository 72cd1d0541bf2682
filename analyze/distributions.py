"""Tail probabilities and quantiles of the normal, t, noncentral t and beta distributions, and a
bracketing root finder: ``scipy.special`` and plain Python, never ``scipy.stats``.

``import scipy.stats`` costs about a second (it builds every distribution object and parses
their docstrings) and ``scipy.optimize`` about half of one, while the few distribution functions
the statistics use are single ``scipy.special`` ufuncs (about a quarter of a second, imported on
first use). Each function here is the ufunc that the corresponding ``scipy.stats`` method calls
for these arguments, or, where noted, the identity that keeps the tail precise; the tests in
``tests/analyze/test_distributions.py`` compare each with ``scipy.stats``.

References: scipy.special (Cephes, Boost.Math); ``scipy.stats.norm``, ``t``, ``nct``, ``beta``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = [
    "norm_cdf",
    "norm_sf",
    "norm_ppf",
    "t_sf",
    "t_ppf",
    "nct_cdf",
    "nct_sf",
    "beta_ppf",
    "bisect_root",
]


def _special():
    """``scipy.special``, imported on first use (the figure workers and ``--help`` never test)."""
    import scipy.special

    return scipy.special


def norm_cdf(x):
    r""":math:`\Phi(x)`, the standard normal CDF (``scipy.special.ndtr``; = ``norm.cdf``)."""
    return _special().ndtr(x)


def norm_sf(x):
    r""":math:`1 - \Phi(x) = \Phi(-x)`, exact in the upper tail (= ``norm.sf``)."""
    return _special().ndtr(-np.asarray(x, dtype=np.float64))


def norm_ppf(q):
    r""":math:`\Phi^{-1}(q)` (``scipy.special.ndtri``; = ``norm.ppf``)."""
    return _special().ndtri(q)


def t_sf(x, df):
    r""":math:`P(T_{df} > x) = F_{df}(-x)` (``scipy.special.stdtr``; = ``t.sf``)."""
    return _special().stdtr(df, -np.asarray(x, dtype=np.float64))


def t_ppf(q, df):
    r"""Quantile :math:`F_{df}^{-1}(q)` of Student's t (``scipy.special.stdtrit``; = ``t.ppf``)."""
    return _special().stdtrit(df, q)


def nct_cdf(x, df, nc):
    r""":math:`P(T_{df,\delta} \le x)` of the noncentral t with noncentrality ``nc``
    (``scipy.special.nctdtr``; = ``nct.cdf``, NaN included: where Boost's result falls outside
    [0, 1] by rounding, a probability within about 1e-14 of 0 or 1, both return NaN)."""
    return _special().nctdtr(df, nc, x)


def nct_sf(x, df, nc):
    r""":math:`P(T_{df,\delta} > x) = P(T_{df,-\delta} < -x)`: since
    :math:`T = (Z + \delta)/\sqrt{V/df}`, :math:`-T` is noncentral t with :math:`-\delta`.
    Computed as that lower tail (``scipy.special.nctdtr``), so a small upper tail keeps its
    relative precision (``1 - nct_cdf`` would not); = ``scipy.stats.nct.sf`` (Boost's
    complement, clipped to [0, 1]). Where ``nctdtr`` gives NaN for valid arguments (its result
    is outside [0, 1] by rounding: the probability is within about 1e-14 of 0 or 1) the value
    is that bound, 1 for :math:`x < \delta` and 0 above, as ``nct.sf``'s clip gives it."""
    xa, dfa, nca = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (x, df, nc)))
    out = np.clip(_special().nctdtr(dfa, -nca, -xa), 0.0, 1.0)
    bound = np.isnan(out) & ~np.isnan(xa) & ~np.isnan(nca) & (dfa > 0)
    if bound.any():
        out = np.where(bound, (xa < nca).astype(np.float64), out)
    return out


def beta_ppf(q, a, b):
    r"""Quantile of the beta distribution, the inverse of the regularised incomplete beta
    function :math:`I_x(a, b) = q` (``scipy.special.betaincinv``; = ``beta.ppf``)."""
    return _special().betaincinv(a, b, q)


def bisect_root(f: Callable[[float], float], lo: float, hi: float) -> float:
    """Root of a continuous ``f`` with ``f(lo)`` and ``f(hi)`` of opposite signs, by bisection
    down to adjacent floats (at most about 1,100 halvings, usually 40-60): the result is the
    root to the precision ``f`` is computed with. ``scipy.optimize.brentq`` stops within
    ``2e-12 + 4 eps |x|`` of it; importing ``scipy.optimize`` costs about half a second.

    Raises ``ValueError`` when ``f(lo)`` and ``f(hi)`` have the same sign.
    """
    flo, fhi = f(lo), f(hi)
    if flo == 0:
        return float(lo)
    if fhi == 0:
        return float(hi)
    if math.copysign(1.0, flo) == math.copysign(1.0, fhi):
        raise ValueError(f"f(lo) = {flo} and f(hi) = {fhi} must have opposite signs")
    rising = fhi > 0
    while True:
        mid = lo + (hi - lo) / 2.0
        if not lo < mid < hi:  # adjacent floats: nothing left to halve
            break
        fm = f(mid)
        if fm == 0:
            return float(mid)
        if (fm > 0) == rising:
            hi, fhi = mid, fm
        else:
            lo, flo = mid, fm
    return float(lo if abs(flo) <= abs(fhi) else hi)  # the end whose value is nearer zero
