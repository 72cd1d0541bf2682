"""Prediction quality, attention vs error."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
from attncmp.analyze import (
    MetricOptions,
    attention_error_correlation,
    compare_predictions,
    compute_tables,
)
from attncmp.analyze.prediction import abs_errors
from attncmp.store import open_store
from scipy import stats

from tests.analyze._stores import plain_store, study_store


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    p = plain_store(
        tmp_path_factory.mktemp("pred") / "p.h5",
        80,
        noise={"full": 0.2, "no_middle": 0.4},
        seed=8,
    )
    return compute_tables(open_store(p), options=__import__("analyze").MetricOptions(heads="mean"))


def test_mae_rmse_and_paired_difference(tables):
    pc = compare_predictions(tables, n_boot=500, seed=1)
    s = tables.samples.sort("position")
    y = s["target"].to_numpy()
    for row in pc.per_model.iter_rows(named=True):
        e = s[f"prediction_{row['model']}"].to_numpy() - y
        assert row["mae"] == pytest.approx(np.mean(np.abs(e)))
        assert row["rmse"] == pytest.approx(np.sqrt(np.mean(e**2)))
        assert row["mae_ci_low"] < row["mae"] < row["mae_ci_high"]
    d = pc.differences.row(0, named=True)
    ef = np.abs(s["prediction_full"].to_numpy() - y)
    en = np.abs(s["prediction_no_middle"].to_numpy() - y)
    assert d["variant"] == "no_middle" and d["mae_diff"] == pytest.approx(en.mean() - ef.mean())
    assert d["mae_diff"] > 0 and d["mae_diff_ci_low"] > 0  # the noisier variant is worse
    # n = 80 > 50: the normal approximation with continuity correction (stats.wilcoxon_signed_rank)
    w = stats.wilcoxon(en - ef, method="asymptotic", correction=True)
    assert d["wilcoxon_pvalue"] == pytest.approx(w.pvalue)
    again = compare_predictions(tables, n_boot=500, seed=1)
    assert again.differences.equals(pc.differences)
    np.testing.assert_allclose(abs_errors(tables, "full"), ef)


def test_attention_error_correlation_finds_a_planted_relation(tables):
    hm = tables.per_sample.filter(
        (pl.col("head_kind") == "head-mean") & (pl.col("model") == "full")
    ).sort("position")
    ent = hm["entropy"].to_numpy()
    s = tables.samples.sort("position")
    # plant: the full model's error grows with its entropy
    pred = s["target"].to_numpy() + 3.0 * ent
    t2 = dataclasses.replace(tables, samples=s.with_columns(pl.Series("prediction_full", pred)))
    f = attention_error_correlation(t2, metrics=["entropy", "gini"], n_boot=300, seed=2)
    row = f.filter(
        (pl.col("kind") == "per_model")
        & (pl.col("model") == "full")
        & (pl.col("metric") == "entropy")
    ).row(0, named=True)
    assert row["rho"] == pytest.approx(1.0)
    assert row["p"] < 1e-10 and row["rho_ci_low"] > 0.9
    ref = stats.spearmanr(ent, np.abs(pred - s["target"].to_numpy()))
    assert row["rho"] == pytest.approx(ref.statistic)
    assert np.isfinite(row["partial_rho"]) and row["covariate"] == "n_keys"
    diff = f.filter(pl.col("kind") == "paired_difference")
    assert set(diff["model"]) == {"no_middle - full"}
    assert set(f["metric"]) == {"entropy", "gini"}


def test_attention_error_correlation_defaults_to_the_headline_layer(tmp_path):
    p = study_store(tmp_path / "l3.h5", n=16, n_heads=1, n_layers=3, extra_sites=False)
    t = compute_tables(open_store(p), options=MetricOptions(heads="mean"))
    kw = dict(metrics=["entropy"], n_boot=50, seed=1)
    last = attention_error_correlation(t, **kw)
    assert set(last["layer"]) == {2}  # only the last layer is bootstrapped by default
    assert last.height == 3  # two models + one paired difference
    every = attention_error_correlation(t, layer="all", **kw)
    assert sorted(set(every["layer"])) == [0, 1, 2] and every.height == 9
    assert every.filter(pl.col("layer") == 2).equals(last)
    assert set(attention_error_correlation(t, layer=0, **kw)["layer"]) == {0}
    assert set(attention_error_correlation(t, layer=[0, -1], **kw)["layer"]) == {0, 2}
    with pytest.raises(ValueError, match="out of range"):
        attention_error_correlation(t, layer=3, **kw)
    with pytest.raises(ValueError, match="'all'"):
        attention_error_correlation(t, layer="last", **kw)


def test_naive_mae_is_the_leave_one_out_mean_prediction(tables):
    pc = compare_predictions(tables, n_boot=50, seed=1)
    y = tables.samples.sort("position")["target"].to_numpy().astype(float)
    n = len(y)
    loo = [abs(y[i] - (y.sum() - y[i]) / (n - 1)) for i in range(n)]  # plain loop
    assert pc.naive_mae == pytest.approx(float(np.mean(loo)), rel=1e-12)
    assert (pc.per_model["naive_mae"] == pc.naive_mae).all()
    assert "leave-one-out" in pc.naive_method
    # the synthetic models learned the target: well below the naive baseline
    assert (pc.per_model["mae"] < pc.naive_mae).all()


def test_naive_mae_hand_values():
    from attncmp.analyze.prediction import naive_mae

    # y = 1, 2, 3, 6: leave-one-out means 11/3, 10/3, 3, 2 -> errors 8/3, 4/3, 0, 4
    assert naive_mae([1, 2, 3, 6]) == pytest.approx((8 / 3 + 4 / 3 + 0 + 4) / 4)
    assert naive_mae([5.0, float("nan"), 7.0]) == pytest.approx(2.0)  # NaN left out
    assert np.isnan(naive_mae([1.0])) and np.isnan(naive_mae([]))
