"""Figures of an analysis, drawn from the cached tables only (never from the store).

Every function takes polars frames with documented columns, draws one figure and either returns it
(``stem=None``, e.g. in a notebook) or writes ``stem.<fmt>`` for each requested format and returns
the written paths. Labels are English, the font is DejaVu Sans (see :mod:`analyze.plotstyle`).

Shared inputs
-------------
``per_sample``
    The engine's per-sample table: ``sample_id, model, site, layer, head, head_kind`` and one column
    per metric (``entropy``, ``max_weight``, ``effective_tokens``, ``gini``, ``node_specificity``,
    ``gold_mass``, ``gold_pointing``, ...). ``head == -1`` with ``head_kind == "head-mean"`` is the
    metric of the head-averaged distribution (the original method).
``tests``
    The comparison table (:meth:`analyze.compare.Comparison.to_frame`): one row per metric x site x
    layer x head x variant with ``mean_diff``, ``ci_diff_low/high``, ``pct_change``,
    ``p_corrected``,
    ``verdict``, ...
``selection``
    Where the headline numbers come from: ``{"site", "layer", "head", "head_kind"}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from matplotlib.collections import LineCollection
from matplotlib.colors import TwoSlopeNorm
from matplotlib.ticker import MaxNLocator

from . import registry as REG
from .plotstyle import (
    MODEL_COLOURS,
    fit_layout,
    legend_above,
    new_figure,
    safe_text,
    save_figure,
    style,
)
from .registry import metric_range

__all__ = [
    "METRIC_LABELS",
    "fmt_p",
    "fmt_pct",
    "metric_label",
    "plot_attention_error",
    "plot_gold_alignment",
    "plot_mae_comparison",
    "plot_node_specificity",
    "plot_paired_metrics",
    "plot_per_layer_head",
    "plot_statistics_comparison",
    "plot_strata",
]

METRIC_LABELS = {name: REG.label(name) for name in REG.REGISTRY}
MAIN_METRICS = REG.ORIGINAL_METRICS
MAX_PAIR_LINES = 400  # paired panels draw at most this many sample lines (all dots)


def metric_label(metric: str, threshold: float | None = None) -> str:
    return REG.label(metric, threshold)


def fmt_p(p: float | None) -> str:
    """p-values for humans: two significant digits, scientific below 0.001, ``n/a`` for NaN."""
    if p is None or not np.isfinite(p):
        return "n/a"
    if p < 1e-3:
        return f"{p:.1e}"
    return f"{p:.2g}" if p < 0.1 else f"{p:.2f}"


def fmt_pct(x: float | None, digits: int = 1) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:+.{digits}f}%"


def _colour(models: Sequence[str], m: str) -> str:
    return MODEL_COLOURS[list(models).index(m) % len(MODEL_COLOURS)]


def _finish(fig, stem: str | Path | None, formats: Sequence[str]):
    if stem is None:
        return fig
    return save_figure(fig, stem, formats)


def _title_and_note(fig, title: str, note: str | None = None) -> None:
    """The figure's left-aligned title and, below the axes, an optional small grey note."""
    fig.suptitle(title, x=0.01, ha="left")
    if note is not None:
        fig.supxlabel(note, fontsize=7.5, x=0.01, ha="left", color="#444444")


def _select(per_sample: pl.DataFrame, sel: Mapping[str, Any]) -> pl.DataFrame:
    cond = pl.lit(True)
    for key in ("site", "layer", "head", "head_kind"):
        if key in sel and sel[key] is not None and key in per_sample.columns:
            cond = cond & (pl.col(key) == sel[key])
    return per_sample.filter(cond)


