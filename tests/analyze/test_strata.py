"""Paired comparison within strata."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from attncmp.analyze import MetricOptions, compare_strata, compute_tables, correct_pvalues
from attncmp.analyze.strata import stratify
from attncmp.store import open_store

from tests.analyze._stores import plain_store


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    p = plain_store(
        tmp_path_factory.mktemp("strata") / "s.h5",
        90,
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


def test_heavy_ties_get_their_own_bin_and_the_rest_is_cut_evenly():
    # half the band gaps are 0 (metals): quantile edges collapse; tie-aware bins do not
    v = np.concatenate([np.zeros(50), np.linspace(0.1, 5.0, 50)])
    s = stratify(v, 3)
    assert [lbl.split(" ", 1)[1] for lbl, *_ in s][0] == "= 0"
    assert [int(m.sum()) for _, m, _, _ in s] == [50, 25, 25]
    assert sum(int(m.sum()) for _, m, _, _ in s) == 100  # every sample in exactly one bin
    assert not np.any(np.sum([m for _, m, _, _ in s], axis=0) > 1)
    # ties are never split, whatever the bins
    rng = np.random.default_rng(0)
    for _ in range(100):
        x = rng.integers(0, rng.integers(1, 8), size=int(rng.integers(1, 60))).astype(float)
        got = stratify(x, int(rng.integers(1, 6)), min_size=int(rng.integers(1, 6)))
        masks = np.array([m for _, m, _, _ in got])
        assert masks.sum(axis=0).tolist() == [1] * len(x)
        for val in np.unique(x):
            assert len({tuple(masks[:, x == val].any(axis=1))}) == 1  # one stratum per value


def test_minimum_stratum_size_merges():
    v = np.array([0.0] * 12 + [1.0, 2.0] + [3.0] * 10)
    s = stratify(v, 3, min_size=5)
    assert all(int(m.sum()) >= 5 for _, m, _, _ in s)
    assert sum(int(m.sum()) for _, m, _, _ in s) == len(v)
    cats = ["aromatic"] * 6 + ["halogenated"] * 7 + ["x"] * 2 + ["y"] * 3 + ["z"]
    got = {lbl: int(m.sum()) for lbl, m, _, _ in stratify(cats, min_size=5)}
    assert got == {"aromatic": 6, "halogenated": 7, "other (3 values)": 6}
    got = {lbl: int(m.sum()) for lbl, m, _, _ in stratify(cats[:15], min_size=5)}
    assert got == {"aromatic": 6, "halogenated": 7}  # a still-too-small 'other' is dropped


def test_axis_named_by_the_column_and_split_as_stratifier(tables):
    import dataclasses

    samples = tables.samples.rename({"target": "band_gap_eV"}).with_columns(
        pl.when(pl.col("position") % 2 == 0)
        .then(pl.lit("valid"))
        .otherwise(pl.lit("test"))
        .alias("split")
    )
    t = dataclasses.replace(tables, samples=samples, targets=["band_gap_eV"])
    f = compare_strata(t, bins=2, n_boot=100, metrics=["entropy"])
    assert set(f["stratifier"]) == {
        "n_nodes",
        "n_tokens",
        "band_gap_eV",  # the target's own name, not "target"
        "baseline_error",
        "split",  # added by default: the store pools two splits
    }
    sp = f.filter(pl.col("stratifier") == "split")
    assert dict(zip(sp["stratum"], sp["n"], strict=True)) == {"test": 45, "valid": 45}
    f = compare_strata(t, by=["group", "band_gap_eV"], n_boot=100, metrics=["entropy"])
    assert set(f["stratifier"]) == {"group", "band_gap_eV"}
    with pytest.raises(ValueError, match="choose from n_nodes, n_tokens, target"):
        compare_strata(t, by=["nope"])
