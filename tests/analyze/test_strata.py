"""Paired comparison within strata."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from attncmp.analyze import MetricOptions, compare_strata, compute_tables, correct_pvalues
from attncmp.analyze.strata import stratify
from attncmp.analyze.synthetic import write_synthetic_store
from attncmp.store import open_store


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    p = write_synthetic_store(
        tmp_path_factory.mktemp("strata") / "s.h5",
        n_samples=90,
        sharpness={"full": 1.4},
        nodes=(1, 10),
        tokens=(3, 25),
        seed=2,
    )
    return compute_tables(open_store(p), options=MetricOptions(heads="mean"))


def test_stratify_numeric_and_categorical():
    v = np.arange(12.0)
    s = stratify(v, 3)
    assert [m.sum() for _, m, _, _ in s] == [4, 4, 4]
    assert s[0][0].startswith("q1/3") and s[0][2] == 0.0 and s[-1][3] == 11.0
    ties = stratify(np.array([1.0] * 10 + [2.0, 3.0]), 3)  # duplicate edges merge
    assert sum(m.sum() for _, m, _, _ in ties) == 12
    cats = stratify(["a", "b", "a", None], 3)
    assert [(lbl, int(m.sum())) for lbl, m, _, _ in cats] == [("a", 2), ("b", 1)]


def test_compare_within_strata(tables):
    f = compare_strata(
        tables,
        by=("n_nodes", "n_tokens", "target", "baseline_error", "group"),
        bins=2,
        n_boot=100,
        seed=0,
    )
    assert set(f["stratifier"]) == {"n_nodes", "n_tokens", "target", "baseline_error", "group"}
    g = f.filter(pl.col("stratifier") == "group")
    assert set(g["stratum"]) == {"a", "b"}
    assert g.filter(pl.col("metric") == "entropy")["n"].sum() == 90
    np.testing.assert_allclose(f["p_corrected"], correct_pvalues(f["p_primary"].to_numpy()))
    # the planted shift shows up within strata with the right sign
    ent = f.filter(pl.col("metric") == "entropy")
    assert (ent["mean_diff"] > 0).all()
    assert (f["expected"].str.contains("full")).all()
    with pytest.raises(ValueError, match="stratifier 'nope'"):
        compare_strata(tables, by=("nope",))
