"""The CSV tables of an analysis, each built from the object that computed it, with the column
names that object uses.

* ``attention_statistics.csv`` (:func:`statistics_table`): the original file (one row per metric
  and variant: each model's mean and the change in %), now with n, CIs (``ci_method`` named), the
  p-values, the family each row was corrected in and its size, effect sizes and the verdict. Rows:
  the original four metrics, then perplexity; every row comes from the headline cells of the one
  :class:`analyze.compare.Comparison` that also gives the verdict.
* ``significance.csv``: :meth:`analyze.compare.Comparison.to_frame` (every test, with ``family``).
* ``per_layer_head.csv`` (:func:`per_layer_head_table`), ``prediction.csv``
  (:func:`prediction_table`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from . import registry as REG

__all__ = [
    "STATISTICS_ROWS",
    "statistics_table",
    "per_layer_head_table",
    "prediction_table",
    "errors_frame",
]

#: rows of attention_statistics.csv: the original four metrics (seed parity), then perplexity
STATISTICS_ROWS = (*REG.ORIGINAL_METRICS, "perplexity")


def statistics_table(comparison, models: Sequence[str], layers: Sequence[int]) -> pl.DataFrame:
    """``attention_statistics.csv``: the original columns (metric, each model's value, change %)
    then n, CIs, p-values, family, effect sizes and verdict; one row per metric x hypothesis
    layer x variant, from ``comparison.headline_tests()``."""
    by = {(t.metric, t.variant, t.layer): t for t in comparison.headline_tests()}
    rows: list[dict[str, Any]] = []
    for metric in STATISTICS_ROWS:
        for layer in layers:
            for v in models[1:]:
                t = by.get((metric, v, layer))
                if t is None:
                    continue
                row: dict[str, Any] = {"metric": metric, models[0]: t.mean_baseline}
                for m in models[1:]:
                    tm = by.get((metric, m, layer))
                    row[m] = tm.mean_variant if tm is not None else None
                row.update(
                    {
                        "change_pct": t.pct_change,
                        "variant": v,
                        "baseline": t.baseline,
                        "n": t.n,
                        "baseline_ci_low": t.ci_baseline_low,
                        "baseline_ci_high": t.ci_baseline_high,
                        "variant_ci_low": t.ci_variant_low,
                        "variant_ci_high": t.ci_variant_high,
                        "mean_diff": t.mean_diff,
                        "diff_ci_low": t.ci_diff_low,
                        "diff_ci_high": t.ci_diff_high,
                        "ci_method": t.ci_method,
                        "hl_shift": t.hl_shift,
                        "shift_ci_low": t.ci_shift_low,
                        "shift_ci_high": t.ci_shift_high,
                        "t_pvalue": t.t_pvalue,
                        "wilcoxon_pvalue": t.wilcoxon_pvalue,
                        "p_corrected": t.p_corrected,
                        "correction": comparison.correction,
                        "family": t.family,
                        "family_size": comparison.families[t.family].size,
                        "cohens_dz": t.cohens_dz,
                        "rank_biserial": t.rank_biserial,
                        "expected_direction": t.expected_direction,
                        "verdict": t.verdict,
                        "site": t.site,
                        "layer": t.layer,
                        "head": t.head_kind if t.head < 0 else t.head,
                    }
                )
                rows.append(row)
    return pl.DataFrame(rows) if rows else pl.DataFrame(schema={"metric": pl.String})


def per_layer_head_table(tables) -> pl.DataFrame:
    """``per_layer_head.csv``: mean of every metric per site x layer x head x model, with n."""
    from .table import METRICS

    ps = tables.per_sample
    metrics = [m for m in METRICS if m in ps.columns]
    keys = ["site", "layer", "head", "head_kind", "model"]
    if ps.height == 0:
        return pl.DataFrame(schema={k: pl.String for k in keys})
    agg = [pl.col("sample_id").n_unique().alias("n_samples")]
    agg += [pl.col(m).filter(pl.col(m).is_not_nan()).mean().alias(m) for m in metrics]
    if "identical_rows" in ps.columns:
        agg.append(pl.col("identical_rows").cast(pl.Float64).mean().alias("identical_rows_share"))
    return ps.group_by(keys, maintain_order=True).agg(agg).sort(["site", "layer", "head", "model"])


def prediction_table(prediction) -> pl.DataFrame | None:
    """``prediction.csv``: ``per_model`` (MAE, RMSE, naive MAE) joined with the differences to
    the baseline (columns as :class:`analyze.prediction.PredictionComparison` names them)."""
    if prediction is None:
        return None
    out = prediction.per_model.with_columns(pl.lit(prediction.baseline).alias("baseline"))
    diffs = prediction.differences
    if diffs is not None and diffs.height and "variant" in diffs.columns:
        keep = [c for c in diffs.columns if c not in ("baseline", "n")]
        out = out.join(diffs.select(keep).rename({"variant": "model"}), on="model", how="left")
    return out


def errors_frame(tables, models: Sequence[str]) -> tuple[pl.DataFrame, str]:
    """``sample_id, model, abs_error`` for the first target, and that target's name."""
    s = tables.samples
    targets = list(tables.targets) or ["target"]
    tgt = targets[0]
    rows = []
    for m in models:
        col = f"prediction_{m}" if len(targets) == 1 else f"prediction_{m}_{tgt}"
        if col not in s.columns or tgt not in s.columns:
            continue
        rows.append(
            s.select(
                "sample_id",
                pl.lit(m).alias("model"),
                (pl.col(col) - pl.col(tgt)).abs().cast(pl.Float64).alias("abs_error"),
            )
        )
    if not rows:
        return pl.DataFrame(
            schema={"sample_id": pl.String, "model": pl.String, "abs_error": pl.Float64}
        ), tgt
    return pl.concat(rows), tgt
