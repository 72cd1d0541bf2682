"""Paired statistics with the sample as the unit (skeleton)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "PairedResult",
    "CorrelationResult",
    "paired_test",
    "correct_pvalues",
    "spearman_with_ci",
    "partial_spearman",
    "bootstrap_mean_ci",
    "paired_bootstrap_ci",
]


@dataclass(frozen=True)
class PairedResult:
    n: int
    n_dropped: int
    mean_baseline: float
    ci_baseline: tuple[float, float]
    mean_variant: float
    ci_variant: tuple[float, float]
    mean_diff: float
    ci_diff: tuple[float, float]
    pct_change: float
    t_statistic: float
    t_pvalue: float
    wilcoxon_statistic: float
    wilcoxon_pvalue: float
    cohens_dz: float
    rank_biserial: float
    confidence: float
    n_boot: int
    seed: int
    method: str
    bootstrap_method: str
    wilcoxon_zero_method: str

    def confidence_interval(self, confidence_level: float | None = None) -> tuple[float, float]:
        raise NotImplementedError


@dataclass(frozen=True)
class CorrelationResult:
    n: int
    statistic: float
    pvalue: float
    ci: tuple[float, float]
    method: str
    n_boot: int
    seed: int

    def confidence_interval(self, confidence_level: float | None = None) -> tuple[float, float]:
        return self.ci


def paired_test(baseline, variant, *, n_boot=2000, seed=0, confidence=0.95) -> PairedResult:
    raise NotImplementedError


def correct_pvalues(p, method="holm") -> np.ndarray:
    raise NotImplementedError


def spearman_with_ci(x, y, *, n_boot=2000, seed=0, confidence=0.95) -> CorrelationResult:
    raise NotImplementedError


def partial_spearman(x, y, covariate, *, n_boot=0, seed=0, confidence=0.95) -> CorrelationResult:
    raise NotImplementedError


def bootstrap_mean_ci(x, *, n_boot=2000, seed=0, confidence=0.95):
    raise NotImplementedError


def paired_bootstrap_ci(baseline, variant, *, statistic=None, n_boot=2000, seed=0, confidence=0.95):
    raise NotImplementedError
