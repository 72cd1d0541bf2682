"""Paired comparison of variants (skeleton)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import polars as pl

__all__ = ["DEFAULT_DIRECTIONS", "MAIN_METRICS", "MetricTest", "Verdict", "Comparison", "compare",
           "match_heads"]

DEFAULT_DIRECTIONS = {"entropy": "lower", "max_weight": "higher", "effective_tokens": "lower",
                      "gini": "higher"}
MAIN_METRICS = ("entropy", "max_weight", "effective_tokens", "gini")
VERDICTS = ("expected direction, significant", "not significant", "significant, opposite direction")


@dataclass(frozen=True)
class MetricTest:
    metric: str
    site: str
    layer: int
    head: int
    head_kind: str
    head_matching: str
    variant_head: int
    baseline: str
    variant: str
    n: int
    n_dropped: int
    mean_baseline: float
    ci_baseline_low: float
    ci_baseline_high: float
    mean_variant: float
    ci_variant_low: float
    ci_variant_high: float
    mean_diff: float
    ci_diff_low: float
    ci_diff_high: float
    pct_change: float
    t_statistic: float
    t_pvalue: float
    wilcoxon_statistic: float
    wilcoxon_pvalue: float
    cohens_dz: float
    rank_biserial: float
    p_primary: float
    p_corrected: float
    expected_direction: str
    expected: str
    observed_direction: str
    verdict: str


@dataclass(frozen=True)
class Verdict:
    overall: str
    per_metric: dict[str, str]
    explanation: str
    per_variant: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class Comparison:
    tests: list[MetricTest]
    baseline: str
    variants: list[str]
    main_site: str | None
    correction: str
    alpha: float
    seed: int
    n_boot: int
    primary: str
    directions: dict[str, str]
    head_matching: str
    skipped: list[str] = field(default_factory=list)

    def to_frame(self) -> pl.DataFrame:
        raise NotImplementedError

    def main_tests(self) -> list[MetricTest]:
        raise NotImplementedError

    @property
    def verdict(self) -> Verdict:
        raise NotImplementedError


def match_heads(cost):
    raise NotImplementedError


def compare(tables, *, baseline: str | None = None, variants: Sequence[str] | None = None,
            metrics: Sequence[str] | None = None,
            directions: Mapping[str, str] = DEFAULT_DIRECTIONS, correction: str = "holm",
            alpha: float = 0.05, n_boot: int = 2000, seed: int = 0, heads: str = "both",
            head_matching: str = "hungarian", primary: str = "wilcoxon",
            sites: Sequence[str] | None = None, main_site: str | None = None) -> Comparison:
    raise NotImplementedError
