"""attncmp analysis engine: attention metrics, paired statistics, tables (torch-free).

Notebook use::

    from attncmp.analyze import open_store, compute_tables, compare, MetricOptions
    store = open_store("attention.h5")
    tables = compute_tables(store, options=MetricOptions(exclude_special=True))
    tables.save("metrics/")                    # later: MetricTables.load("metrics/")
    result = compare(tables)                   # full (baseline) vs each variant
    result.to_frame()                          # polars: one row per test
    result.verdict                             # Verdict(overall, per_metric, explanation)
    compare_predictions(tables).differences    # MAE / RMSE with paired bootstrap CIs

Modules: :mod:`analyze.registry` (every metric's name, label, unit, range, direction),
:mod:`analyze.metrics` (row metrics over ragged rows), :mod:`analyze.table` (streaming per-sample
tables), :mod:`analyze.stats` (paired tests, intervals, corrections, attainable p),
:mod:`analyze.compare` (families of tests and the verdict), :mod:`analyze.noise`,
:mod:`analyze.prediction`, :mod:`analyze.strata`, :mod:`analyze.calibration` (simulated studies
with known truth; test stores come from :mod:`store.synthetic`); the outputs of ``attncmp analyze``:
:mod:`analyze.pipeline`, :mod:`analyze.csvtables`, :mod:`analyze.summary`, :mod:`analyze.report`.
"""

from attncmp.store import open_store

from .compare import (
    DEFAULT_DIRECTIONS,
    MAIN_METRICS,
    Comparison,
    MetricTest,
    Verdict,
    compare,
    match_heads,
)
from .metrics import Diagnostics, RowMetrics, row_metrics
from .noise import NoiseFloor, noise_floor, parse_groups
from .prediction import PredictionComparison, attention_error_correlation, compare_predictions
from .stats import (
    BootstrapResult,
    CorrelationResult,
    PairedResult,
    bootstrap,
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
    "BootstrapResult",
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
    "bootstrap",
    "compare",
    "compare_predictions",
    "compare_strata",
    "compute_tables",
    "correct_pvalues",
    "match_heads",
    "noise_floor",
    "open_store",
    "paired_test",
    "parse_groups",
    "partial_spearman",
    "row_metrics",
    "spearman_with_ci",
]
