"""Per-row attention metrics over ragged rows (numpy only; vectorised segment reductions).

Skeleton: bodies follow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
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
    "pointing",
    "segment_mean",
]

ROW_METRICS = (
    "entropy", "norm_entropy", "perplexity", "max_weight", "effective_tokens", "gini", "ipr",
    "topk_mass", "special_mass",
)


@dataclass
class RowMetrics:
    """Per-row metric arrays (float64 [n_rows]) plus the row's valid key count."""

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
    gold_pointing: np.ndarray | None = None
    constant: np.ndarray | None = None
    all_special: np.ndarray | None = None
    invalid: np.ndarray | None = None


@dataclass
class Diagnostics:
    """Degenerate attention found while computing the tables."""

    sites: object = None  # polars DataFrame, one row per (model, site)
    messages: list[str] = field(default_factory=list)


def segment_mean(values, offsets):
    raise NotImplementedError


def row_metrics(data, offsets, *, special=None, gold=None, threshold=0.1, top_k=3,
                exclude_special=True) -> RowMetrics:
    raise NotImplementedError


def entropy(p, offsets):
    raise NotImplementedError


def normalized_entropy(h, n):
    raise NotImplementedError


def perplexity(h):
    raise NotImplementedError


def max_weight(p, offsets):
    raise NotImplementedError


def effective_tokens(p, offsets, threshold=0.1):
    raise NotImplementedError


def gini(p, offsets, n_valid=None):
    raise NotImplementedError


def inverse_participation_ratio(p, offsets):
    raise NotImplementedError


def topk_mass(p, offsets, k=3):
    raise NotImplementedError


def special_mass(w, offsets, special):
    raise NotImplementedError


def jensen_shannon(p, q, offsets):
    raise NotImplementedError


def total_variation(p, q, offsets):
    raise NotImplementedError


def node_specificity(p, offsets, group_offsets):
    raise NotImplementedError


def gold_mass(p, offsets, gold):
    raise NotImplementedError


def pointing(p, offsets, gold):
    raise NotImplementedError
