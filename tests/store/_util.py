"""Helpers shared by the store tests."""

from __future__ import annotations

import numpy as np
from attncmp.store import FlatBatch, open_store


def read_all(paths) -> FlatBatch:
    """Every committed sample of a store, in store order, as one FlatBatch."""
    with open_store(paths) as st:
        batches = list(st.iter_flat_batches(10_000))
        models = st.models
        sites = list(st.sites())
        has_gold = st.has_gold
    if not batches:
        z = np.zeros(0)
        return FlatBatch([], z, z, [], [], z, np.zeros((0, 1)), {}, {})
    b = batches[0]
    assert len(batches) == 1
    assert set(b.predictions) == set(models)
    assert all(set(b.attention[m]) == set(sites) for m in models)
    assert (b.gold_present is not None) == has_gold
    return b


def assert_batches_equal(a: FlatBatch, b: FlatBatch) -> None:
    """Exact equality of two FlatBatches (ids, sizes, strings, values, matrices, gold)."""
    assert a.ids == b.ids
    np.testing.assert_array_equal(a.n_nodes, b.n_nodes)
    np.testing.assert_array_equal(a.n_tokens, b.n_tokens)
    assert a.node_labels == b.node_labels
    assert a.tokens == b.tokens
    np.testing.assert_array_equal(np.asarray(a.special, bool), np.asarray(b.special, bool))
    np.testing.assert_array_equal(a.targets, b.targets)
    assert a.predictions.keys() == b.predictions.keys()
    for m in a.predictions:
        np.testing.assert_array_equal(a.predictions[m], b.predictions[m])
    assert a.attention.keys() == b.attention.keys()
    for m in a.attention:
        assert a.attention[m].keys() == b.attention[m].keys()
        for s in a.attention[m]:
            x, y = a.attention[m][s], b.attention[m][s]
            assert x.dtype == y.dtype, (m, s)
            np.testing.assert_array_equal(x, y, err_msg=f"{m}/{s}")
    assert a.splits == b.splits
    assert a.meta.keys() == b.meta.keys()
    for c in a.meta:
        np.testing.assert_array_equal(np.asarray(a.meta[c]), np.asarray(b.meta[c]), err_msg=c)
    if a.gold_present is None or b.gold_present is None:
        assert a.gold_present is None and b.gold_present is None
    else:
        np.testing.assert_array_equal(a.gold_present, b.gold_present)
        ga = np.zeros(0, bool) if a.gold is None else np.asarray(a.gold, bool)
        gb = np.zeros(0, bool) if b.gold is None else np.asarray(b.gold, bool)
        np.testing.assert_array_equal(ga, gb)


def assert_stores_equal(a, b) -> None:
    """Two stores (paths or lists of shard paths) hold the same samples in the same order."""
    assert_batches_equal(read_all(a), read_all(b))
