"""The paired comparison within strata of the samples.

Strata: quantile bins of ``n_nodes``, ``n_tokens``, the target and the baseline's absolute error
(``baseline_error``: low bins are the *easy* samples, high bins the *hard* ones), or any
per-sample metadata column (``meta_<name>`` or just ``<name>``): numeric columns are cut into
quantile bins, string columns are split by value. Within every stratum the same paired test as in
:func:`analyze.compare.compare` is run on the head-mean metrics of one site (the sample is the
unit), and the p-values of all strata tests form one family, corrected with ``correction``
(Holm by default); the primary p-value is Wilcoxon's (``primary="t"`` for the t-test).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from .compare import DEFAULT_DIRECTIONS, _values, classify
from .metrics import metric_range
from .prediction import abs_errors
from .stats import correct_pvalues, paired_test
from .table import HEAD_MEAN, MetricTables

__all__ = ["compare_strata", "stratify"]

BUILTIN = ("n_nodes", "n_tokens", "target", "baseline_error")


def _column(tables: MetricTables, name: str, baseline: str) -> np.ndarray | list:
    s = tables.samples.sort("position")
    n = tables.n_samples
    pos = s["position"].to_numpy()
    if name == "baseline_error":
        return abs_errors(tables, baseline)
    if name == "target":
        name = (tables.targets or ["target"])[0]
    col = name if name in s.columns else f"meta_{name}"
    if col not in s.columns:
        raise ValueError(
            f"stratifier {name!r} is not a sample column; have {BUILTIN} and "
            f"{[c for c in s.columns if c.startswith('meta_')]}"
        )
    series = s[col]
    if series.dtype.is_numeric():
        out = np.full(n, np.nan)
        out[pos] = series.to_numpy().astype(float)
        return out
    out_l: list = [None] * n
    for p, v in zip(pos, series.to_list(), strict=True):
        out_l[int(p)] = v
    return out_l


def stratify(values, bins: int = 3) -> list[tuple[str, np.ndarray, float, float]]:
    """``[(label, member mask, low, high)]``: quantile bins of numeric values (empty and
    duplicate-edge bins merged), or one stratum per distinct value of a string column."""
    if isinstance(values, list):
        cats = sorted({v for v in values if v is not None}, key=str)
        arr = np.array([str(v) if v is not None else "\0" for v in values], dtype=object)
        return [(str(c), arr == str(c), np.nan, np.nan) for c in cats]
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    if not ok.any():
        return []
    edges = np.unique(np.quantile(v[ok], np.linspace(0, 1, bins + 1)))
    if len(edges) == 1:
        return [(f"all [{edges[0]:.4g}]", ok, float(edges[0]), float(edges[0]))]
    idx = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, len(edges) - 2)
    out = []
    for b in range(len(edges) - 1):
        mask = ok & (idx == b)
        if mask.any():
            lo, hi = float(edges[b]), float(edges[b + 1])
            out.append((f"q{b + 1}/{len(edges) - 1} [{lo:.4g}, {hi:.4g}]", mask, lo, hi))
    return out


def compare_strata(
    tables: MetricTables,
    *,
    by: Sequence[str] = BUILTIN,
    bins: int = 3,
    metrics: Sequence[str] | None = None,
    directions: Mapping[str, str | None] = DEFAULT_DIRECTIONS,
    site: str | None = None,
    baseline: str | None = None,
    variants: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    correction: str = "holm",
    alpha: float = 0.05,
    primary: str = "wilcoxon",
    layer: int | None = None,
) -> pl.DataFrame:
    """Paired comparison within strata; one row per stratifier x stratum x variant x metric.

    Columns: ``stratifier, stratum, low, high, variant, metric, layer, n, mean_baseline,
    mean_variant, mean_diff, ci_diff_low, ci_diff_high, pct_change, p_primary, p_corrected,
    correction, expected, verdict``. ``mean_diff`` is ``variant - baseline``.
    """
    if bins < 1:
        raise ValueError(f"`bins` must be >= 1, got {bins}")
    if correction not in ("holm", "bh"):
        raise ValueError(f"`correction` must be 'holm' or 'bh', got {correction!r}")
    baseline = baseline or tables.baseline
    variants = (
        list(variants) if variants is not None else [m for m in tables.models if m != baseline]
    )
    metrics = list(metrics) if metrics is not None else list(directions)
    site = site or tables.main_site()
    vals = _values(tables, site, metrics)
    n_layers = int(tables.sites[site]["n_layers"])
    layers = range(n_layers) if layer is None else [layer]
    raw = []
    for name in by:
        strata = stratify(_column(tables, name, baseline), bins)
        for label, mask, lo, hi in strata:
            for lyr in layers:
                vb = vals.get((baseline, HEAD_MEAN, lyr, -1))
                for v in variants:
                    vv = vals.get((v, HEAD_MEAN, lyr, -1))
                    if vb is None or vv is None:
                        continue
                    for metric in metrics:
                        res = paired_test(
                            vb[metric][mask],
                            vv[metric][mask],
                            n_boot=n_boot,
                            seed=seed,
                            bounds=metric_range(metric),
                        )
                        raw.append((name, label, lo, hi, v, metric, lyr, res))
    pkey = "wilcoxon_pvalue" if primary == "wilcoxon" else "t_pvalue"
    p = np.array([getattr(r[-1], pkey) for r in raw], dtype=float)
    padj = correct_pvalues(p, correction) if len(p) else p
    rows = []
    for (name, label, lo, hi, v, metric, lyr, res), pp, pa in zip(raw, p, padj, strict=True):
        _, verdict, expected = classify(
            res, directions.get(metric), float(pa), alpha, primary, baseline, v
        )
        rows.append(
            {
                "stratifier": name,
                "stratum": label,
                "low": lo,
                "high": hi,
                "variant": v,
                "metric": metric,
                "layer": lyr,
                "n": res.n,
                "mean_baseline": res.mean_baseline,
                "mean_variant": res.mean_variant,
                "mean_diff": res.mean_diff,
                "ci_diff_low": res.ci_diff[0],
                "ci_diff_high": res.ci_diff[1],
                "pct_change": res.pct_change,
                "p_primary": float(pp),
                "p_corrected": float(pa),
                "correction": correction,
                "expected": expected,
                "verdict": verdict,
            }
        )
    return pl.DataFrame(rows)
