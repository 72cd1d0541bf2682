"""The analysis outputs, as the README's Python API documents them::

    from attncmp.analyze.outputs import AnalysisOptions, run_analysis, replot
    res = run_analysis(["attention_store.h5"], "out", AnalysisOptions(examples=3))
    res.comparison.to_frame(); res.summary["verdict"]

The work is done by modules with one job each: :mod:`analyze.options` (the request),
:mod:`analyze.pipeline` (run, render, replot), :mod:`analyze.csvtables` (CSV tables),
:mod:`analyze.summary` (``summary.json``), :mod:`analyze.examples` (heatmap examples),
:mod:`analyze.report` (``report.md``) and :mod:`analyze.files` (writing). This module re-exports
their public names. Files written into the save directory: :data:`OUTPUT_FILES`.
"""

from __future__ import annotations

from .examples import choose_examples
from .options import EXAMPLE_STRATEGIES, AnalysisError, AnalysisOptions
from .pipeline import CACHE_DIR, AnalysisResult, prepare_save_dir, render, replot, run_analysis
from .summary import OUTPUT_FILES, SUMMARY_FORMAT, SUMMARY_VERSION, build_summary, describe_file

__all__ = [
    "CACHE_DIR",
    "EXAMPLE_STRATEGIES",
    "OUTPUT_FILES",
    "SUMMARY_FORMAT",
    "SUMMARY_VERSION",
    "AnalysisError",
    "AnalysisOptions",
    "AnalysisResult",
    "build_summary",
    "choose_examples",
    "describe_file",
    "prepare_save_dir",
    "render",
    "replot",
    "run_analysis",
]
