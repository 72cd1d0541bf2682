"""Prediction quality per variant, and how attention relates to prediction error.

* :func:`compare_predictions`: MAE and RMSE per model, beside the naive baseline MAE (predicting
  the mean target, :func:`naive_mae`); for each variant, the paired difference
  (``variant - baseline``) of MAE and of RMSE with a seeded paired bootstrap CI (samples
  resampled together), and a Wilcoxon signed-rank test on the per-sample ``|error|`` differences
  (:func:`analyze.stats.wilcoxon_signed_rank`).
* :func:`attention_error_correlation`: per model, Spearman correlation of a per-sample attention
  metric (head-mean distribution) with the absolute error, with a percentile bootstrap CI, and the
  rank partial correlation controlling for the number of valid tokens (``n_keys``); per variant,
  the Spearman correlation of the paired differences (``Δmetric`` vs ``Δ|error|``, both variant -
  baseline). By default only the last layer (the headline layer) is analysed: every row
  bootstraps, so ``layer="all"`` costs one such pass per layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from .compare import _values
from .errors import AnalysisInputError
from .registry import ROW_SUMMARY_METRICS
from .stats import bootstrap, partial_spearman, spearman_with_ci, wilcoxon_signed_rank
from .table import HEAD_MEAN, MetricTables

__all__ = [
    "PredictionComparison",
    "compare_predictions",
    "attention_error_correlation",
    "abs_errors",
    "naive_mae",
]

#: what the naive baseline predicts (stated in every PredictionComparison)
NAIVE_METHOD = "leave-one-out mean of the analysed targets"


def _target(tables: MetricTables, target: str | None) -> str:
    targets = tables.targets or ["target"]
    t = target or targets[0]
    if t not in targets:
        raise AnalysisInputError(f"`target` {t!r} is not one of the store's targets {targets}")
    return t


def _pred_col(tables: MetricTables, model: str, target: str) -> str:
    targets = tables.targets or ["target"]
    return f"prediction_{model}" if len(targets) == 1 else f"prediction_{model}_{target}"


def abs_errors(tables: MetricTables, model: str, target: str | None = None) -> np.ndarray:
    """``|prediction - target|`` per sample, in store order (NaN where either is missing)."""
    t = _target(tables, target)
    s = tables.samples.sort("position")
    col = _pred_col(tables, model, t)
    if col not in s.columns:
        raise AnalysisInputError(
            f"no predictions for model {model!r} (column {col!r}) in the samples"
        )
    out = np.full(tables.n_samples, np.nan)
    pos = s["position"].to_numpy()
    out[pos] = np.abs(s[col].to_numpy().astype(float) - s[t].to_numpy().astype(float))
    return out


def naive_mae(y) -> float:
    r"""MAE of the naive baseline that predicts the mean target, left-one-out.

    Each sample is predicted by the mean of the *other* analysed targets,
    :math:`\hat y_i = ar y_{-i} = (\sum_j y_j - y_i) / (n - 1)`, so the baseline never sees the
    value it predicts (the in-sample mean would flatter it by a factor :math:`(n-1)/n`):

    .. math:: \mathrm{MAE}_0 = rac1n \sum_i |y_i - ar y_{-i}|
        = rac{n}{n-1} \cdot rac1n \sum_i |y_i - ar y|

    Non-finite targets are left out; NaN for fewer than two targets. A model whose MAE is not
    clearly below this has learned little about the target.
    """
    v = np.asarray(y, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    n = len(v)
    if n < 2:
        return math.nan
    return float(n / (n - 1) * np.mean(np.abs(v - v.mean())))


@dataclass
class PredictionComparison:
    """MAE/RMSE per model and paired differences vs the baseline (``variant - baseline``).

    ``naive_mae``: the MAE of predicting the mean target (:func:`naive_mae`, ``naive_method``
    says which mean) for this ``target``; also a column of ``per_model``.
    ``per_model``: ``model, n, mae, mae_ci_low, mae_ci_high, rmse, naive_mae``.
    ``differences``: ``variant, n, mae_baseline, mae_variant, mae_diff, mae_diff_ci_low,
    mae_diff_ci_high, rmse_diff, rmse_diff_ci_low, rmse_diff_ci_high, pct_change_mae,
    wilcoxon_pvalue`` (Wilcoxon signed-rank on ``|e_variant| - |e_baseline|``).
    Bootstrap: BCa over resampled samples, ``n_boot`` resamples, ``seed``.
    """

    baseline: str
    target: str
    per_model: pl.DataFrame
    differences: pl.DataFrame
    n_boot: int
    seed: int
    confidence: float = 0.95
    method: str = "paired bootstrap (BCa) over samples"
    naive_mae: float = math.nan
    naive_method: str = NAIVE_METHOD


def _rmse(x, axis=-1):
    return np.sqrt(np.mean(x * x, axis=axis))


def compare_predictions(
    tables: MetricTables,
    *,
    baseline: str | None = None,
    target: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PredictionComparison:
    """MAE / RMSE per model and the paired bootstrap CI of the MAE (and RMSE) difference."""
    t = _target(tables, target)
    baseline = baseline or tables.baseline
    s = tables.samples.sort("position")
    y = np.full(tables.n_samples, np.nan)
    y[s["position"].to_numpy()] = s[t].to_numpy().astype(float)
    naive = naive_mae(y)
    err = {}
    for m in tables.models:
        col = _pred_col(tables, m, t)
        e = np.full(tables.n_samples, np.nan)
        e[s["position"].to_numpy()] = s[col].to_numpy().astype(float)
        err[m] = e - y
    rows = []
    for m in tables.models:
        e = err[m][np.isfinite(err[m])]
        b = bootstrap([np.abs(e)], None, n_boot=n_boot, seed=seed, confidence=confidence)
        rows.append(
            {
                "model": m,
                "n": len(e),
                "mae": float(np.mean(np.abs(e))) if len(e) else math.nan,
                "mae_ci_low": b.ci[0],
                "mae_ci_high": b.ci[1],
                "rmse": float(np.sqrt(np.mean(e * e))) if len(e) else math.nan,
                "naive_mae": naive,
            }
        )
    diffs = []
    eb = err[baseline]
    for v in tables.models:
        if v == baseline:
            continue
        ev = err[v]
        ok = np.isfinite(eb) & np.isfinite(ev)
        ab, av = np.abs(eb[ok]), np.abs(ev[ok])
        mae_d = bootstrap([av - ab], None, n_boot=n_boot, seed=seed, confidence=confidence)
        rm_d = bootstrap(
            [eb[ok], ev[ok]],
            lambda a, b, axis=-1: _rmse(b, axis) - _rmse(a, axis),
            n_boot=n_boot,
            seed=seed,
            confidence=confidence,
        )
        _, wp, _ = wilcoxon_signed_rank(av - ab)
        mb = float(ab.mean()) if len(ab) else math.nan
        diffs.append(
            {
                "variant": v,
                "n": int(ok.sum()),
                "mae_baseline": mb,
                "mae_variant": float(av.mean()) if len(av) else math.nan,
                "mae_diff": mae_d.estimate,
                "mae_diff_ci_low": mae_d.ci[0],
                "mae_diff_ci_high": mae_d.ci[1],
                "rmse_diff": rm_d.estimate,
                "rmse_diff_ci_low": rm_d.ci[0],
                "rmse_diff_ci_high": rm_d.ci[1],
                "pct_change_mae": 100 * mae_d.estimate / mb if mb else math.nan,
                "wilcoxon_pvalue": wp,
            }
        )
    return PredictionComparison(
        baseline,
        t,
        pl.DataFrame(rows),
        pl.DataFrame(diffs),
        n_boot,
        seed,
        confidence,
        naive_mae=naive,
    )


DEFAULT_ERROR_METRICS = ROW_SUMMARY_METRICS


def _layers(layer: int | Sequence[int] | str, n_layers: int) -> list[int]:
    """Layer indices from ``layer`` (an index, negative from the end; a sequence; ``"all"``)."""
    if isinstance(layer, str):
        if layer != "all":
            raise AnalysisInputError(
                f"`layer` must be an index, a list of indices or 'all', got {layer!r}"
            )
        return list(range(n_layers))
    asked = [layer] if isinstance(layer, (int, np.integer)) else list(layer)
    out = []
    for lyr in asked:
        if not isinstance(lyr, (int, np.integer)) or not -n_layers <= lyr < n_layers:
            raise AnalysisInputError(
                f"`layer` {lyr!r} is out of range for a site with {n_layers} layers "
                f"(0..{n_layers - 1}, or -1 for the last)"
            )
        out.append(int(lyr) % n_layers)
    return list(dict.fromkeys(out))


def attention_error_correlation(
    tables: MetricTables,
    *,
    metrics: Sequence[str] | None = None,
    site: str | None = None,
    layer: int | Sequence[int] | str = -1,
    target: str | None = None,
    baseline: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> pl.DataFrame:
    """Spearman correlations of per-sample attention metrics with absolute error.

    One row per (kind, model, layer, metric). ``kind = "per_model"``: the model's metric vs its
    own ``|error|``: ``rho, rho_ci_low, rho_ci_high, p`` and ``partial_rho, partial_p`` (rank
    partial correlation controlling for ``n_keys``, the number of valid tokens).
    ``kind = "paired_difference"`` (``model = "<variant> - <baseline>"``): Spearman of
    ``Δmetric`` vs ``Δ|error|`` (both variant - baseline), partial on ``n_keys`` as well.
    Metrics come from the head-mean distribution of ``site`` (default: the main site).

    ``layer``: the layer(s) to analyse: an index (negative counts from the end), a sequence of
    indices, or ``"all"``. Default ``-1``: the last layer, the one the headline results use
    (:func:`analyze.outputs.run_analysis`). Every row runs an ``n_boot`` bootstrap, so the cost
    grows linearly with the number of layers.
    """
    metrics = list(metrics) if metrics is not None else list(DEFAULT_ERROR_METRICS)
    site = site or tables.main_site()
    baseline = baseline or tables.baseline
    if site not in tables.sites:
        raise AnalysisInputError(f"`site` {site!r} not in the tables; have {list(tables.sites)}")
    n_layers = int(tables.sites[site]["n_layers"])
    layers = _layers(layer, n_layers)
    vals = _values(tables, site, [*metrics, "n_keys"])
    errs = {m: abs_errors(tables, m, target) for m in tables.models}
    rows = []

    def one(kind, model, layer, metric, x, e, nk):
        r = spearman_with_ci(x, e, n_boot=n_boot, seed=seed, confidence=confidence)
        pr = partial_spearman(x, e, nk)
        rows.append(
            {
                "kind": kind,
                "model": model,
                "site": site,
                "layer": layer,
                "metric": metric,
                "n": r.n,
                "rho": r.statistic,
                "rho_ci_low": r.ci[0],
                "rho_ci_high": r.ci[1],
                "p": r.pvalue,
                "partial_rho": pr.statistic,
                "partial_p": pr.pvalue,
                "covariate": "n_keys",
                "n_boot": n_boot,
                "seed": seed,
            }
        )

    for layer in layers:
        for m in tables.models:
            v = vals.get((m, HEAD_MEAN, layer, -1))
            if v is None:
                continue
            for metric in metrics:
                one("per_model", m, layer, metric, v[metric], errs[m], v["n_keys"])
        vb = vals.get((baseline, HEAD_MEAN, layer, -1))
        for m in tables.models:
            v = vals.get((m, HEAD_MEAN, layer, -1))
            if m == baseline or v is None or vb is None:
                continue
            for metric in metrics:
                one(
                    "paired_difference",
                    f"{m} - {baseline}",
                    layer,
                    metric,
                    v[metric] - vb[metric],
                    errs[m] - errs[baseline],
                    vb["n_keys"],
                )
    return pl.DataFrame(rows)
