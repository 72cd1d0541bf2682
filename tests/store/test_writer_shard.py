"""StoreWriter.remaining_ids is this shard's work only (it used to list other shards' ids)."""

from __future__ import annotations

from dataclasses import replace

from attncmp.store import StoreWriter, shard_ids
from attncmp.store.synthetic import synthetic_batch, synthetic_spec


def test_remaining_ids_are_this_shards_ids(tmp_path):
    spec = replace(synthetic_spec(7), shard_index=1, shard_count=2)
    mine = shard_ids(spec.selection_ids, 1, 2)
    assert mine == ["s0004", "s0005", "s0006"]
    with StoreWriter.create(tmp_path / "s1.h5", spec) as w:
        assert w.remaining_ids() == mine
        w.append(synthetic_batch(spec, mine[:1]))
        assert w.remaining_ids() == mine[1:]
        w.append(synthetic_batch(spec, w.remaining_ids()))
        assert w.remaining_ids() == []
