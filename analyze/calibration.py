"""Simulated comparisons where the truth is known, for checking the statistics by simulation.

Used by ``benchmarks/bench_calibration.py`` (rates with Clopper-Pearson intervals) and by the
small seeded checks in ``tests/analyze/test_simulation.py``.

Each sample has ``Q`` nodes and ``T`` keys (drawn per sample) and a sharpness ``s_i =
exp(N(0, sample_sd))`` shared by both models (some samples are easier to align than others). A
model's head ``h`` has its own sharpness factor ``c_h = exp(N(0, head_sd))`` (heads of
independently trained models differ), and its rows are

.. math::  p = \\operatorname{softmax}(\\text{scale} \\cdot s_i \\cdot c_h \\cdot z),\\quad
   z \\sim N(0, 1)

rounded to float16 (as a store holds them) and renormalised. ``scale`` is the model's logit scale:
the variant with ``scale < 1`` is more diffuse than the baseline (the hypothesis holds), with
``scale > 1`` more concentrated (the opposite). With ``rho > 0`` the two models' logits share a
component (``z_v = rho z_b + sqrt(1 - rho^2) e``): correlated models. Per-sample metrics are the
engine's row metrics (:func:`analyze.metrics.row_metrics`) averaged over a sample's nodes, per
head and on the head-averaged distribution.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import polars as pl

from .distributions import beta_ppf
from .metrics import row_metrics
from .registry import CONFIRMATORY_METRICS
from .table import MetricTables

__all__ = ["Scenario", "simulate_tables", "clopper_pearson"]

#: what the simulated tables hold: the confirmatory metrics and the original count
_METRICS = (*CONFIRMATORY_METRICS, "effective_tokens")


@dataclass(frozen=True)
class Scenario:
    """One simulated study (see the module docstring)."""

    n: int = 40
    scale: float = 1.0  # the variant's logit scale (baseline: 1.0)
    nodes: tuple[int, int] = (2, 30)
    keys: tuple[int, int] = (5, 80)
    n_heads: int = 4
    sample_sd: float = 0.4
    head_sd: float = 0.3
    rho: float = 0.0
    threshold: float = 0.1


def _softmax16(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    w = np.exp(z)
    w /= w.sum(axis=-1, keepdims=True)
    w = w.astype(np.float16).astype(np.float64)  # a float16 store
    return w / w.sum(axis=-1, keepdims=True)


def simulate_tables(rng: np.random.Generator, sc: Scenario) -> MetricTables:
    """Per-sample metric tables of one simulated study: models ``full`` (baseline) and
    ``no_middle`` (logit scale ``sc.scale``), one site with ``sc.n_heads`` heads, one layer.

    The variant's heads are the baseline's head sharpness factors in a random order (the same
    distribution of heads, in an order training does not fix), so with ``scale = 1`` the two
    models have the same expected per-sample metrics: a null for head-mean and for head
    comparisons that do not depend on head order."""
    H = sc.n_heads
    f_full = np.exp(rng.normal(0.0, sc.head_sd, H))
    head_f = {"full": f_full, "no_middle": f_full[rng.permutation(H)]}
    flat: dict[str, list[np.ndarray]] = {"full": [], "no_middle": []}
    lengths: list[int] = []
    meta: list[tuple[int, int, int]] = []  # (sample, head or -1, n_rows) per group of rows
    for i in range(sc.n):
        q = int(rng.integers(sc.nodes[0], sc.nodes[1] + 1))
        t = int(rng.integers(sc.keys[0], sc.keys[1] + 1))
        s = float(np.exp(rng.normal(0.0, sc.sample_sd)))
        zb = rng.standard_normal((H, q, t))
        zv = sc.rho * zb + np.sqrt(1.0 - sc.rho**2) * rng.standard_normal((H, q, t))
        for model, z, scale in (("full", zb, 1.0), ("no_middle", zv, sc.scale)):
            p = _softmax16(scale * s * head_f[model][:, None, None] * z)  # [head, q, t]
            flat[model].append(p.ravel())
            flat[model].append(p.mean(axis=0).ravel())  # the head-averaged distribution
        lengths += [t] * (H * q + q)
        meta += [(i, h, q) for h in range(H)] + [(i, -1, q)]
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    group_rows = np.array([m[2] for m in meta])
    goff = np.concatenate(([0], np.cumsum(group_rows)))[:-1]
    frames = []
    for model in ("full", "no_middle"):
        r = row_metrics(np.concatenate(flat[model]), offsets, threshold=sc.threshold, copy=False)
        cols = {m: np.add.reduceat(getattr(r, m), goff) / group_rows for m in _METRICS}
        frames.append(
            pl.DataFrame(
                {
                    "sample_id": [f"s{m[0]}" for m in meta],
                    "model": model,
                    "site": "atom_to_text",
                    "layer": 0,
                    "head": [m[1] for m in meta],
                    "head_kind": ["head-mean" if m[1] < 0 else "head" for m in meta],
                    "n_keys": [lengths[int(o)] for o in goff],
                    **cols,
                }
            )
        )
    tables = MetricTables.from_per_sample(pl.concat(frames))
    tables.options = dataclasses.replace(tables.options, threshold=sc.threshold)
    return tables


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial proportion ``k / n``."""
    a = (1.0 - confidence) / 2.0
    lo = 0.0 if k == 0 else float(beta_ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta_ppf(1.0 - a, k + 1, n - k))
    return lo, hi
