"""Per-row attention metrics over ragged rows (numpy only, vectorised segment reductions).

Layout
------
A set of attention rows of different lengths is held *flat*: ``data`` concatenates the rows and
``offsets`` (int64, ``n_rows + 1``, ``offsets[0] == 0``) delimits them, so row ``r`` is
``data[offsets[r]:offsets[r + 1]]``. Every row must have at least one key. This is exactly the
store's layout (a sample's ``[layers, heads, query, key]`` block is ``layers * heads * query`` rows
of length ``key``), so no padding ever enters a computation.

All reductions are segment reductions (``np.add.reduceat`` / ``np.maximum.reduceat`` on the row
starts). Order statistics (Gini, top-k, argmax) gather the rows of each distinct row length into a
2-D array and sort along the last axis: the loop runs over distinct *lengths* (at most a few hundred
per chunk), never over rows or samples. This is exact, and faster than a lexsort on
``(row, value)``.

Conventions (each function's docstring repeats its own)
-------------------------------------------------------
* ``0 log 0 = 0``; logarithms are natural (nats).
* Every metric is computed by one kernel, :func:`block_metrics` (2-D blocks of rows of one
  length); :func:`row_metrics` feeds it ragged rows, the single-metric functions are views of
  :func:`row_metrics`, and the table engine and the heatmap titles call the same kernel.
  Divergences between paired rows come from one kernel too, :func:`divergence_terms`.
* Rows are renormalised to sum to 1 (this also absorbs float16 rounding).
* A row with a single valid key: entropy 0, normalised entropy 0, perplexity 1, max weight 1,
  Gini 0, IPR 1, top-k mass 1.
* Special tokens (``[CLS]``, ``[SEP]``, ...) can be dropped and the row renormalised over the other
  keys. A row that puts (nearly) *all* its mass on special tokens has no distribution over the
  other keys: it is dropped (NaN, like an invalid row; its ``special_mass`` is kept) and counted
  in ``all_special_mass``, not imputed as uniform (which would report maximal entropy).
  A row whose keys are *all* special cannot be restricted; it keeps all its keys and is counted in
  ``all_special_keys``.
* Rows whose weights sum to 0 or contain NaN/inf are *invalid*: every metric of the row is NaN and
  the row is excluded (and counted) when rows are averaged into samples.

References
----------
Shannon (1948); Lin, "Divergence measures based on the Shannon entropy", IEEE Trans. Inf. Theory
37(1), 1991 (Jensen-Shannon divergence, generalised JSD); Gini (1912) and Damgaard & Weiner,
Ecology 81(4), 2000 (sorted-sample Gini formula); Derrida & Flyvbjerg (1987) (inverse participation
ratio).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ROW_METRICS",
    "RowMetrics",
    "Diagnostics",
    "row_metrics",
    "entropy",
    "normalized_entropy",
    "perplexity",
    "max_weight",
    "effective_tokens",
    "gini",
    "inverse_participation_ratio",
    "topk_mass",
    "special_mass",
    "jensen_shannon",
    "total_variation",
    "node_specificity",
    "gold_mass",
    "gold_chance",
    "pointing",
    "block_metrics",
    "block_divergence",
    "divergence_terms",
    "segment_mean",
    "segment_sum",
    "expand_positions",
]

ROW_METRICS = (
    "entropy",
    "norm_entropy",
    "perplexity",
    "max_weight",
    "effective_tokens",
    "gini",
    "ipr",
    "topk_mass",
    "special_mass",
)

_LN2 = float(np.log(2.0))
_TINY32 = np.float32(np.finfo(np.float32).tiny)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _offsets(offsets: Any, n: int | None = None, what: str = "offsets") -> np.ndarray:
    off = np.asarray(offsets, dtype=np.int64)
    if off.ndim != 1 or len(off) < 1 or off[0] != 0:
        raise ValueError(f"`{what}` must be 1-D, start at 0 and have n_rows + 1 entries")
    if len(off) > 1 and np.any(np.diff(off) < 1):
        raise ValueError(f"`{what}`: every row must have at least one key (empty row found)")
    if n is not None and off[-1] != n:
        raise ValueError(f"`{what}` ends at {int(off[-1])} but the data has {n} values")
    return off


def _as_float(x: Any) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    return x


def segment_sum(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sum of each segment ``values[offsets[i]:offsets[i+1]]`` (segments must be non-empty)."""
    if len(offsets) <= 1:
        return np.zeros(0, dtype=np.result_type(values.dtype, np.float32))
    return np.add.reduceat(values, offsets[:-1])


