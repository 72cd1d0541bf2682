"""Helpers for engine tests: MetricTables from per-sample arrays, and fast simulated attention."""

from __future__ import annotations

import numpy as np
import polars as pl
from attncmp.analyze import MetricTables
from attncmp.analyze.metrics import row_metrics


def tables_from_values(values, *, site="atom_to_text", per_head=None, samples=None):
    """``values[model][metric]`` -> per-sample head-mean values; ``per_head[model][metric]``
    -> ``[n_heads, n]`` per-head values (optional)."""
    rows = []
    for model, mets in values.items():
        n = len(next(iter(mets.values())))
        d = {
            "sample_id": [f"s{i}" for i in range(n)],
            "model": model,
            "site": site,
            "layer": 0,
            "head": -1,
            "head_kind": "head-mean",
        }
        d.update({k: np.asarray(v, dtype=float) for k, v in mets.items()})
        rows.append(pl.DataFrame(d))
        ph = {k: np.asarray(v, dtype=float) for k, v in (per_head or {}).get(model, {}).items()}
        if ph:
            n_heads = next(iter(ph.values())).shape[0]
            for h in range(n_heads):
                d = {
                    "sample_id": [f"s{i}" for i in range(n)],
                    "model": model,
                    "site": site,
                    "layer": 0,
                    "head": h,
                    "head_kind": "head",
                }
                d.update({k: v[h] for k, v in ph.items()})
                rows.append(pl.DataFrame(d))
    frame = pl.concat(rows, how="diagonal_relaxed")
    return MetricTables.from_per_sample(frame, samples=samples)


def simulate_shapes(rng, n_samples, *, nodes=(2, 8), tokens=(5, 30)):
    """Per-sample node and token counts (shared by the variants being compared)."""
    return (
        rng.integers(nodes[0], nodes[1] + 1, size=n_samples),
        rng.integers(tokens[0], tokens[1] + 1, size=n_samples),
    )


def simulate_attention_values(rng, nn, nt, sharpness):
    """Per-sample metrics (mean over nodes) of softmax(sharpness * z) attention, z ~ N(0, 1),
    computed with row_metrics on the flat rows."""
    lengths = np.repeat(nt, nn)
    z = rng.standard_normal(int(lengths.sum())) * sharpness
    off = np.concatenate(([0], np.cumsum(lengths)))
    w = np.exp(z - np.repeat(np.maximum.reduceat(z, off[:-1]), lengths))
    r = row_metrics(w, off)
    goff = np.concatenate(([0], np.cumsum(nn)))
    return {
        name: np.add.reduceat(getattr(r, name), goff[:-1]) / nn
        for name in ("entropy", "max_weight", "effective_tokens", "gini")
    }
