"""Noise floor from replicate groups."""

from __future__ import annotations

import polars as pl
import pytest
from attncmp.analyze import compute_tables, noise_floor, parse_groups
from attncmp.store import open_store

from tests.analyze._stores import plain_store, study_store


def test_parse_groups():
    assert parse_groups(["full=a,b", "nm = c , d"]) == {"full": ["a", "b"], "nm": ["c", "d"]}
    assert parse_groups("x=y,z") == {"x": ["y", "z"]}
    for bad in (["full"], ["=a,b"], ["full="], ["x=y"], ["a=b,c", "a=c,d"]):
        with pytest.raises(ValueError):
            parse_groups(bad)


def test_between_group_differences_exceed_the_seed_to_seed_floor(tmp_path):
    models = ("full_s1", "full_s2", "nm_s1", "nm_s2")
    p = plain_store(
        tmp_path / "rep.h5",
        60,
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


def test_summary_with_a_single_group_keeps_every_layer_and_metric(tmp_path):
    p = study_store(
        tmp_path / "one.h5", n=10, n_heads=2, n_layers=2, models=("a1", "a2"), extra_sites=False
    )
    nf = noise_floor(compute_tables(open_store(p)), {"g": ["a1", "a2"]})
    cells = nf.frame.select("layer", "metric").unique()
    assert cells.height == 12  # 2 layers x (4 metrics + jsd + tv)
    s = nf.summary()
    assert s.height == 12
    assert (
        s.select("layer", "metric")
        .unique()
        .sort(["layer", "metric"])
        .equals(cells.sort(["layer", "metric"]))
    )
    assert set(s["group_a"]) == set(s["group_b"]) == {"g"}
    assert s["between"].is_nan().all() and s["ratio"].is_nan().all()
    assert s["within"].is_finite().all()
    assert s["layer"].to_list() == [0] * 6 + [1] * 6  # the frame's order, deterministic
    assert s.equals(nf.summary())