def _wide(frame: pl.DataFrame, metric: str, models: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-model values aligned by sample (samples missing any model or NaN are dropped)."""
    if metric not in frame.columns or frame.height == 0:
        return {m: np.zeros(0) for m in models}
    w = frame.select("sample_id", "model", metric).pivot(
        on="model", index="sample_id", values=metric, aggregate_function="first"
    )
    cols = [m for m in models if m in w.columns]
    if len(cols) < len(models):
        return {m: np.zeros(0) for m in models}
    arr = w.select(cols).to_numpy().astype(np.float64)
    ok = np.isfinite(arr).all(axis=1)
    return {m: arr[ok, j] for j, m in enumerate(cols)}


def _test_row(
    tests: pl.DataFrame | None, metric: str, variant: str, sel: Mapping[str, Any]
) -> dict[str, Any] | None:
    if tests is None or tests.height == 0:
        return None
    t = tests.filter((pl.col("metric") == metric) & (pl.col("variant") == variant))
    t = _select(t, sel)
    return t.row(0, named=True) if t.height else None


def _paired_panel(
    ax,
    values: Mapping[str, np.ndarray],
    models: Sequence[str],
    *,
    ylabel: str,
    mean_ci: Mapping[str, tuple[float, float, float]] | None = None,
) -> None:
    """Per-sample values of each model at x = 0, 1, ...: a light violin, one grey line per sample
    joining its values, the dots, and the mean with its CI (black, offset to the right)."""
    n = min((len(v) for v in values.values()), default=0)
    xs = np.arange(len(models), dtype=float)
    if n == 0:
        ax.text(0.5, 0.5, "no paired samples", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks(xs)
        ax.set_xticklabels([safe_text(m, 18) for m in models])
        return
    arr = np.stack([values[m] for m in models])  # [models, samples]
    spread = np.nanmax(arr) - np.nanmin(arr)
    if spread > 0:
        parts = ax.violinplot(list(arr), positions=xs, widths=0.7, showextrema=False)
        for body, m in zip(parts["bodies"], models, strict=True):
            body.set_facecolor(_colour(models, m))
            body.set_edgecolor("none")
            body.set_alpha(0.18)
    alpha = float(np.clip(6.0 / math.sqrt(n), 0.05, 0.45))
    rng = np.random.default_rng(0)
    jitter = rng.uniform(-0.06, 0.06, size=n)
    lines = np.arange(n)
    if n > MAX_PAIR_LINES:  # all dots, but a seeded subset of the joining lines stays legible
        lines = np.sort(rng.choice(n, size=MAX_PAIR_LINES, replace=False))
        ax.text(
            0.01,
            0.99,
            f"lines: {MAX_PAIR_LINES} of {n} samples (random)",
            fontsize=7,
            color="#555555",
            ha="left",
            va="top",
            transform=ax.transAxes,
        )
        alpha = max(alpha, 0.08)
    segs = np.stack([xs[:, None] + jitter[None, lines], arr[:, lines]], axis=-1)  # [models, n, 2]
    ax.add_collection(
        LineCollection(
            segs.transpose(1, 0, 2), colors="#555555", alpha=alpha, linewidths=0.6, zorder=2
        )
    )
    for j, m in enumerate(models):
        ax.scatter(
            xs[j] + jitter,
            arr[j],
            s=9,
            color=_colour(models, m),
            alpha=min(1.0, 2 * alpha + 0.2),
            edgecolors="none",
            zorder=3,
        )
    for j, m in enumerate(models):
        if mean_ci and m in mean_ci and all(np.isfinite(mean_ci[m])):
            mu, lo, hi = mean_ci[m]
        else:
            mu, lo, hi = float(np.mean(arr[j])), np.nan, np.nan
        x = xs[j] + 0.3
        if np.isfinite(lo) and np.isfinite(hi):
            ax.errorbar(
                x,
                mu,
                yerr=[[mu - lo], [hi - mu]],
                fmt="D",
                color="black",
                markersize=5,
                capsize=3,
                linewidth=1.2,
                zorder=4,
            )
        else:
            ax.plot(x, mu, "D", color="black", markersize=5, zorder=4)
    ax.set_xticks(xs)
    ax.set_xticklabels([safe_text(m, 18) for m in models])
    ax.set_xlim(-0.55, len(models) - 0.35)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3, linewidth=0.5)


def _mean_ci_from_tests(
    tests: pl.DataFrame | None,
    metric: str,
    baseline: str,
    variants: Sequence[str],
    sel: Mapping[str, Any],
) -> tuple[dict[str, tuple[float, float, float]], list[dict[str, Any]]]:
    """Each model's mean and CI from the test rows, clipped to the metric's range (the engine
    already clips; a tests frame from elsewhere may not)."""
    out: dict[str, tuple[float, float, float]] = {}
    rows = []
    lo_b, hi_b = metric_range(metric) or (-math.inf, math.inf)

    def clip(mu, lo, hi):
        lo = lo if lo is None or not np.isfinite(lo) else min(max(lo, lo_b), hi_b)
        hi = hi if hi is None or not np.isfinite(hi) else min(max(hi, lo_b), hi_b)
        return (mu, lo, hi)

    for v in variants:
        r = _test_row(tests, metric, v, sel)
        if r is None:
            continue
        rows.append(r)
        out.setdefault(
            baseline, clip(r["mean_baseline"], r["ci_baseline_low"], r["ci_baseline_high"])
        )
        out[v] = clip(r["mean_variant"], r["ci_variant_low"], r["ci_variant_high"])
    return out, rows


def _sel_text(sel: Mapping[str, Any]) -> str:
    parts = []
    if sel.get("site") is not None:
        parts.append(f"site {safe_text(sel['site'])}")
    if sel.get("layer") is not None:
        parts.append(f"layer {sel['layer']}")
    if sel.get("head_kind") == "head-mean" or sel.get("head") in (-1, None):
        parts.append("head-mean")
    else:
        parts.append(f"head {sel['head']}")
    return ", ".join(parts)


def plot_paired_metrics(
    per_sample: pl.DataFrame,
    tests: pl.DataFrame | None,
    *,
    metrics: Sequence[str],
    models: Sequence[str],
    selection: Mapping[str, Any],
    title: str,
    correction: str = "holm",
    threshold: float | None = None,
    directions: Mapping[str, str] | None = None,
    ncols: int = 2,
    stem: str | Path | None = None,
    formats: Sequence[str] = ("png",),
):
    """One panel per metric: per-sample paired values of every model, mean with 95% CI, and per
    variant the % change of the mean and the corrected p-value."""
    baseline, variants = models[0], list(models[1:])
    frame = _select(per_sample, selection)
    metrics = list(metrics)
    ncols = min(ncols, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    with style(fixed=True):
        fig = new_figure(
            4.6 * ncols + 0.4 * max(0, len(models) - 2) * ncols, 3.9 * nrows + 0.6, layout=None
        )
        grid = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
        axes = grid.ravel()
        for ax, metric in zip(axes, metrics, strict=False):
            vals = _wide(frame, metric, models)
            mean_ci, rows = _mean_ci_from_tests(tests, metric, baseline, variants, selection)
            _paired_panel(ax, vals, models, ylabel=metric_label(metric, threshold), mean_ci=mean_ci)
            n = min(len(v) for v in vals.values()) if vals else 0
            lines = [metric_label(metric, threshold)]
            for r in rows:
                vname = f"{safe_text(r['variant'], 14)} vs {safe_text(baseline, 14)}: "
                lines.append(
                    f"{vname}change {fmt_pct(r['pct_change'])}, "
                    f"p({correction}) = {fmt_p(r['p_corrected'])}, n = {r['n']}"
                )
            if not rows:
                lines.append(f"n = {n} (no test)")
            exp = (directions or {}).get(metric)
            if exp:
                lines[0] += f" (expected: {exp} in {safe_text(baseline, 14)})"
            # 8.5 pt: "no_middle vs full: change -16.9%, p(holm) = 3.1e-04, n = 100" fits a column
            ax.set_title("\n".join(lines), fontsize=8.5, loc="left")
        for ax in axes[len(metrics) :]:
            ax.set_visible(False)
        _title_and_note(
            fig,
            title,
            "grey lines join one sample's values; dots: samples; black diamond: mean with 95% CI "
            "(t interval, clipped to the metric's range); change = (variant - baseline) / baseline",
        )
        fit_layout(fig, grid)
        return _finish(fig, stem, formats)


def plot_statistics_comparison(
    per_sample: pl.DataFrame,
    tests: pl.DataFrame | None,
    *,
    models: Sequence[str],
    selection: Mapping[str, Any],
    correction: str = "holm",
    threshold: float | None = 0.1,
    directions: Mapping[str, str] | None = None,
    stem: str | Path | None = None,
    formats: Sequence[str] = ("png",),
):
    """``attention_statistics_comparison``: the four original metrics, baseline vs variant(s)."""
    n = _select(per_sample, selection)["sample_id"].n_unique() if per_sample.height else 0
    title = (
        f"Attention concentration: {' vs '.join(safe_text(m) for m in models)} "
        f"({_sel_text(selection)}; n = {n} samples)"
    )
    return plot_paired_metrics(
        per_sample,
        tests,
        metrics=MAIN_METRICS,
        models=models,
        selection=selection,
        title=title,
        correction=correction,
        threshold=threshold,
        directions=directions,
        stem=stem,
        formats=formats,
    )


def plot_per_layer_head(
    tests: pl.DataFrame,
    *,
    site: str,
    baseline: str,
    variants: Sequence[str],
    metrics: Sequence[str] = MAIN_METRICS,
    alpha: float = 0.05,
    correction: str = "holm",
    head_matching: str | None = None,
    stem: str | Path | None = None,
    formats: Sequence[str] = ("png",),
):
    """Grid of % change (variant vs baseline) per layer (rows) and head (columns, plus the
    head-mean column), one panel per metric and variant; ``*`` marks corrected p < ``alpha``."""
    t = tests.filter(pl.col("site") == site)
    layers = sorted(t["layer"].unique().to_list()) if t.height else [0]
    heads = sorted(h for h in (t["head"].unique().to_list() if t.height else []) if h >= 0)
    cols = heads + [-1]
    col_labels = [f"h{h}" for h in heads] + ["mean"]
    nv, nm = len(variants), len(metrics)
    cw = max(0.55, 0.42 * len(cols))
    with style(fixed=True):
        fig = new_figure(
            max(7.0, nm * (cw + 1.3)), nv * (0.45 * len(layers) + 1.6) + 0.9, layout=None
        )
        axes = np.atleast_2d(fig.subplots(nv, nm, squeeze=False))
        cbars = {}
        for i, v in enumerate(variants):
            for j, metric in enumerate(metrics):
                ax = axes[i, j]
                sub = t.filter((pl.col("metric") == metric) & (pl.col("variant") == v))
                grid = np.full((len(layers), len(cols)), np.nan)
                sig = np.zeros_like(grid, dtype=bool)
                for r in sub.iter_rows(named=True):
                    if r["layer"] not in layers or r["head"] not in cols:
                        continue
                    a, b = layers.index(r["layer"]), cols.index(r["head"])
                    grid[a, b] = r["pct_change"]
                    sig[a, b] = bool(np.isfinite(r["p_corrected"]) and r["p_corrected"] < alpha)
                lim = np.nanmax(np.abs(grid)) if np.isfinite(grid).any() else 1.0
                lim = float(max(lim, 1e-9))
                im = ax.imshow(
                    np.ma.masked_invalid(grid),
                    cmap="RdBu_r",
                    norm=TwoSlopeNorm(0.0, -lim, lim),
                    aspect="auto",
                )
                for a in range(len(layers)):
                    for b in range(len(cols)):
                        if np.isfinite(grid[a, b]):
                            txt = f"{grid[a, b]:+.0f}" + ("*" if sig[a, b] else "")
                            dark = abs(grid[a, b]) > 0.6 * lim
                            ax.text(
                                b,
                                a,
                                txt,
                                ha="center",
                                va="center",
                                fontsize=7,
                                color="white" if dark else "black",
                            )
                ax.set_xticks(range(len(cols)))
                ax.set_xticklabels(col_labels, fontsize=7)
                ax.set_yticks(range(len(layers)))
                ax.set_yticklabels([f"L{x}" for x in layers], fontsize=7)
                if len(cols) > 1:
                    ax.axvline(len(cols) - 1.5, color="black", linewidth=0.8)
                title = metric_label(metric)
                if nv > 1:
                    title += f"\n{safe_text(v, 16)} vs {safe_text(baseline, 16)}"
                ax.set_title(title, fontsize=8.5)
                cbars[ax] = fig.add_axes((0, 0, 0.01, 0.01))
                cb = fig.colorbar(im, cax=cbars[ax])
                cb.set_label("% change", fontsize=7)
                cb.ax.tick_params(labelsize=6.5)
        match = {
            "hungarian": "; variant heads matched to baseline heads by Hungarian assignment "
            "(baseline head index shown)",
            "sorted": "; order-free: h<r> compares the r-th smallest per-head values",
            "index": "; heads paired by index",
        }.get(head_matching or "", f"; heads matched by {head_matching}" if head_matching else "")
        _title_and_note(
            fig,
            "Per layer and head: % change of the mean, "
            f"{' / '.join(safe_text(v) for v in variants)}"
            f" vs {safe_text(baseline)} (site {safe_text(site)})",
            f"* corrected p ({correction}) < {alpha:g}; 'mean' column: metric of the "
            f"head-averaged distribution{match}",
        )
        fit_layout(fig, axes, colorbars=cbars, wgap=0.35)
        return _finish(fig, stem, formats)


def plot_attention_error(
    per_sample: pl.DataFrame,
    errors: pl.DataFrame,
    correlations: pl.DataFrame | None,
    *,
    models: Sequence[str],
    selection: Mapping[str, Any],
    metrics: Sequence[str] = MAIN_METRICS,
    threshold: float | None = 0.1,
    stem: str | Path | None = None,
    formats: Sequence[str] = ("png",),
):
    """Per-sample attention metric vs absolute prediction error, per model, with Spearman's rho
    (95% CI) from ``correlations`` (columns ``model, metric, rho, rho_ci_low, rho_ci_high`` and
    ``partial_rho``); last panel: paired differences (variant - baseline) of entropy vs |error|.

    ``errors``: ``sample_id, model, abs_error``.
    """
    frame = _select(per_sample, selection)
    baseline = models[0]
    panels = list(metrics) + ["delta"]
    ncols = 3
    nrows = math.ceil(len(panels) / ncols)
    with style(fixed=True):
        fig = new_figure(4.4 * ncols, 3.7 * nrows + 0.6, layout=None)
        grid = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
        axes = grid.ravel()
        for ax, metric in zip(axes, panels, strict=False):
            if metric == "delta":
                _delta_panel(ax, frame, errors, models, "entropy", correlations)
                continue
            j = (
                frame.select("sample_id", "model", metric).join(
                    errors, on=["sample_id", "model"], how="inner"
                )
                if metric in frame.columns
                else None
            )
            texts = []
            for m in models:
                if j is None:
                    break
                d = j.filter(pl.col("model") == m)
                x, y = d[metric].to_numpy(), d["abs_error"].to_numpy()
                ok = np.isfinite(x) & np.isfinite(y)
                ax.scatter(
                    x[ok],
                    y[ok],
                    s=10,
                    alpha=0.6,
                    color=_colour(models, m),
                    edgecolors="none",
                    label=safe_text(m, 16),
                )
                texts.append(_rho_text(correlations, m, metric))
            ax.set_xlabel(metric_label(metric, threshold))
            ax.set_ylabel("|error|")
            ax.grid(alpha=0.3, linewidth=0.5)
            legend_above(
                ax,
                [
                    safe_text(m, 14) + (f": {t}" if t else "")
                    for m, t in zip(models, texts, strict=False)
                ],
                fontsize=7,
                frameon=False,
                borderaxespad=0.2,
                handletextpad=0.2,
            )
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        _title_and_note(
            fig,
            f"Attention vs absolute error ({_sel_text(selection)}); baseline {safe_text(baseline)}",
            "rho: Spearman correlation per model with 95% bootstrap CI; partial: controlling for "
            "the number of valid tokens",
        )
        fit_layout(fig, grid, wgap=0.3)
        return _finish(fig, stem, formats)


def _rho_text(correlations: pl.DataFrame | None, model: str, metric: str) -> str:
    if correlations is None or correlations.height == 0:
        return ""
    c = correlations.filter((pl.col("model") == model) & (pl.col("metric") == metric))
    if "kind" in c.columns:
        c = c.filter(pl.col("kind") == "per_model")
    if c.height == 0:
        return ""
    r = c.row(0, named=True)
    s = f"rho {r['rho']:+.2f} [{r['rho_ci_low']:+.2f}, {r['rho_ci_high']:+.2f}]"
    if r.get("partial_rho") is not None and np.isfinite(r["partial_rho"]):
        s += f", partial {r['partial_rho']:+.2f}"
    return s


def _delta_panel(
    ax,
    frame: pl.DataFrame,
    errors: pl.DataFrame,
    models: Sequence[str],
    metric: str,
    correlations: pl.DataFrame | None = None,
):
    base = models[0]
    ax.axhline(0, color="#999999", linewidth=0.7)
    ax.axvline(0, color="#999999", linewidth=0.7)
    for v in models[1:]:
        if metric not in frame.columns:
            break
        a = frame.filter(pl.col("model") == base).select("sample_id", pl.col(metric).alias("mb"))
        b = frame.filter(pl.col("model") == v).select("sample_id", pl.col(metric).alias("mv"))
        ea = errors.filter(pl.col("model") == base).select(
            "sample_id", pl.col("abs_error").alias("eb")
        )
        eb = errors.filter(pl.col("model") == v).select(
            "sample_id", pl.col("abs_error").alias("ev")
        )
        d = a.join(b, on="sample_id").join(ea, on="sample_id").join(eb, on="sample_id")
        x = (d["mv"] - d["mb"]).to_numpy()
        y = (d["ev"] - d["eb"]).to_numpy()
        ok = np.isfinite(x) & np.isfinite(y)
        lab = safe_text(v, 14)
        c = None
        if correlations is not None and correlations.height and "kind" in correlations.columns:
            c = correlations.filter(
                (pl.col("kind") != "per_model")
                & (pl.col("model") == f"{v} - {base}")
                & (pl.col("metric") == metric)
            )
        if c is not None and c.height:
            r = c.row(0, named=True)
            lab += f": rho {r['rho']:+.2f} [{r['rho_ci_low']:+.2f}, {r['rho_ci_high']:+.2f}]"
        elif ok.sum() >= 3:
            from .stats import spearman

            lab += f": rho {spearman(x[ok], y[ok])[0]:+.2f}"
        ax.scatter(
            x[ok], y[ok], s=10, alpha=0.6, color=_colour(models, v), edgecolors="none", label=lab
        )
    ax.set_xlabel(f"delta {metric_label(metric).lower()} (variant - baseline)")
    ax.set_ylabel("delta |error| (variant - baseline)")
    ax.grid(alpha=0.3, linewidth=0.5)
    legend_above(
        ax,
        fontsize=7,
        frameon=False,
        borderaxespad=0.2,
        handletextpad=0.2,
        title="paired differences",
        title_fontsize=7.5,
        alignment="left",
    )


def plot_strata(
    strata: pl.DataFrame,
    *,
    baseline: str,
    metrics: Sequence[str] = MAIN_METRICS,
    alpha: float = 0.05,
    stem: str | Path | None = None,
    formats: Sequence[str] = ("png",),
):
    """Mean paired difference (variant - baseline) with 95% CI within quantile bins, one column per
    stratifier and one row per metric. ``strata`` columns: ``stratifier, bin, bin_label, variant,
    metric, n, mean_diff, ci_diff_low, ci_diff_high, p_corrected``."""
    strat = list(dict.fromkeys(strata["stratifier"].to_list())) if strata.height else []
    metrics = [m for m in metrics if strata.height and m in set(strata["metric"].to_list())]
    variants = list(dict.fromkeys(strata["variant"].to_list())) if strata.height else []
    if not strat or not metrics:
        return None
    nr, nc = len(metrics), len(strat)
    with style(fixed=True):
        fig = new_figure(max(6.5, 3.0 * nc + 0.8), 2.4 * nr + 1.0, layout=None)
        axes = np.atleast_2d(fig.subplots(nr, nc, squeeze=False))
        width = 0.7 / max(1, len(variants))
        for i, metric in enumerate(metrics):
            for j, st in enumerate(strat):
                ax = axes[i, j]
                sub = strata.filter((pl.col("stratifier") == st) & (pl.col("metric") == metric))
                labels = list(dict.fromkeys(sub.sort("bin")["bin_label"].to_list()))
                ax.axhline(0, color="#999999", linewidth=0.7)
                for k, v in enumerate(variants):
                    s = sub.filter(pl.col("variant") == v).sort("bin")
                    xs = np.array([labels.index(b) for b in s["bin_label"].to_list()], dtype=float)
                    xs = xs + (k - (len(variants) - 1) / 2) * width
                    mu = s["mean_diff"].to_numpy().astype(float)
                    lo = s["ci_diff_low"].to_numpy().astype(float)
                    hi = s["ci_diff_high"].to_numpy().astype(float)
                    err = np.vstack([np.clip(mu - lo, 0, None), np.clip(hi - mu, 0, None)])
                    err = np.where(np.isfinite(err), err, 0.0)
                    ax.errorbar(
                        xs,
                        mu,
                        yerr=err,
                        fmt="o",
                        color=_colour([baseline, *variants], v),
                        markersize=4,
                        capsize=2.5,
                        linewidth=1.0,
                        label=safe_text(v, 16),
                    )
                    if "p_corrected" in s.columns:
                        for x, m_, p in zip(xs, mu, s["p_corrected"].to_list(), strict=False):
                            if p is not None and np.isfinite(p) and p < alpha:
                                ax.annotate(
                                    "*",
                                    (x, m_),
                                    textcoords="offset points",
                                    xytext=(5, 2),
                                    fontsize=9,
                                )
                    ns = s["n"].to_list() if "n" in s.columns else []
                ax.set_xticks(range(len(labels)))
                ax.set_xticklabels(
                    [
                        _stratum_label(lb) + (f"\nn={n}" if ns else "")
                        for lb, n in zip(labels, ns if ns else [None] * len(labels), strict=False)
                    ],
                    fontsize=7,
                )
                if i == 0:
                    ax.set_title(st.replace("_", " "), fontsize=9)
                if j == 0:
                    ax.set_ylabel(f"delta {metric_label(metric).lower()}", fontsize=8)
                ax.yaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]))
                ax.grid(axis="y", alpha=0.3, linewidth=0.5)
        if len(variants) > 1:
            axes[0, -1].legend(fontsize=7, frameon=False)
        _title_and_note(
            fig,
            f"Paired difference (variant - {safe_text(baseline)}) within strata",
            f"points: mean difference with 95% bootstrap CI; * corrected p < {alpha:g}; "
            "numeric stratifiers in quantile bins qk/K [low, high], categories by value",
        )
        fit_layout(fig, axes)
        return _finish(fig, stem, formats)


def _stratum_label(label: str) -> str:
    """A stratum's tick label: a quantile bin's name above its range (``q1/3 [-16.4, -4.74]``
    in one line is wider than its slot when three bins share a column)."""
    name, sep, rest = str(label).partition(" ")
    if sep and name.startswith("q") and "/" in name and rest[:1] in "[=":
        return f"{safe_text(name)}\n{safe_text(rest, 24)}"
    return safe_text(label, 24)


def plot_node_specificity(
    per_sample: pl.DataFrame,
    tests: pl.DataFrame | None,
    *,
    models: Sequence[str],
    selection: Mapping[str, Any],
    correction: str = "holm",
    stem: str | Path | None = None,
    formats: Sequence[str] = ("png",),
):
    """Node specificity (how different a sample's node rows are; ~0 = every node attends
    identically) per sample and model, and the share of samples with identical rows."""
    frame = _select(per_sample, selection)
    with style(fixed=True):
        fig = new_figure(10.0, 4.2, layout=None)
        ax1, ax2 = fig.subplots(1, 2)
        vals = _wide(frame, "node_specificity", models)
        mean_ci, rows = _mean_ci_from_tests(
            tests, "node_specificity", models[0], models[1:], selection
        )
        _paired_panel(ax1, vals, models, ylabel=metric_label("node_specificity"), mean_ci=mean_ci)
        lines = ["Node specificity (mean JSD of each row to the sample's mean row)"]
        for r in rows:
            lines.append(
                f"{safe_text(r['variant'], 14)} vs {safe_text(models[0], 14)}: change "
                f"{fmt_pct(r['pct_change'])}, p({correction}) = {fmt_p(r['p_corrected'])} "
                "(secondary family)"
            )
        ax1.set_title("\n".join(lines), fontsize=9, loc="left")
        shares, counts = [], []
        for m in models:
            d = frame.filter(pl.col("model") == m)
            if "identical_rows" in d.columns and d.height:
                k = int(d["identical_rows"].cast(pl.Int64).fill_null(0).sum())
                shares.append(100.0 * k / d.height)
                counts.append(f"{k} of {d.height}")
            else:
                shares.append(float("nan"))
                counts.append("n/a")
        xs = np.arange(len(models))
        bars = ax2.bar(
            xs, np.nan_to_num(shares), color=[_colour(models, m) for m in models], width=0.6
        )
        for b, s, c in zip(bars, shares, counts, strict=True):
            ax2.annotate(
                "n/a" if not np.isfinite(s) else f"{s:.0f}% ({c})",
                (b.get_x() + b.get_width() / 2, b.get_height()),
                textcoords="offset points",
                xytext=(0, 2),
                ha="center",
                fontsize=8,
            )
        ax2.set_xticks(xs)
        ax2.set_xticklabels([safe_text(m, 16) for m in models])
        ax2.set_ylim(0, 105)
        ax2.set_ylabel("% of samples")
        if all(np.isfinite(x) and x == 0 for x in shares):
            ax2.text(
                0.5,
                0.55,
                "none: in every sample the nodes\nattend differently",
                ha="center",
                va="center",
                transform=ax2.transAxes,
                fontsize=9,
                color="#444444",
            )
        ax2.set_title("Samples where every node attends identically", fontsize=9, loc="left")
        _title_and_note(fig, f"Node specificity ({_sel_text(selection)})")
        fit_layout(fig, [[ax1, ax2]], width_ratios=[1.6, 1], wgap=0.3)
        return _finish(fig, stem, formats)


def plot_gold_alignment(
    per_sample: pl.DataFrame,
    tests: pl.DataFrame | None,
    *,
    models: Sequence[str],
    selection: Mapping[str, Any],
    correction: str = "holm",
    stem: str | Path | None = None,
    formats: Sequence[str] = ("png",),
):
    """Gold mass and gold pointing accuracy per sample (only samples with a gold mask)."""
    frame = _select(per_sample, selection)
    metrics = [m for m in ("gold_mass", "gold_pointing") if m in frame.columns]
    if not metrics or frame.select(pl.col(metrics[0]).is_not_nan().sum()).item() == 0:
        return None
    n = frame.filter(pl.col(metrics[0]).is_not_nan())["sample_id"].n_unique()
    return plot_paired_metrics(
        per_sample,
        tests,
        metrics=metrics,
        models=models,
        selection=selection,
        title=f"Alignment with gold node-token pairs ({_sel_text(selection)}; n = {n} samples "
        "with a gold mask)",
        correction=correction,
        stem=stem,
        formats=formats,
    )


def plot_mae_comparison(
    per_model: pl.DataFrame,
    differences: pl.DataFrame | None,
    errors: pl.DataFrame,
    *,
    models: Sequence[str],
    target: str = "target",
    stem: str | Path | None = None,
    formats: Sequence[str] = ("png",),
):
    """MAE and RMSE per model, per-sample paired |error|, and the MAE difference with its paired
    bootstrap CI. ``per_model``: ``model, n, mae, rmse``; ``differences``: ``variant, mae_diff,
    mae_diff_ci_low, mae_diff_ci_high`` (variant - baseline); ``errors``: ``sample_id, model,
    abs_error``."""
    with style(fixed=True):
        fig = new_figure(13.0, 4.2, layout=None)
        ax1, ax2, ax3 = fig.subplots(1, 3)
        pm = {r["model"]: r for r in per_model.iter_rows(named=True)}
        xs = np.arange(len(models))
        w = 0.38
        for off, key, hatch in ((-w / 2, "mae", None), (w / 2, "rmse", "//")):
            vals = [float(pm.get(m, {}).get(key, np.nan)) for m in models]
            bars = ax1.bar(
                xs + off,
                np.nan_to_num(vals),
                w,
                color=[_colour(models, m) for m in models],
                hatch=hatch,
                edgecolor="white",
            )
            lo = [pm.get(m, {}).get(f"{key}_ci_low") for m in models]
            hi = [pm.get(m, {}).get(f"{key}_ci_high") for m in models]
            has_ci = all(x is not None and np.isfinite(x) for x in lo + hi)
            if has_ci:
                ax1.errorbar(
                    xs + off,
                    vals,
                    yerr=[np.subtract(vals, lo), np.subtract(hi, vals)],
                    fmt="none",
                    ecolor="black",
                    capsize=3,
                    linewidth=1.0,
                )
            for b, v, h in zip(bars, vals, hi if has_ci else vals, strict=True):
                ax1.annotate(
                    f"{v:.3f}",
                    (b.get_x() + b.get_width() / 2, h),
                    textcoords="offset points",
                    xytext=(0, 2),
                    ha="center",
                    fontsize=7.5,
                )
        ax1.set_xticks(xs)
        ax1.set_xticklabels([safe_text(m, 16) for m in models])
        ax1.set_ylabel(f"error ({safe_text(target)})")
        ax1.set_title("MAE (solid) and RMSE (hatched), 95% CI", fontsize=9, loc="left")
        ax1.margins(y=0.15)

        vals = _wide(errors.rename({"abs_error": "v"}), "v", models)
        mae_ci = {
            m: (pm[m]["mae"], pm[m].get("mae_ci_low", np.nan), pm[m].get("mae_ci_high", np.nan))
            for m in models
            if m in pm
        }
        _paired_panel(ax2, vals, models, ylabel="|error| per sample", mean_ci=mae_ci)
        ax2.set_title("Per-sample absolute error", fontsize=9, loc="left")

        ax3.axvline(0, color="#999999", linewidth=0.8)
        if differences is not None and differences.height:
            rows = [r for r in differences.iter_rows(named=True)]
            ys = np.arange(len(rows))
            for y, r in zip(ys, rows, strict=True):
                mu, lo, hi = r["mae_diff"], r["mae_diff_ci_low"], r["mae_diff_ci_high"]
                ax3.errorbar(
                    mu,
                    y,
                    xerr=[[max(mu - lo, 0)], [max(hi - mu, 0)]],
                    fmt="o",
                    color=_colour(models, r["variant"]) if r["variant"] in models else "k",
                    capsize=4,
                )
                ax3.annotate(
                    f"{mu:+.3f} [{lo:+.3f}, {hi:+.3f}]",
                    (mu, y),
                    textcoords="offset points",
                    xytext=(0, 7),
                    ha="center",
                    fontsize=7.5,
                )
            ax3.set_yticks(ys)
            ax3.set_yticklabels(
                [f"{safe_text(r['variant'], 14)}\n- {safe_text(models[0], 14)}" for r in rows],
                fontsize=8,
            )
            ax3.set_ylim(-0.7, len(rows) - 0.3)
        else:
            ax3.text(
                0.5,
                0.5,
                "no MAE difference available",
                ha="center",
                va="center",
                transform=ax3.transAxes,
            )
        ax3.set_xlabel("MAE difference (variant - baseline)")
        ax3.set_title("MAE difference, 95% paired bootstrap CI", fontsize=9, loc="left")
        n = int(per_model["n"].max()) if per_model.height and "n" in per_model.columns else 0
        _title_and_note(fig, f"Prediction error ({safe_text(target)}, n = {n} samples)")
        fit_layout(fig, [[ax1, ax2, ax3]], width_ratios=[1.1, 1.2, 1], wgap=0.3)
        return _finish(fig, stem, formats)