def segment_mean(values: Any, offsets: Any) -> tuple[np.ndarray, np.ndarray]:
    """NaN-ignoring mean of each segment of ``values``.

    Returns ``(mean, count)`` where ``count`` is the number of non-NaN values in the segment; a
    segment with no finite value has mean NaN and count 0 (it is *not* averaged in as 0).
    """
    v = np.asarray(values, dtype=np.float64)
    off = _offsets(offsets, len(v), "offsets")
    ok = ~np.isnan(v)
    if len(off) <= 1:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    cnt = np.add.reduceat(ok.astype(np.int64), off[:-1])
    tot = np.add.reduceat(np.where(ok, v, 0.0), off[:-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)
    return mean, cnt


def _row_of(positions: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Row index of each flat position."""
    return np.searchsorted(offsets, positions, side="right") - 1


def _positions(mask_or_index: Any, n: int, what: str) -> np.ndarray:
    """Accept a bool mask aligned with the data or an int array of flat positions."""
    a = np.asarray(mask_or_index)
    if a.dtype == bool:
        if a.shape != (n,):
            raise ValueError(f"`{what}` mask has {a.size} entries, the data has {n}")
        return np.flatnonzero(a)
    a = a.astype(np.int64).reshape(-1)
    if len(a) and (a.min() < 0 or a.max() >= n):
        raise ValueError(f"`{what}` positions out of range [0, {n})")
    return np.unique(a)


def expand_positions(
    item_sample: np.ndarray,
    item_local: np.ndarray,
    reps: np.ndarray,
    stride: np.ndarray,
    base: np.ndarray,
) -> np.ndarray:
    """Flat positions ``base[s] + j * stride[s] + local`` for ``j in range(reps[s])``, per item.

    Vectorised helper used to place per-key flags (special tokens) or per-cell flags (gold masks)
    into every row / head block of a sample without a loop over samples.
    """
    item_sample = np.asarray(item_sample, dtype=np.int64)
    if len(item_sample) == 0:
        return np.zeros(0, dtype=np.int64)
    r = np.asarray(reps, dtype=np.int64)[item_sample]
    total = int(r.sum())
    starts = np.cumsum(r) - r
    j = np.arange(total, dtype=np.int64) - np.repeat(starts, r)
    s = np.repeat(item_sample, r)
    return (
        np.asarray(base, dtype=np.int64)[s]
        + j * np.asarray(stride, dtype=np.int64)[s]
        + np.repeat(np.asarray(item_local, dtype=np.int64), r)
    )


# ----------------------------------------------------------------------------------------------
# single metrics: thin views of :func:`row_metrics` (one implementation of every formula)
# ----------------------------------------------------------------------------------------------
def _all(p: Any, offsets: Any, **kw) -> RowMetrics:
    return row_metrics(p, offsets, exclude_special=kw.pop("exclude_special", False), **kw)


def entropy(p: Any, offsets: Any) -> np.ndarray:
    r"""Shannon entropy of each row in nats (rows renormalised to sum to 1).

    .. math:: H(p) = -\sum_k p_k \ln p_k, \qquad 0 \ln 0 = 0

    Zero weights contribute nothing. Computed by :func:`block_metrics`.
    """
    return _all(p, offsets).entropy


def normalized_entropy(h: Any, n: Any) -> np.ndarray:
    r"""Entropy divided by its maximum, :math:`H / \ln n`, in [0, 1].

    ``n`` is the number of valid keys of the row. For ``n == 1`` the row has no choice to make and
    the value is defined as 0 (fully concentrated), not 0/0.
    """
    h = np.asarray(h, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 1, h / np.log(np.maximum(n, 2.0)), 0.0 * h)


def perplexity(h: Any) -> np.ndarray:
    r"""Perplexity :math:`e^{H}`: the effective number of keys attended (1 for a one-hot row)."""
    return np.exp(np.asarray(h, dtype=np.float64))


def max_weight(p: Any, offsets: Any) -> np.ndarray:
    r"""Largest weight of each row, :math:`\max_k p_k`."""
    return _all(p, offsets).max_weight


def effective_tokens(p: Any, offsets: Any, threshold: float = 0.1) -> np.ndarray:
    r"""Number of keys with weight above ``threshold``: :math:`\#\{k : p_k > t\}` (strict).

    At most :math:`\lceil 1/t \rceil - 1` keys can exceed :math:`t`. Caveat: the count is not
    monotone in concentration. Sharpening a diffuse row over many keys first lifts a few weights
    above the threshold (the count rises) before it falls towards 1, so "more concentrated" need
    not mean "fewer effective tokens"; entropy, max weight and Gini are monotone.
    """
    return _all(p, offsets, threshold=threshold).effective_tokens


def inverse_participation_ratio(p: Any, offsets: Any) -> np.ndarray:
    r"""Inverse participation ratio :math:`1 / \sum_k p_k^2` (1 = one-hot, n = uniform)."""
    return _all(p, offsets).ipr


def gini(p: Any, offsets: Any, n_valid: Any = None) -> np.ndarray:
    r"""Gini coefficient of each row (0 = uniform, (n-1)/n = one-hot).

    With the row sorted ascending, :math:`p_{(1)} \le \dots \le p_{(n)}`,

    .. math:: G = \frac{\sum_{i=1}^{n} (2i - n - 1)\, p_{(i)}}{n \sum_i p_{(i)}}

    ``n_valid`` (optional) is the number of keys that count when the row also holds ``m`` excluded
    keys set to 0 (e.g. dropped special tokens): those zeros are removed from the sorted sample
    exactly, :math:`G_n = (L\,G_L - m) / n` with :math:`L = n + m`. For ``n == 1`` the value is 0.
    Tiny negative values from rounding are clipped to 0.
    """
    off = _offsets(offsets, len(np.asarray(p)))
    g = _all(p, off).gini
    if n_valid is None:
        return g
    lengths = np.diff(off)
    nv = np.asarray(n_valid, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (lengths * g - (lengths - nv)) / nv
    return np.clip(np.where(nv == 1, 0.0, out), 0.0, 1.0)


def topk_mass(p: Any, offsets: Any, k: int = 3) -> np.ndarray:
    r"""Mass of the ``k`` largest weights, :math:`\sum_{i > n-k} p_{(i)}` (all mass if n <= k)."""
    if k < 1:
        raise ValueError(f"`k` must be >= 1, got {k}")
    return _all(p, offsets, top_k=k).topk_mass


def special_mass(w: Any, offsets: Any, special: Any) -> np.ndarray:
    r"""Share of each row's mass on special keys, :math:`\sum_{k\in S} w_k / \sum_k w_k`."""
    return _all(w, offsets, special=special).special_mass


def _check_pair(p: Any, q: Any, offsets: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p, q = _as_float(p), _as_float(q)
    if p.shape != q.shape:
        raise ValueError(f"`p` and `q` differ in length ({len(p)} vs {len(q)})")
    return p, q, _offsets(offsets, len(p))


def jensen_shannon(p: Any, q: Any, offsets: Any) -> np.ndarray:
    r"""Jensen-Shannon divergence between paired rows (natural log, in [0, ln 2]).

    .. math:: \mathrm{JSD}(p, q) = \tfrac12 \mathrm{KL}(p \,\|\, m)
        + \tfrac12 \mathrm{KL}(q \,\|\, m), \qquad m = \tfrac{p + q}{2}

    evaluated key by key as a sum of non-negative terms (:func:`divergence_terms`), accurate to
    about 1e-7 relative even for nearly equal rows (the entropy-difference form
    :math:`H(m) - \tfrac12 H(p) - \tfrac12 H(q)` cancels catastrophically there). Rows must be
    distributions over the same keys (same offsets). Reference: Lin (1991).
    """
    p, q, off = _check_pair(p, q, offsets)
    j, _ = divergence_terms(p, q)
    return np.minimum(segment_sum(j, off), _LN2)


def total_variation(p: Any, q: Any, offsets: Any) -> np.ndarray:
    r"""Total variation distance between paired rows, in [0, 1].

    .. math:: \mathrm{TV}(p, q) = \tfrac12 \sum_k |p_k - q_k|
    """
    p, q, off = _check_pair(p, q, offsets)
    _, t = divergence_terms(p, q)
    return segment_sum(t, off)


def _group_rows_check(off: np.ndarray, goff: np.ndarray) -> np.ndarray:
    lengths = np.diff(off)
    if goff[-1] != len(lengths):
        raise ValueError(
            f"`group_offsets` ends at {int(goff[-1])} but there are {len(lengths)} rows"
        )
    first = lengths[goff[:-1]]
    if np.any(np.repeat(first, np.diff(goff)) != lengths):
        raise ValueError("every row of a group must have the same length")
    return first


def node_specificity(p: Any, offsets: Any, group_offsets: Any) -> np.ndarray:
    r"""How differently the rows (nodes) of each group attend: the generalised JSD.

    For the :math:`Q` rows :math:`p_1..p_Q` of a group (one sample, layer and head) with mean row
    :math:`\bar p = \frac1Q \sum_i p_i`,

    .. math:: S = H(\bar p) - \frac1Q \sum_i H(p_i) = \frac1Q \sum_i \mathrm{KL}(p_i \,\|\, \bar p)

    (Lin 1991, generalised Jensen-Shannon divergence with equal weights), in nats, in
    :math:`[0, \min(\ln Q, \ln n)]` (not :math:`[0, \ln 2]`: that bound is for two rows).
    :math:`S = 0` exactly when every node attends identically. A one-row group has :math:`S = 0` by
    definition (it is never flagged as identical). Invalid rows are left out of the group.

    ``group_offsets`` delimits groups in units of rows; rows of one group must have equal length.
    """
    return _all(p, offsets, groups=group_offsets).specificity


def gold_mass(p: Any, offsets: Any, gold: Any) -> np.ndarray:
    r"""Mass on gold keys, :math:`\sum_{k \in G} p_k`; NaN for rows with no gold key.

    ``gold`` is a bool mask aligned with ``p`` or flat positions. Rows without any gold key are
    not applicable (NaN) and are left out of sample means rather than counted as 0.
    """
    return _all(p, offsets, gold=gold).gold_mass


def gold_chance(p: Any, offsets: Any, gold: Any) -> np.ndarray:
    r"""Chance level of :func:`gold_mass`: the mass a uniform row over the analysed keys puts on
    the gold keys, :math:`|G| / n`; NaN exactly where the gold mass is NaN."""
    return _all(p, offsets, gold=gold).gold_chance


def pointing(p: Any, offsets: Any, gold: Any) -> np.ndarray:
    r"""Pointing accuracy per row: 1.0 if :math:`\arg\max_k p_k` is a gold key else 0.0.

    The argmax is the first maximal key (``numpy.argmax``). NaN for rows with no gold key.
    """
    return _all(p, offsets, gold=gold).gold_pointing


# ----------------------------------------------------------------------------------------------
# everything at once (what the table engine uses)
# ----------------------------------------------------------------------------------------------
@dataclass
class RowMetrics:
    """Per-row metrics (float64 ``[n_rows]``) from :func:`row_metrics`, plus what they came from.

    ``gold_mass`` / ``gold_chance`` / ``gold_pointing`` are NaN for rows without gold keys (or
    None without gold). ``specificity`` / ``mean_rows`` / ``group_rows`` are per group when
    ``groups`` was given.
    """

    n_keys: np.ndarray
    entropy: np.ndarray
    norm_entropy: np.ndarray
    perplexity: np.ndarray
    max_weight: np.ndarray
    effective_tokens: np.ndarray
    gini: np.ndarray
    ipr: np.ndarray
    topk_mass: np.ndarray
    special_mass: np.ndarray
    gold_mass: np.ndarray | None = None
    gold_chance: np.ndarray | None = None
    gold_pointing: np.ndarray | None = None
    constant: np.ndarray | None = None  # bool: uniform over its valid keys (n_keys > 1)
    all_special_mass: np.ndarray | None = None  # bool: excluded, all mass on special keys
    all_special_keys: np.ndarray | None = None
    invalid: np.ndarray | None = None
    p: np.ndarray | None = None  # the normalised rows (flat)
    specificity: np.ndarray | None = None  # per group
    mean_rows: np.ndarray | None = None  # per group mean row (flat)
    mean_row_offsets: np.ndarray | None = None
    group_rows: np.ndarray | None = None  # per group: rows that entered the specificity

    def as_dict(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in ROW_METRICS}


def _length_groups(lengths: np.ndarray):
    """Yield ``(length, rows)`` for each distinct row length (loop over lengths, not rows)."""
    if len(lengths) == 0:
        return
    u = np.unique(lengths)
    if len(u) == 1:
        yield int(u[0]), np.arange(len(lengths))
        return
    order = np.argsort(lengths, kind="stable")
    bounds = np.searchsorted(lengths[order], u, side="left")
    bounds = np.append(bounds, len(order))
    for i, L in enumerate(u):
        yield int(L), order[bounds[i] : bounds[i + 1]]


def row_metrics(
    data: Any,
    offsets: Any,
    *,
    special: Any = None,
    gold: Any = None,
    groups: Any = None,
    threshold: float = 0.1,
    top_k: int = 3,
    exclude_special: bool = True,
    constant_rtol: float = 1e-3,
    copy: bool = True,
) -> RowMetrics:
    r"""Every per-row metric at once (shared normalisation, logarithms and sorts).

    Rows are processed by distinct length: the rows of one length are gathered into a 2-D
    block and handed to :func:`block_metrics` (the loop runs over lengths, not rows), so this and
    the table engine share one implementation of every formula.

    Parameters
    ----------
    data, offsets : flat attention rows (weights; renormalised here, see :func:`block_metrics`).
    special : bool mask aligned with ``data`` or flat positions (unique) of special-token keys.
    gold : bool mask aligned with ``data`` or flat positions (unique) of gold keys.
    groups : offsets, in rows, of groups whose node specificity is wanted (rows of one group must
        have equal length: e.g. the query rows of one sample, layer and head).
    threshold : effective-token threshold (strict ``p > threshold``).
    top_k : k of the top-k mass.
    exclude_special : drop special keys and renormalise (see :func:`block_metrics`).
    constant_rtol : a row with ``max_weight * n_keys <= 1 + constant_rtol`` is uniform
        ("constant"); since :math:`\max_k p_k \ge 1/n` with equality only for the uniform row,
        this needs no extra pass.
    copy : if False and ``data`` is float32/float64, the normalised rows are written into it.

    Returns
    -------
    RowMetrics
        entropy (nats), norm_entropy (:math:`H/\ln n`, 0 for n = 1), perplexity (:math:`e^H`),
        max_weight, effective_tokens, gini, ipr (:math:`1/\sum p^2`), topk_mass, special_mass,
        gold metrics (NaN for rows without gold), flags, the normalised rows ``p``; with
        ``groups``: ``specificity``, ``mean_rows`` and ``group_rows`` per group. Invalid rows and
        rows with all their mass on (excluded) special keys are NaN.
    """
    if top_k < 1:
        raise ValueError(f"`top_k` must be >= 1, got {top_k}")
    w = _as_float(data)
    off = _offsets(offsets, len(w))
    n_rows = len(off) - 1
    lengths = np.diff(off)
    sp = _positions(special, len(w), "special") if special is not None else None
    gp = _positions(gold, len(w), "gold") if gold is not None else None
    goff = _offsets(groups, n_rows, "groups") if groups is not None else None
    if goff is not None:
        glen = _group_rows_check(off, goff)
    p = w if not copy else w.copy()
    out = {name: np.zeros(n_rows) for name in _BLOCK_ROW_FLOAT}
    out["n_keys"] = lengths.copy()
    for name in _BLOCK_ROW_BOOL:
        out[name] = np.zeros(n_rows, dtype=bool)
    if gp is not None:
        for name in _GOLD_ROW:
            out[name] = np.full(n_rows, np.nan)
    spec = mean_rows = moff = grows = None
    if goff is not None:
        spec = np.zeros(len(goff) - 1)
        grows = np.zeros(len(goff) - 1, dtype=np.int64)
        moff = np.concatenate(([0], np.cumsum(glen)))
        mean_rows = np.zeros(int(moff[-1]), dtype=p.dtype)
    # which rows hold each special / gold position
    local = np.empty(n_rows, dtype=np.int64)
    sp_row = _row_of(sp, off) if sp is not None and len(sp) else None
    gp_row = _row_of(gp, off) if gp is not None and len(gp) else None
    for L, rows in _length_groups(lengths):
        local[rows] = np.arange(len(rows))
        idx = off[rows][:, None] + np.arange(L)
        X = p[idx]  # [rows, L] copy
        in_sp = in_gp = None
        if sp_row is not None:
            sel = lengths[sp_row] == L
            in_sp = local[sp_row[sel]] * L + (sp[sel] - off[sp_row[sel]])
        if gp is not None:
            in_gp = np.zeros(0, dtype=np.int64)
            if gp_row is not None:
                sel = lengths[gp_row] == L
                in_gp = local[gp_row[sel]] * L + (gp[sel] - off[gp_row[sel]])
        gstarts = gsel = None
        if goff is not None:
            gsel = np.flatnonzero(glen == L)
            gstarts = local[goff[gsel]]
        b = block_metrics(
            X,
            special=in_sp,
            gold=in_gp,
            group_starts=gstarts,
            threshold=threshold,
            top_k=top_k,
            exclude_special=exclude_special,
            constant_rtol=constant_rtol,
        )
        for name, arr in b.rows.items():
            out[name][rows] = arr
        p[idx] = X
        if goff is not None and len(gsel):
            spec[gsel] = b.specificity
            grows[gsel] = b.group_rows
            mean_rows[moff[gsel][:, None] + np.arange(L)] = b.mean_rows
    h = out["entropy"]
    n = out["n_keys"]
    return RowMetrics(
        n_keys=n,
        entropy=h,
        norm_entropy=normalized_entropy(h, n),
        perplexity=perplexity(h),
        max_weight=out["max_weight"],
        effective_tokens=out["effective_tokens"],
        gini=out["gini"],
        ipr=out["ipr"],
        topk_mass=out["topk_mass"],
        special_mass=out["special_mass"],
        gold_mass=out.get("gold_mass"),
        gold_chance=out.get("gold_chance"),
        gold_pointing=out.get("gold_pointing"),
        constant=out["constant"],
        all_special_mass=out["all_special_mass"],
        all_special_keys=out["all_special_keys"],
        invalid=out["invalid"],
        p=p,
        specificity=spec,
        mean_rows=mean_rows,
        mean_row_offsets=moff,
        group_rows=grows,
    )


# ----------------------------------------------------------------------------------------------
# the 2-D block kernel: rows of one length, contiguous, small enough to stay in cache
# ----------------------------------------------------------------------------------------------
_BLOCK_ROW_FLOAT = ROW_METRICS
_BLOCK_ROW_BOOL = ("constant", "all_special_mass", "all_special_keys", "invalid")
_GOLD_ROW = ("gold_mass", "gold_chance", "gold_pointing")
#: a row whose mass on the analysed (non-special) keys is at most this share of its total is
#: "all mass on special tokens" (float16 rounding leaves at most ~1e-7 behind)
ALL_SPECIAL_RTOL = 1e-6


@dataclass
class BlockResult:
    """What :func:`block_metrics` returns: per-row arrays (``rows``), and per group (when
    ``group_starts`` was given) ``specificity``, ``mean_rows`` ``[groups, L]``, ``group_rows``
    (rows that entered them) and ``mean_entropy`` (entropy of each mean row)."""

    rows: dict[str, np.ndarray]
    specificity: np.ndarray | None = None
    mean_rows: np.ndarray | None = None
    mean_entropy: np.ndarray | None = None
    group_rows: np.ndarray | None = None


def _plogp_rows(X: np.ndarray, buf: np.ndarray | None = None) -> np.ndarray:
    """Row sums of ``p ln p`` (0 ln 0 = 0) of a 2-D block, float64 ``[rows]``."""
    tiny = _TINY32 if X.dtype == np.float32 else np.finfo(np.float64).tiny
    if buf is None or buf.shape != X.shape or buf.dtype != X.dtype:
        buf = np.empty_like(X)
    np.maximum(X, tiny, out=buf)
    np.log2(buf, out=buf)
    buf *= X
    return _LN2 * buf.sum(axis=1).astype(np.float64)


def block_metrics(
    X: np.ndarray,
    *,
    special: np.ndarray | None = None,
    gold: np.ndarray | None = None,
    group_starts: np.ndarray | None = None,
    threshold: float = 0.1,
    top_k: int = 3,
    exclude_special: bool = True,
    constant_rtol: float = 1e-3,
) -> BlockResult:
    r"""All row metrics of a 2-D block ``X [rows, L]`` of raw weights (modified in place: on
    return it holds the normalised rows, specials zeroed when excluded, NaN for dropped rows).

    ``special`` / ``gold``: flat positions into ``X.ravel()`` (unique). ``group_starts``: first
    row of each group of consecutive rows (node specificity, mean rows).

    Conventions: rows are renormalised to sum to 1 over their analysed keys (all keys, or the
    non-special ones when ``exclude_special``; a row whose keys are *all* special keeps them all,
    flag ``all_special_keys``). A row summing to 0 or holding NaN/inf is ``invalid``; a row whose
    analysed keys hold at most :data:`ALL_SPECIAL_RTOL` of its mass (all mass on special keys)
    expresses no distribution over the analysed keys: it is dropped too (flag
    ``all_special_mass``; only its ``special_mass``, measured on the whole row, is kept) and
    never imputed as uniform. Dropped rows are NaN in every other metric and left out of group
    means and node specificity. Gini uses centred weights for accuracy in float32:
    :math:`G = \left(\sum_i (2i - L - 1) p_{(i)} - m\right) / n` for a row with ``m``
    excluded (zeroed) keys and ``n = L - m`` counted keys, which equals the sorted-sample formula.
    ``gold_chance`` is :math:`|G \cap V| / n`, the gold mass of a uniform row over the analysed
    keys :math:`V`.
    """
    R, L = X.shape
    flat = X.reshape(-1)
    rs = X.sum(axis=1).astype(np.float64)  # float32 pairwise sums (accurate to ~1e-7)
    invalid = ~(np.isfinite(rs) & (rs > 0))
    n = np.full(R, L, dtype=np.int64)
    smass = np.zeros(R)
    all_mass = np.zeros(R, dtype=bool)
    all_keys = np.zeros(R, dtype=bool)
    m_excl = np.zeros(R, dtype=np.int64)
    if special is not None and len(special):
        srow = special // L
        sw = np.bincount(srow, weights=flat[special].astype(np.float64), minlength=R)
        safe = np.where(invalid, 1.0, rs)
        smass = np.where(invalid, np.nan, sw / safe)
        if exclude_special:
            nsp = np.bincount(srow, minlength=R)
            all_keys = nsp >= L
            excl = special[~all_keys[srow]]
            flat[excl] = 0
            if gold is not None and len(gold) and len(excl):
                # a gold cell on an excluded special key is not among the analysed keys: a row
                # whose only gold keys are excluded has no gold (NaN), not gold mass 0
                gold = gold[~np.isin(gold, excl)]
            m_excl = np.where(all_keys, 0, nsp)
            n = L - m_excl
            den = X.sum(axis=1).astype(np.float64)
            all_mass = ~all_keys & ~invalid & (den <= ALL_SPECIAL_RTOL * safe)
            rs = den
    drop = invalid | all_mass
    scale = np.where(drop, 0.0, 1.0 / np.where(drop, 1.0, rs)).astype(X.dtype)
    X *= scale[:, None]
    if drop.any():
        X[drop] = np.nan
        smass[invalid] = np.nan
    buf = np.empty_like(X)
    h = np.maximum(-_plogp_rows(X, buf), 0.0)
    buf[...] = X
    buf.sort(axis=1)  # ascending per row (NaN rows stay NaN)
    w = (2.0 * np.arange(1, L + 1) - L - 1).astype(X.dtype)
    c = np.einsum("ij,j->i", buf, w)  # (no BLAS: threads and call overhead cost more here)
    g = np.clip((c.astype(np.float64) - m_excl) / n, 0.0, 1.0)
    top = buf[:, max(0, L - top_k) :].sum(axis=1).astype(np.float64)
    mx = buf[:, -1].astype(np.float64)
    if threshold > 0:
        mc = min(L, int(np.floor((1.0 + 1e-5) / threshold)) + 1)  # at most 1/t keys exceed t
        eff = np.count_nonzero(buf[:, L - mc :] > threshold, axis=1).astype(np.float64)
    else:
        eff = np.count_nonzero(buf > threshold, axis=1).astype(np.float64)
    with np.errstate(divide="ignore"):
        ipr_ = 1.0 / np.einsum("ij,ij->i", buf, buf).astype(np.float64)
    if drop.any():
        for a in (h, mx, eff, ipr_, g, top):
            a[drop] = np.nan
    one = (n == 1) & ~drop
    if one.any():  # exact conventions for a single valid key (no float rounding residue)
        h[one], mx[one], ipr_[one], top[one], g[one] = 0.0, 1.0, 1.0, 1.0, 0.0
    with np.errstate(invalid="ignore"):
        constant = (n > 1) & (mx * n <= 1.0 + constant_rtol)
    rows_out = {
        "n_keys": n,
        "entropy": h,
        "norm_entropy": normalized_entropy(h, n),
        "perplexity": perplexity(h),
        "max_weight": mx,
        "effective_tokens": eff,
        "gini": g,
        "ipr": ipr_,
        "topk_mass": top,
        "special_mass": smass,
        "constant": constant,
        "all_special_mass": all_mass,
        "all_special_keys": all_keys,
        "invalid": invalid,
    }
    if gold is not None:
        gm = np.full(R, np.nan)
        gc = np.full(R, np.nan)
        hit = np.full(R, np.nan)
        if len(gold):
            grow = gold // L
            ng = np.bincount(grow, minlength=R)
            tot = np.bincount(grow, weights=flat[gold].astype(np.float64), minlength=R)
            rows = np.flatnonzero((ng > 0) & ~drop)
            gm[rows] = tot[rows]
            gc[rows] = ng[rows] / n[rows]
            am = rows * L + np.argmax(X[rows], axis=1)
            hit[rows] = np.isin(am, gold).astype(np.float64)
        rows_out["gold_mass"] = gm
        rows_out["gold_chance"] = gc
        rows_out["gold_pointing"] = hit
    res = BlockResult(rows_out)
    if group_starts is not None:
        _group_specificity(res, X, h, n, drop, np.asarray(group_starts, dtype=np.int64))
    return res


def _group_specificity(res: BlockResult, X, h, n, drop, gs) -> None:
    r"""Mean row, its entropy and node specificity :math:`H(\bar p) - \overline{H(p_i)}` of each
    group of consecutive rows (starting at ``gs``), over the group's kept rows."""
    R, L = X.shape
    if not len(gs):
        res.specificity = np.zeros(0)
        res.mean_rows = np.zeros((0, L), dtype=X.dtype)
        res.mean_entropy = np.zeros(0)
        res.group_rows = np.zeros(0, dtype=np.int64)
        return
    sizes = np.diff(np.append(gs, R))
    if drop.any():  # leave dropped (NaN) rows out of the mean row and the mean entropy
        kept = np.add.reduceat((~drop).astype(np.int64), gs)
        mean = np.add.reduceat(np.where(drop[:, None], 0, X), gs, axis=0)
        hsum = np.add.reduceat(np.where(drop, 0.0, h), gs)
    else:
        kept = sizes
        q0 = int(sizes[0])
        if gs[0] == 0 and np.all(sizes == q0):  # equal groups: a contiguous reduction
            mean = X.reshape(len(gs), q0, L).sum(axis=1)
        else:
            mean = np.add.reduceat(X, gs, axis=0)
        hsum = np.add.reduceat(h, gs)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean *= (1.0 / kept).astype(X.dtype)[:, None]
        hbar = np.maximum(-_plogp_rows(mean), 0.0)
        spec = np.maximum(hbar - hsum / kept, 0.0)
    spec[kept == 1] = 0.0  # one row: 0 by definition (no rounding residue)
    spec[n[gs] == 1] = 0.0  # one valid key: every row is the same one-hot
    spec[kept == 0] = np.nan
    res.specificity = spec
    res.mean_rows = mean
    res.mean_entropy = hbar
    res.group_rows = kept


#: above this :math:`|d|`, :math:`d = (p - q)/(p + q)`, the per-key JSD term is evaluated
#: from logarithms; below it by its series (no cancellation)
_JSD_SERIES_MAX = 0.5
#: :math:`g(d) = (1+d)\ln(1+d) + (1-d)\ln(1-d) = \sum_{j \ge 1} d^{2j} / (j (2j - 1))`;
#: 9 terms reach float32 precision for :math:`|d| \le 0.5`
_JSD_SERIES = tuple(1.0 / (j * (2 * j - 1)) for j in range(1, 10))


def divergence_terms(P: np.ndarray, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Per-key Jensen-Shannon and total-variation terms of paired rows (any shape, same shape):
    summed over a row's keys they give :math:`\mathrm{JSD}(p, q)` (nats) and
    :math:`\mathrm{TV}(p, q)`; returned as float64.

    With :math:`s = p_k + q_k`, :math:`a = 2p_k/s = 1 + d` and :math:`b = 2q_k/s = 1 - d`, the JSD
    term of key :math:`k` is

    .. math:: \tfrac12 \left[p_k \ln\tfrac{p_k}{m_k} + q_k \ln\tfrac{q_k}{m_k}\right]
        = \tfrac{s}{4}\, g(d), \qquad g(d) = a \ln a + b \ln b \ge 0,

    with :math:`g` from its power series :math:`\sum_j d^{2j}/(j(2j-1))` for
    :math:`|d| \le 1/2` and from the logarithms of :math:`a` and :math:`b` above, where the two
    terms cancel by at most a factor 4 (:math:`a` and :math:`b` are computed from :math:`p, q`
    directly, never as :math:`1 \pm d`, so a peaked row loses nothing to rounding :math:`d`). Both
    branches are evaluated over the whole block in the input precision and selected by 0/1
    weights (no gather, no masked copy: about 4x faster than both). Every term is non-negative,
    so the row sum has no cancellation: relative error below 1e-6 in float32 (tested against
    mpmath), where :math:`H(m) - \tfrac12 H(p) - \tfrac12 H(q)` has ~1e-5 (worse for nearly
    equal rows). The TV term is :math:`\tfrac12 |p_k - q_k|`. NaN in either row gives NaN.
    """
    gs, ad = _divergence_parts(P, Q)
    jsd = gs.astype(np.float64)
    jsd *= 0.25
    tv = ad.astype(np.float64)
    tv *= 0.5
    return jsd, tv


def _divergence_parts(P: np.ndarray, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(s * g(d), |p - q|)`` per key, in the inputs' precision (float32 for float32 blocks):
    the JSD term is a quarter of the first, the TV term half the second
    (:func:`divergence_terms`)."""
    dt = np.float32 if P.dtype == np.float32 and Q.dtype == np.float32 else np.float64
    P, Q = np.broadcast_arrays(np.asarray(P, dtype=dt), np.asarray(Q, dtype=dt))
    s = np.add(P, Q)
    diff = np.subtract(P, Q)
    # exact divisions (1/s would overflow for a subnormal s); where p = q = 0 by 1: no 0/0, and
    # no masked division (a divide with where= costs 3-30x a plain one)
    den = np.add(s, s == 0)
    d = np.divide(diff, den)
    a = np.divide(P, den)  # (1 + d) / 2
    b = np.divide(Q, den)  # (1 - d) / 2
    np.abs(diff, out=diff)
    u = np.multiply(d, d, out=d)
    g = np.full_like(u, _JSD_SERIES[-1])
    for c in _JSD_SERIES[-2::-1]:  # Horner in u = d^2
        g *= u
        g += dt(c)
    g *= u
    tiny = np.finfo(dt).tiny
    a *= dt(2.0)  # 1 + d
    b *= dt(2.0)  # 1 - d
    a *= np.log(np.maximum(a, tiny, out=den), out=den)
    b *= np.log(np.maximum(b, tiny, out=den), out=den)
    a += b
    # g where |d| <= 1/2, else a ln a + b ln b: selected by multiplying with 0/1 weights (exact,
    # and 5-10x faster than a masked copy or np.where on an irregular mask)
    w = u <= dt(_JSD_SERIES_MAX**2)
    g *= w
    a *= ~w
    g += a
    g *= s
    return g, diff


def block_divergence(P: np.ndarray, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row JSD (nats, in [0, ln 2]) and total variation between two normalised 2-D blocks
    ``[rows, L]`` (see :func:`divergence_terms`; the key terms are summed in float64); NaN for a
    row that is NaN in either block."""
    gs, ad = _divergence_parts(P, Q)
    j = np.add.reduce(gs, axis=-1, dtype=np.float64)
    j *= 0.25
    t = np.add.reduce(ad, axis=-1, dtype=np.float64)
    t *= 0.5
    return np.minimum(j, _LN2), t


# ----------------------------------------------------------------------------------------------
# diagnostics
# ----------------------------------------------------------------------------------------------
DIAGNOSTIC_COUNTS = (
    "n_samples",
    "n_rows",
    "rows_key_len_1",
    "constant_rows",
    "all_special_mass_rows",
    "all_special_key_rows",
    "invalid_rows",
    "one_node_samples",
    "identical_row_samples",
    "identical_row_heads",
    "head_groups",
)


@dataclass
class Diagnostics:
    """Degenerate attention found while computing the tables (reported, never silently averaged).

    ``sites`` is a polars DataFrame with one row per (model, site) and the counts in
    :data:`DIAGNOSTIC_COUNTS` (rows counted on the per-head distributions; ``identical_row_samples``
    on the head-mean distribution, among samples with more than one node; ``identical_row_heads``
    counts (sample, layer, head) groups with node specificity ~0), plus ``degenerate`` (bool),
    ``reason`` (English text) and ``reason_code`` (``"key_len_1"``, ``"uniform"``,
    ``"identical_rows"`` or ``""``; see ``analyze.table.DEGENERATE_REASONS``). ``messages`` are
    human-readable one-liners for reports.
    """

    sites: Any = None
    messages: list[str] = field(default_factory=list)

    def degenerate_sites(self) -> dict[str, str]:
        """``{site: reason}`` for sites that carry no information for any model."""
        if self.sites is None or len(self.sites) == 0:
            return {}
        out: dict[str, str] = {}
        for row in self.sites.iter_rows(named=True):
            if row["degenerate"]:
                out.setdefault(row["site"], row["reason"])
        return out

    def degenerate_codes(self) -> dict[str, str]:
        """``{site: reason_code}`` (``"key_len_1"`` / ``"uniform"``) for the sites of
        :meth:`degenerate_sites`; ``""`` when the tables predate the code column."""
        if self.sites is None or len(self.sites) == 0:
            return {}
        out: dict[str, str] = {}
        for row in self.sites.iter_rows(named=True):
            if row["degenerate"]:
                out.setdefault(row["site"], row.get("reason_code") or "")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "sites": [] if self.sites is None else self.sites.to_dicts(),
            "messages": list(self.messages),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Diagnostics:
        import polars as pl

        rows = d.get("sites", [])
        return cls(pl.DataFrame(rows) if rows else None, list(d.get("messages", [])))
