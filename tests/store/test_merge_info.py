"""Shards: merge equals the single run, reading shards directly equals the merge; store_info."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from attncmp.store import SiteSpec, StoreError, StoreWriter, open_store, shard_ids
from attncmp.store.info import store_info
from attncmp.store.merge import merge_stores, spec_of
from attncmp.store.synthetic import synthetic_batch, synthetic_spec, write_synthetic_store
from attncmp.store.validate import validate_store

from ._util import assert_stores_equal, read_all

SITES = (SiteSpec("fine_grained", n_layers=2, n_heads=2), SiteSpec("pool", "nodes", "single"))


def _shards(tmp_path, spec, n_shards, *, reverse_odd=True, batch=3):
    """Write every shard of ``spec``; odd shards append their samples in reverse order."""
    paths = []
    for i in range(n_shards):
        sspec = replace(spec, shard_index=i, shard_count=n_shards)
        ids = shard_ids(spec.selection_ids, i, n_shards)
        if reverse_odd and i % 2:
            ids = ids[::-1]
        p = tmp_path / f"shard{i}.h5"
        write_synthetic_store(p, sspec, ids=ids, batch_size=batch)
        paths.append(p)
    return paths


@pytest.mark.parametrize("n_shards", [1, 4])
def test_merge_of_n_shards_equals_the_single_run(tmp_path, n_shards):
    spec = synthetic_spec(17, sites=SITES, has_gold=True)
    single = write_synthetic_store(tmp_path / "single.h5", spec, batch_size=5)
    shards = _shards(tmp_path, spec, n_shards)
    calls = []
    res = merge_stores(
        tmp_path / "merged.h5", shards[::-1], progress=lambda d, t: calls.append((d, t))
    )
    assert res.n_samples == 17 and not res.partial
    assert calls[-1] == (17, 17)
    assert_stores_equal(res.out, single)
    # reading the shards directly is the same store too, in selection order
    assert_stores_equal(shards, res.out)
    with open_store(res.out) as st:
        assert st.ids == list(spec.selection_ids)
        fp = json.loads(st.attrs["fingerprint"])
        assert fp["shard"] == "0/1"
        assert (st.attrs["shard_index"], st.attrs["shard_count"]) == (0, 1)
        assert spec_of(st).fingerprint() == fp
        assert st.provenance("full") == spec.models[0].provenance
    with open_store(shards[0]) as st:
        fp_shard = json.loads(st.attrs["fingerprint"])
    assert {k: v for k, v in fp.items() if k != "shard"} == {
        k: v for k, v in fp_shard.items() if k != "shard"
    }
    assert validate_store(res.out).ok
    # the merged store is an ordinary store: the single-run spec can open it for appending
    with StoreWriter.open(res.out, spec) as w:
        assert w.remaining_ids() == []


def test_merge_of_partial_shards_is_partial(tmp_path):
    spec = synthetic_spec(9, sites=SITES)
    shards = _shards(tmp_path, spec, 3)
    res = merge_stores(tmp_path / "m.h5", shards[:2])
    assert res.partial and res.n_samples == 6 and res.n_planned == 9
    with open_store(res.out) as st:
        assert st.is_partial and st.ids == list(spec.selection_ids[:6])
    # continuing the merged store with the single-run spec fills in the rest
    with StoreWriter.open(res.out, spec) as w:
        w.append(synthetic_batch(spec, w.remaining_ids()))
    assert_stores_equal(res.out, write_synthetic_store(tmp_path / "single.h5", spec))


def test_merge_refusals(tmp_path):
    spec = synthetic_spec(8, sites=SITES)
    shards = _shards(tmp_path, spec, 2)
    # overlapping ids: shard 0 twice under two names
    twin = tmp_path / "twin.h5"
    twin.write_bytes(shards[0].read_bytes())
    with pytest.raises(StoreError, match=r"sample 's0000' also appears in .*shard0\.h5"):
        merge_stores(tmp_path / "o1.h5", [shards[0], twin])
    with pytest.raises(StoreError, match="more than once"):
        merge_stores(tmp_path / "o1.h5", [shards[0], shards[0]])
    # incompatible configuration
    other = tmp_path / "other.h5"
    write_synthetic_store(
        other,
        replace(spec, shard_index=1, shard_count=2, config={**spec.config, "num_samples": 99}),
    )
    with pytest.raises(StoreError, match=r"config\.num_samples is 99 vs 8"):
        merge_stores(tmp_path / "o2.h5", [shards[0], other])
    # existing output, output that is a shard
    out = tmp_path / "out.h5"
    out.write_text("precious")
    with pytest.raises(StoreError, match="already exists; pass --overwrite"):
        merge_stores(out, shards)
    assert out.read_text() == "precious"
    with pytest.raises(StoreError, match="is also one of the shards"):
        merge_stores(shards[0], shards, overwrite=True)
    res = merge_stores(out, shards, overwrite=True)
    assert res.n_samples == 8
    assert not list(tmp_path.glob("*.tmp"))  # no temporary left behind by the failures
    assert [p.name for p in tmp_path.glob("o*.h5")] == ["other.h5", "out.h5"]


def test_shards_with_different_selections_are_refused(tmp_path):
    a = synthetic_spec(6, sites=SITES)
    b = replace(a, selection_ids=tuple(reversed(a.selection_ids)), shard_index=1, shard_count=2)
    pa = write_synthetic_store(tmp_path / "a.h5", replace(a, shard_index=0, shard_count=2))
    pb = write_synthetic_store(tmp_path / "b.h5", b)
    with pytest.raises(StoreError, match="selection differs"):
        open_store([pa, pb])


def test_store_info_sizes_and_ratio(tmp_path):
    spec = synthetic_spec(12, sites=SITES, has_gold=True)
    path = write_synthetic_store(tmp_path / "s.h5", spec, ids=spec.selection_ids[:10])
    info = store_info(path)
    b = read_all(path)
    assert info.n_committed == 10 and info.n_planned == 12 and info.partial
    assert info.n_nodes == (int(b.n_nodes.min()), int(b.n_nodes.max()))
    assert info.n_tokens == (int(b.n_tokens.min()), int(b.n_tokens.max()))
    assert info.n_gold == int(b.gold_present.sum())
    fg = next(s for s in info.sites if s.model == "full" and s.site == "fine_grained")
    assert fg.n_weights == b.attention["full"]["fine_grained"].size
    dense = 10 * 2 * 2 * int(b.n_nodes.max()) * int(b.n_tokens.max()) * 4
    assert fg.bytes_dense_float32 == dense
    assert 0 < fg.bytes_on_disk < dense
    assert fg.ratio_vs_dense == pytest.approx(dense / fg.bytes_on_disk)
    pool = next(s for s in info.sites if s.model == "full" and s.site == "pool")
    assert pool.bytes_dense_float32 == 10 * int(b.n_nodes.max()) * 4
    assert info.ratio_vs_dense == pytest.approx(
        sum(s.bytes_dense_float32 for s in info.sites) / sum(s.bytes_on_disk for s in info.sites)
    )
    text = info.render()
    for needle in (
        "PARTIAL",
        "10 of 12",
        "full (baseline)",
        "no_middle",
        "fine_grained",
        "nodes->tokens",
        "sha256: 0000000000000000...",
        "dense padded float32",
    ):
        assert needle in text, text
    d = json.loads(json.dumps(info.to_dict(), default=str))
    assert d["n_committed"] == 10 and np.isfinite(d["ratio_vs_dense"])


def test_store_info_over_shards(tmp_path):
    spec = synthetic_spec(9, sites=SITES)
    shards = _shards(tmp_path, spec, 3)
    info = store_info(shards)
    assert info.n_committed == 9 and not info.partial
    assert info.shards == ["0/3", "1/3", "2/3"]
    assert "shards 0/3, 1/3, 2/3" in info.render()
