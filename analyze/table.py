"""Streaming per-sample metric tables (skeleton)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from .metrics import Diagnostics

__all__ = ["MetricOptions", "MetricTables", "compute_tables", "METRICS"]

METRICS = (
    "entropy", "norm_entropy", "perplexity", "max_weight", "effective_tokens", "gini", "ipr",
    "topk_mass", "special_mass", "node_specificity", "gold_mass", "gold_pointing",
)


@dataclass(frozen=True)
class MetricOptions:
    threshold: float = 0.1
    exclude_special: bool = True
    top_k: int = 3
    heads: str = "both"  # "each" | "mean" | "both"
    chunk_samples: int = 256
    identical_tol: float = 1e-6
    pairs: str = "all"  # "all" | "baseline"


@dataclass
class MetricTables:
    per_sample: pl.DataFrame
    pairwise: pl.DataFrame
    samples: pl.DataFrame
    diagnostics: Diagnostics
    head_similarity: pl.DataFrame
    models: list[str]
    baseline: str
    sites: dict[str, dict[str, Any]]
    n_samples: int
    is_partial: bool
    store_paths: list[str]
    split: str
    seed: int | None
    options: MetricOptions = field(default_factory=MetricOptions)
    targets: list[str] = field(default_factory=list)

    def save(self, directory) -> Path:
        raise NotImplementedError

    @classmethod
    def load(cls, directory) -> MetricTables:
        raise NotImplementedError


def compute_tables(store, *, options: MetricOptions = MetricOptions(),
                   sites: Sequence[str] | None = None, models: Sequence[str] | None = None,
                   progress: Callable[[int, int], None] | None = None) -> MetricTables:
    raise NotImplementedError
