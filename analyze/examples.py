"""Which samples the heatmap examples show (:func:`choose_examples`) and the engine's numbers
for their titles (:func:`example_metrics`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from .heatmap import HeatmapData
from .options import AnalysisError
from .registry import ROW_SUMMARY_METRICS

__all__ = ["choose_examples", "example_metrics"]


def choose_examples(
    tables,
    *,
    k: int,
    strategy: str,
    site: str,
    layer: int,
    baseline: str,
    variant: str,
    seed: int = 0,
    ids: Sequence[str] | None = None,
) -> list[str]:
    """Sample ids for the heatmap examples.

    ``divergent``: the ``k`` samples with the largest mean row JSD between ``baseline`` and
    ``variant`` (site, layer, head-mean), ties in store order; ``random``: ``k`` samples drawn with
    ``seed``; ``ids``: exactly the given ids (each must be in the store). Fewer than ``k`` when the
    store has fewer samples.
    """
    all_ids = tables.samples["sample_id"].to_list()
    if strategy == "ids":
        known = set(all_ids)
        miss = [i for i in ids or [] if i not in known]
        if miss:
            raise AnalysisError(
                f"--ids: sample {miss[0]!r} is not in the store (e.g. {', '.join(all_ids[:3])})"
            )
        return list(dict.fromkeys(ids or []))
    k = min(k, len(all_ids))
    if k <= 0:
        return []
    if strategy == "random":
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(all_ids), size=k, replace=False))
        return [all_ids[i] for i in pick]
    pw = tables.pairwise
    if pw is not None and pw.height:
        head_mean = pw.filter(
            (pl.col("site") == site) & (pl.col("layer") == layer) & (pl.col("head") == -1)
        )
        for first, second in ((baseline, variant), (variant, baseline)):  # either way round
            cand = head_mean.filter((pl.col("baseline") == first) & (pl.col("variant") == second))
            if cand.height:
                break
        if cand.height:
            pos = {s: i for i, s in enumerate(all_ids)}
            rows = sorted(
                ((r["sample_id"], r["jsd"]) for r in cand.iter_rows(named=True)),
                key=lambda t: (
                    -(t[1] if t[1] is not None and np.isfinite(t[1]) else -1.0),
                    pos.get(t[0], 0),
                ),
            )
            out = [sid for sid, _ in rows[:k]]
            if len(out) == k:
                return out
    return all_ids[:k]


def example_metrics(tables, data: HeatmapData) -> None:
    """Use the engine's numbers for the heatmap title (same conventions as the tables)."""
    ps = tables.per_sample
    head = -1 if data.head is None else data.head
    sub = ps.filter(
        (pl.col("sample_id") == data.sample_id)
        & (pl.col("site") == data.site)
        & (pl.col("layer") == data.layer)
        & (pl.col("head") == head)
    )
    for m in data.models:
        r = sub.filter(pl.col("model") == m)
        if r.height:
            row = r.row(0, named=True)
            data.metrics[m] = {
                k: float(row[k]) for k in ROW_SUMMARY_METRICS if k in row and row[k] is not None
            }
    pw = tables.pairwise
    if pw is not None and pw.height:
        r = pw.filter(
            (pl.col("sample_id") == data.sample_id)
            & (pl.col("site") == data.site)
            & (pl.col("layer") == data.layer)
            & (pl.col("head") == head)
            & (pl.col("baseline") == data.models[0])
            & (pl.col("variant") == data.models[1])
        )
        if r.height and r["jsd"][0] is not None:
            data.jsd = float(r["jsd"][0])
