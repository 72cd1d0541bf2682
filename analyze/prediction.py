"""Prediction quality and attention-vs-error (skeleton)."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

__all__ = ["PredictionComparison", "compare_predictions", "attention_error_correlation"]


@dataclass
class PredictionComparison:
    baseline: str
    target: str
    per_model: pl.DataFrame  # model, n, mae, rmse
    differences: pl.DataFrame  # variant, mae_diff, ci_low, ci_high, ...
    n_boot: int
    seed: int


def compare_predictions(tables, *, baseline=None, target=None, n_boot=2000, seed=0,
                        confidence=0.95) -> PredictionComparison:
    raise NotImplementedError


def attention_error_correlation(tables, *, metrics=None, site=None, target=None, n_boot=2000,
                                seed=0, confidence=0.95) -> pl.DataFrame:
    raise NotImplementedError
