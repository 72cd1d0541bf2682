"""`analyze` over several shard files of one run equals `analyze` over their merge (and over the
single-run store): the sample order, per-sample metrics and statistics do not depend on sharding."""

from __future__ import annotations

from dataclasses import replace

import polars as pl
from attncmp.analyze.outputs import AnalysisOptions, run_analysis
from attncmp.store import SiteSpec, shard_ids
from attncmp.store.merge import merge_stores
from attncmp.store.synthetic import synthetic_spec, write_synthetic_store
from polars.testing import assert_frame_equal

SITES = (SiteSpec("fine_grained", n_layers=1, n_heads=2),)


def test_analysis_of_shards_equals_merged_and_single_run(tmp_path):
    spec = synthetic_spec(30, sites=SITES, has_gold=True)
    single = write_synthetic_store(tmp_path / "single.h5", spec, batch_size=7)
    shards = []
    for i in range(3):
        ids = shard_ids(spec.selection_ids, i, 3)
        # shard 1 appends its samples in reverse: the reader must restore the selection order
        ids = ids[::-1] if i == 1 else ids
        p = tmp_path / f"run.shard-{i}.h5"
        write_synthetic_store(p, replace(spec, shard_index=i, shard_count=3), ids=ids, batch_size=4)
        shards.append(p)
    merged = tmp_path / "merged.h5"
    merge_stores(merged, shards)

    opts = dict(examples=2, n_boot=200, quiet=True, seed=3)
    results = {
        name: run_analysis(paths, tmp_path / f"out_{name}", AnalysisOptions(**opts))
        for name, paths in (("shards", shards[::-1]), ("merged", [merged]), ("single", [single]))
    }
    base = results["single"]
    for name in ("shards", "merged"):
        res = results[name]
        assert res.summary["n_samples"] == 30, name
        assert_frame_equal(res.tables.per_sample, base.tables.per_sample)
        sig = pl.read_csv(res.save_dir / "significance.csv")
        sig0 = pl.read_csv(base.save_dir / "significance.csv")
        assert_frame_equal(sig, sig0)
        stats = pl.read_csv(res.save_dir / "attention_statistics.csv")
        stats0 = pl.read_csv(base.save_dir / "attention_statistics.csv")
        assert_frame_equal(stats, stats0)
        assert res.verdict.overall == base.verdict.overall
