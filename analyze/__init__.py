"""attncmp analysis engine: attention metrics, paired statistics, tables (torch-free).

Notebook use::

    from analyze import open_store, compute_tables, compare, MetricOptions
    store = open_store("attention.h5")
    tables = compute_tables(store, options=MetricOptions(exclude_special=True))
    result = compare(tables)
    result.to_frame(); result.verdict
"""

from store import open_store

from .compare import DEFAULT_DIRECTIONS, MAIN_METRICS, Comparison, MetricTest, Verdict, compare
from .metrics import Diagnostics, RowMetrics, row_metrics
from .noise import NoiseFloor, noise_floor, parse_groups
from .prediction import PredictionComparison, attention_error_correlation, compare_predictions
from .stats import (
    CorrelationResult,
    PairedResult,
    correct_pvalues,
    paired_test,
    partial_spearman,
    spearman_with_ci,
)
from .strata import compare_strata
from .table import METRICS, MetricOptions, MetricTables, compute_tables

__all__ = [
    "DEFAULT_DIRECTIONS",
    "MAIN_METRICS",
    "METRICS",
    "Comparison",
    "CorrelationResult",
    "Diagnostics",
    "MetricOptions",
    "MetricTables",
    "MetricTest",
    "NoiseFloor",
    "PairedResult",
    "PredictionComparison",
    "RowMetrics",
    "Verdict",
    "attention_error_correlation",
    "compare",
    "compare_predictions",
    "compare_strata",
    "compute_tables",
    "correct_pvalues",
    "noise_floor",
    "open_store",
    "paired_test",
    "parse_groups",
    "partial_spearman",
    "row_metrics",
    "spearman_with_ci",
]
