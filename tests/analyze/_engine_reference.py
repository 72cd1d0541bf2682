"""A plain, obviously-correct per-row reference for the analysis engine's metrics.

Loops over rows and calls scipy; it sees *padded* arrays and slices the valid region itself, the
way a user's batch looks before it reaches the store. Written independently of analyze.metrics
(different formulas where possible: Gini by mean absolute difference, node specificity as a mean
KL divergence to the mean row, JSD through scipy.spatial.distance).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy as sp_entropy


def ref_distribution(w_valid, special_valid, exclude_special):
    """(p over the counted keys, kept-key mask, special mass) of one valid row; p is None when
    (nearly) all the mass is on excluded special keys (the row is dropped, not made uniform)."""
    w = np.asarray(w_valid, dtype=np.float64)
    sp = np.asarray(special_valid, dtype=bool)
    tot = w.sum()
    smass = float(w[sp].sum() / tot) if sp.any() else 0.0
    if exclude_special and sp.any() and not sp.all():
        keep = ~sp
        rest = w[keep]
        if rest.sum() <= 1e-6 * tot:
            p = None
        else:
            p = rest / rest.sum()
    else:
        keep = np.ones(len(w), dtype=bool)
        p = w / tot
    return p, keep, smass


def ref_gini(p):
    n = len(p)
    if n == 1:
        return 0.0
    mad = sum(abs(a - b) for a in p for b in p)
    return mad / (2 * n * p.sum())


def ref_row(
    w_valid, special_valid, gold_valid=None, *, threshold=0.1, top_k=3, exclude_special=True
):
    p, keep, smass = ref_distribution(w_valid, special_valid, exclude_special)
    if p is None:
        out = dict.fromkeys(_KEYS, math.nan)
        out["n_keys"], out["special_mass"] = int(keep.sum()), smass
        return out, None
    n = len(p)
    h = float(sp_entropy(p))
    out = {
        "n_keys": n,
        "entropy": h,
        "norm_entropy": h / math.log(n) if n > 1 else 0.0,
        "perplexity": math.exp(h),
        "max_weight": float(p.max()),
        "effective_tokens": float(sum(1 for x in p if x > threshold)),
        "gini": ref_gini(p),
        "ipr": 1.0 / float(sum(x * x for x in p)),
        "topk_mass": float(np.sort(p)[::-1][:top_k].sum()),
        "special_mass": smass,
        "gold_mass": math.nan,
        "gold_chance": math.nan,
        "gold_pointing": math.nan,
    }
    if gold_valid is not None and np.asarray(gold_valid, dtype=bool)[keep].any():
        g = np.asarray(gold_valid, dtype=bool)[keep]
        out["gold_mass"] = float(p[g].sum())
        out["gold_chance"] = g.sum() / n  # a uniform row over the n analysed keys
        out["gold_pointing"] = float(g[int(np.argmax(p))])
    return out, p


def ref_specificity(ps):
    """Mean KL(p_i || mean row) over the kept rows of one group (0 for one row; dropped rows,
    None, are left out; NaN when none is kept)."""
    ps = [np.asarray(p, dtype=np.float64) for p in ps if p is not None]
    if not ps:
        return math.nan
    if len(ps) == 1:
        return 0.0
    mean = np.mean(ps, axis=0)
    return float(np.mean([sp_entropy(p, mean) for p in ps]))


_KEYS = (
    "n_keys",
    "entropy",
    "norm_entropy",
    "perplexity",
    "max_weight",
    "effective_tokens",
    "gini",
    "ipr",
    "topk_mass",
    "special_mass",
    "gold_mass",
    "gold_chance",
    "gold_pointing",
)


def ref_jsd(p, q):
    return float(jensenshannon(p, q) ** 2)


def ref_tv(p, q):
    return 0.5 * float(np.abs(np.asarray(p) - np.asarray(q)).sum())


def ref_group(rows_valid, special_valid, gold_valid=None, **kw):
    """Metrics of one (sample, layer, head) group: the mean over its rows (nan-aware for gold)."""
    per, ps = [], []
    for i, w in enumerate(rows_valid):
        g = None if gold_valid is None else gold_valid[i]
        m, p = ref_row(w, special_valid, g, **kw)
        per.append(m)
        ps.append(p)
    out = {}
    for key in per[0]:
        vals = [r[key] for r in per if not (isinstance(r[key], float) and math.isnan(r[key]))]
        out[key] = float(np.mean(vals)) if vals else math.nan
    out["node_specificity"] = ref_specificity(ps)
    out["n_rows"] = sum(p is not None for p in ps)
    out["n_all_special_rows"] = len(ps) - out["n_rows"]
    return out, ps
