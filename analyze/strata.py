"""Paired comparison within strata (skeleton)."""

from __future__ import annotations

import polars as pl

__all__ = ["compare_strata"]


def compare_strata(tables, *, by=("n_nodes", "n_tokens", "target", "baseline_error"), bins=3,
                   metrics=None, site=None, baseline=None, variants=None, n_boot=1000, seed=0,
                   correction="holm", alpha=0.05) -> pl.DataFrame:
    raise NotImplementedError
