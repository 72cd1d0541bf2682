"""The paired comparison within strata of the samples.

Strata: quantile bins of ``n_nodes``, ``n_tokens``, the target and the baseline's absolute error
(``baseline_error``: low bins are the *easy* samples, high bins the *hard* ones), each sample's
``split`` (when a store pools several), or any per-sample metadata column (``meta_<name>`` or just
``<name>``, e.g. a sample type): numeric columns are cut into quantile bins that never split tied
values (half the band gaps being 0 gives a ``= 0`` bin, the rest cut evenly), string columns are
split by value; strata below a minimum size are merged. Within every stratum the same paired
test as in :func:`analyze.compare.compare` is run on the head-mean metrics of one site (the
sample is the unit), and the p-values of all strata tests form one family, corrected with
``correction`` (Holm by default); the primary p-value is Wilcoxon's (``primary="t"``: the t-test).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from .compare import DEFAULT_DIRECTIONS, _values, classify
from .errors import AnalysisInputError
from .options import resolve_models
from .prediction import abs_errors
from .registry import metric_range
from .stats import CORRECTIONS, correct_pvalues, paired_test
from .table import HEAD_MEAN, MetricTables

__all__ = ["available_stratifiers", "compare_strata", "stratifier_name", "stratify"]

BUILTIN = ("n_nodes", "n_tokens", "target", "baseline_error")
# the paired test's own flat fields (PairedResult.as_dict) that a stratum's row carries
_RESULT_COLUMNS = (
    "n",
    "mean_baseline",
    "mean_variant",
    "mean_diff",
    "ci_diff_low",
    "ci_diff_high",
    "pct_change",
)


def available_stratifiers(tables: MetricTables) -> list[str]:
    """Every name :func:`compare_strata` accepts for this table: the built-ins, ``split``, the
    targets by name and every per-sample metadata column (without its ``meta_`` prefix)."""
    cols = tables.samples.columns
    meta = [c[len("meta_") :] for c in cols if c.startswith("meta_")]
    return [*BUILTIN, "split", *(tables.targets or []), *meta]


def stratifier_name(tables: MetricTables, name: str) -> str:
    """The name a stratifier is shown under: ``target`` becomes the target's own name
    (``band_gap_eV``), a ``meta_x`` column is ``x``."""
    if name == "target":
        return (tables.targets or ["target"])[0]
    return name[len("meta_") :] if name.startswith("meta_") else name


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
        raise AnalysisInputError(
            f"stratifier {name!r} is not a sample column; choose from "
            f"{', '.join(available_stratifiers(tables))}"
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


def _tie_bins(v: np.ndarray, bins: int) -> list[tuple[float, float]]:
    """Value ranges ``[(low, high)]`` of up to ``bins`` quantile bins that never split a tie.

    Distinct values are taken in order and a bin closes once it holds at least its share of the
    samples not yet binned (``remaining / bins left``), so a value shared by half the samples
    (band gaps of 0 for metals) becomes a bin of its own and the rest is still cut evenly.
    """
    u, counts = np.unique(v, return_counts=True)
    out: list[tuple[float, float]] = []
    left_n, left_b = len(v), bins
    start, acc = 0, 0
    for j, c in enumerate(counts):
        acc += int(c)
        if left_b > 1 and acc >= left_n / left_b - 1e-9 and j < len(u) - 1:
            out.append((float(u[start]), float(u[j])))
            left_n -= acc
            left_b -= 1
            start, acc = j + 1, 0
    out.append((float(u[start]), float(u[-1])))
    return out


def stratify(
    values, bins: int = 3, min_size: int = 1
) -> list[tuple[str, np.ndarray, float, float]]:
    """``[(label, member mask, low, high)]`` for one stratifier.

    Numeric values: quantile bins that never split tied values (:func:`_tie_bins`; a bin of one
    value is labelled ``= v``). Strings: one stratum per value, in sorted order. Strata with fewer
    than ``min_size`` samples are merged: a numeric bin into its smaller neighbour, small string
    values into one ``other`` stratum (dropped if that is still too small). Missing values
    (NaN, None) belong to no stratum.
    """
    if isinstance(values, list):
        arr = np.array([str(v) if v is not None else "\0" for v in values], dtype=object)
        cats = sorted({str(v) for v in values if v is not None})
        big = [c for c in cats if int((arr == c).sum()) >= min_size]
        small = [c for c in cats if c not in big]
        out = [(c, arr == c, np.nan, np.nan) for c in big]
        if small:
            mask = np.isin(arr, small)
            if int(mask.sum()) >= min_size:
                label = small[0] if len(small) == 1 else f"other ({len(small)} values)"
                out.append((label, mask, np.nan, np.nan))
        return out
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    if not ok.any():
        return []
    ranges = _tie_bins(v[ok], bins)
    sizes = [int(((v >= lo) & (v <= hi)).sum()) for lo, hi in ranges]
    while len(ranges) > 1 and min(sizes) < min_size:
        i = int(np.argmin(sizes))
        if i == 0:
            j = 1
        elif i == len(ranges) - 1:
            j = i - 1
        else:
            j = i - 1 if sizes[i - 1] <= sizes[i + 1] else i + 1
        a, b = min(i, j), max(i, j)
        ranges[a : b + 1] = [(ranges[a][0], ranges[b][1])]
        sizes[a : b + 1] = [sizes[a] + sizes[b]]
    out = []
    nb = len(ranges)
    for k, (lo, hi) in enumerate(ranges):
        mask = ok & (v >= lo) & (v <= hi)
        rng = f"= {lo:.4g}" if lo == hi else f"[{lo:.4g}, {hi:.4g}]"
        out.append((f"q{k + 1}/{nb} {rng}", mask, lo, hi))
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
    min_size: int = 5,
) -> pl.DataFrame:
    """Paired comparison within strata; one row per stratifier x stratum x variant x metric.

    ``by`` names built-in stratifiers (:data:`BUILTIN`), ``split`` (each sample's recorded
    split), a target by name or any per-sample metadata column (see
    :func:`available_stratifiers`); with the default ``by``, ``split`` is added when the store
    pools several splits, and ``sample_type`` when the adapter records one. ``stratifier`` is
    the name the stratum axis shows (``target`` is reported under the target's own name).
    Strata smaller than ``min_size`` samples are merged (see :func:`stratify`).

    Columns: ``stratifier, stratum, bin`` (order within the stratifier), ``bin_label`` (the
    stratum's label, for figures), ``low, high, variant, metric, layer, n, mean_baseline,
    mean_variant, mean_diff, ci_diff_low, ci_diff_high, pct_change, p_primary, p_corrected,
    correction, expected, verdict``. ``mean_diff`` is ``variant - baseline``.
    """
    if bins < 1:
        raise AnalysisInputError(f"`bins` must be >= 1, got {bins}")
    if correction not in CORRECTIONS:
        raise AnalysisInputError(f"`correction` must be 'holm' or 'bh', got {correction!r}")
    baseline, variants = resolve_models(tables.models, tables.baseline, baseline, variants)
    metrics = list(metrics) if metrics is not None else list(directions)
    site = site or tables.main_site()
    vals = _values(tables, site, metrics)
    n_layers = int(tables.sites[site]["n_layers"])
    layers = range(n_layers) if layer is None else [layer]
    if min_size < 1:
        raise AnalysisInputError(f"`min_size` must be >= 1, got {min_size}")
    by = list(by)
    if by == list(BUILTIN):
        cols = tables.samples.columns
        if "split" in cols and tables.samples["split"].n_unique() > 1:
            by.append("split")
        if "meta_sample_type" in cols:  # the adapter's declared sample types (FreeSolv's)
            by.append("sample_type")
    raw = []
    for name in by:
        strata = stratify(_column(tables, name, baseline), bins, min_size)
        shown = stratifier_name(tables, name)
        for b, (label, mask, lo, hi) in enumerate(strata):
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
                        raw.append((shown, b, label, lo, hi, v, metric, lyr, res))
    pkey = "wilcoxon_pvalue" if primary == "wilcoxon" else "t_pvalue"
    p = np.array([getattr(r[-1], pkey) for r in raw], dtype=float)
    padj = correct_pvalues(p, correction) if len(p) else p
    rows = []
    for (name, b, label, lo, hi, v, metric, lyr, res), pp, pa in zip(raw, p, padj, strict=True):
        _, verdict, expected = classify(
            res, directions.get(metric), float(pa), alpha, primary, baseline, v
        )
        flat = res.as_dict()
        rows.append(
            {
                "stratifier": name,
                "stratum": label,
                "bin": b,
                "bin_label": label,
                "low": lo,
                "high": hi,
                "variant": v,
                "metric": metric,
                "layer": lyr,
                **{k: flat[k] for k in _RESULT_COLUMNS},
                "p_primary": float(pp),
                "p_corrected": float(pa),
                "correction": correction,
                "expected": expected,
                "verdict": verdict,
            }
        )
    return pl.DataFrame(rows)
