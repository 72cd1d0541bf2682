"""Noise floor from replicate groups."""

from __future__ import annotations

import polars as pl
import pytest

from analyze import compute_tables, noise_floor, parse_groups
from analyze.synthetic import write_synthetic_store
from store import open_store


def test_parse_groups():
    assert parse_groups(["full=a,b", "nm = c , d"]) == {"full": ["a", "b"], "nm": ["c", "d"]}
    assert parse_groups("x=y") == {"x": ["y"]}
    for bad in (["full"], ["=a"], ["full="], ["a=b", "a=c"]):
        with pytest.raises(ValueError):
            parse_groups(bad)


def test_between_group_differences_exceed_the_seed_to_seed_floor(tmp_path):
    models = ("full_s1", "full_s2", "nm_s1", "nm_s2")
    p = write_synthetic_store(
        tmp_path / "rep.h5",
        n_samples=60,
        models=models,
        sharpness={"full_s1": 1.8, "full_s2": 1.8},
        nodes=(2, 6),
        tokens=(6, 16),
        shared_base=1.0,
        seed=5,
    )
    t = compute_tables(open_store(p))
    nf = noise_floor(t, parse_groups(["full=full_s1,full_s2", "nm=nm_s1,nm_s2"]))
    f = nf.frame
    assert set(f["comparison"]) == {"within", "between"}
    assert len(f.filter((pl.col("comparison") == "between") & (pl.col("metric") == "entropy"))) == 4
    s = nf.summary()
    ent = s.filter(pl.col("metric") == "entropy").row(0, named=True)
    assert ent["group_a"] == "full" and ent["group_b"] == "nm"
    assert ent["ratio"] > 2.0  # planted: groups differ far more than seeds do
    assert set(s["metric"]) >= {"entropy", "gini", "jsd", "tv"}
    with pytest.raises(ValueError, match="not in the store"):
        noise_floor(t, {"x": ["nope"]})
    with pytest.raises(ValueError, match="in groups"):
        noise_floor(t, {"x": ["full_s1"], "y": ["full_s1"]})
