"""Write -> read round trips over ragged shapes, every reader entry point, exact equality."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from attncmp.store import (
    ModelSpec,
    SampleRecord,
    SiteSpec,
    StoreError,
    StoreSpec,
    StoreWriter,
    open_store,
)
from attncmp.store.batch import records_to_flat
from attncmp.store.synthetic import (
    softmax_rows,
    synthetic_batch,
    synthetic_spec,
    write_synthetic_store,
)
from attncmp.store.validate import validate_store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ._util import assert_batches_equal, assert_stores_equal

AXES = ("nodes", "tokens", "single")
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)


@st.composite
def store_cases(draw):
    n_models = draw(st.integers(1, 3))
    sites = []
    for j in range(draw(st.integers(1, 3))):
        sites.append(
            SiteSpec(
                f"site{j}",
                query_axis=draw(st.sampled_from(AXES)),
                key_axis=draw(st.sampled_from(AXES)),
                n_layers=draw(st.integers(1, 3)),
                n_heads=draw(st.sampled_from([1, 2, 3, 16])),
            )
        )
    n = draw(st.integers(1, 7))
    ids = draw(st.lists(text.filter(bool), min_size=n, max_size=n, unique=True))
    spec = StoreSpec(
        models=tuple(ModelSpec(f"m{i}", {"seed": i, "sha256": "ab" * 32}) for i in range(n_models)),
        sites=tuple(sites),
        selection_ids=tuple(ids) + ("never-written",),
        targets=tuple(f"t{i}" for i in range(draw(st.integers(1, 2)))),
        meta_columns=(("s", "str"), ("f", "float"), ("i", "int")),
        config={"k": draw(st.integers(0, 3))},
        selection_seed=draw(st.one_of(st.none(), st.integers(0, 2**31))),
        split=draw(st.sampled_from(["", "test"])),
        dtype=draw(st.sampled_from(["float16", "float32"])),
        compression=draw(st.sampled_from(["gzip", "lzf", "none"])),
        has_gold=draw(st.booleans()),
    )
    # ragged sizes: 1 node / 1 token included; batch boundaries drawn too
    sizes = draw(st.lists(st.tuples(st.integers(1, 5), st.integers(1, 6)), min_size=n, max_size=n))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, n - 1)), max_size=3)))
    labels = draw(st.lists(text, min_size=40, max_size=40))
    seed = draw(st.integers(0, 2**32 - 1))
    return spec, sizes, cuts, labels, seed


def _records(spec: StoreSpec, sizes, labels, seed) -> list[SampleRecord]:
    rng = np.random.default_rng(seed)
    recs = []
    for i, (sid, (n, t)) in enumerate(zip(spec.selection_ids, sizes, strict=False)):
        att = {}
        for m in spec.models:
            att[m.name] = {}
            for s in spec.sites:
                q = {"nodes": n, "tokens": t, "single": 1}[s.query_axis]
                k = {"nodes": n, "tokens": t, "single": 1}[s.key_axis]
                z = rng.standard_normal((s.n_layers, s.n_heads, q, k)).astype(np.float32)
                att[m.name][s.name] = softmax_rows(z * 3)
        gold = rng.random((n, t)) < 0.3 if spec.has_gold and rng.random() < 0.6 else None
        recs.append(
            SampleRecord(
                id=sid,
                node_labels=[labels[(i + j) % len(labels)] for j in range(n)],
                tokens=[labels[(3 * i + j) % len(labels)] for j in range(t)],
                special=rng.random(t) < 0.3,
                target=rng.standard_normal(len(spec.targets)),
                predictions={m.name: rng.standard_normal(len(spec.targets)) for m in spec.models},
                attention=att,
                split=["", "train", "test"][i % 3],
                meta={"s": labels[i], "f": float(rng.standard_normal()), "i": int(i * 7 - 3)},
                gold=gold,
            )
        )
    return recs


def _stored(x: np.ndarray, dtype: str) -> np.ndarray:
    """What the store returns for ``x``: cast to the storage dtype, read back as float32."""
    return np.asarray(x).astype(dtype).astype(np.float32)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(store_cases())
def test_roundtrip_ragged_shapes(case):
    spec, sizes, cuts, labels, seed = case
    recs = _records(spec, sizes, labels, seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.h5"
        bounds = [0, *cuts, len(recs)]
        with StoreWriter.create(path, spec) as w:
            for a, b in zip(bounds[:-1], bounds[1:], strict=True):
                if b > a:
                    w.append(recs[a:b])
            assert w.n_committed == len(recs)
        with open_store(path) as st_:
            assert st_.ids == [r.id for r in recs]
            assert st_.models == [m.name for m in spec.models]
            assert st_.is_partial  # "never-written" is planned but absent
            assert st_.selection_seed == spec.selection_seed
            assert st_.config == spec.config
            assert st_.attention_dtype == spec.dtype
            for m in spec.models:
                assert st_.provenance(m.name) == m.provenance
                assert set(st_.sites(m.name)) == {s.name for s in spec.sites}
            frame = st_.samples_frame()
            assert frame["sample_id"].to_list() == [r.id for r in recs]
            assert frame["split"].to_list() == [r.split or spec.split for r in recs]
            assert frame["meta_s"].to_list() == [r.meta["s"] for r in recs]
            assert frame["meta_i"].to_list() == [r.meta["i"] for r in recs]
            np.testing.assert_array_equal(frame["meta_f"].to_numpy(), [r.meta["f"] for r in recs])
            np.testing.assert_array_equal(st_.target_array(), np.stack([r.target for r in recs]))
            for k, r in enumerate(recs):
                smp = st_.sample(r.id)
                assert smp.index == k
                assert smp.node_labels == list(r.node_labels)
                assert smp.tokens == list(r.tokens)
                np.testing.assert_array_equal(smp.special, r.special)
                for m in spec.models:
                    np.testing.assert_array_equal(smp.predictions[m.name], r.predictions[m.name])
                    for s in spec.sites:
                        want = _stored(r.attention[m.name][s.name], spec.dtype)
                        got = smp.attention[m.name][s.name]
                        assert got.shape == want.shape
                        np.testing.assert_array_equal(got, want)
                        np.testing.assert_array_equal(st_.attention(m.name, s.name, r.id), want)
                if spec.has_gold and r.gold is not None:
                    np.testing.assert_array_equal(smp.gold, r.gold)
                else:
                    assert smp.gold is None
            # chunked iteration equals random access, whatever the chunk size
            for s in spec.sites:
                for chunk in st_.iter_chunks(s.name, chunk_samples=3):
                    for i, sid in enumerate(chunk.ids):
                        r = recs[st_.index_of(sid)]
                        for m in spec.models:
                            want = _stored(r.attention[m.name][s.name], spec.dtype)
                            np.testing.assert_array_equal(chunk.matrix(m.name, i), want)
            # the bulk re-emission used by merge and recovery gives back exactly what was written
            want = records_to_flat(recs)
            for m in want.attention:
                for s in want.attention[m]:
                    want.attention[m][s] = want.attention[m][s].astype(spec.dtype)
            want.splits = [r.split or spec.split for r in recs]
            if not spec.has_gold:
                want.gold_present = want.gold = None
            got = list(st_.iter_flat_batches(batch_samples=3))
        assert_batches_equal(_concat(got), want)
        report = validate_store(path)
        assert report.ok, report.summary()


def _concat(batches):
    from attncmp.store.batch import FlatBatch

    b0 = batches[0]
    cat = np.concatenate
    return FlatBatch(
        ids=[i for b in batches for i in b.ids],
        n_nodes=cat([b.n_nodes for b in batches]),
        n_tokens=cat([b.n_tokens for b in batches]),
        node_labels=[x for b in batches for x in b.node_labels],
        tokens=[x for b in batches for x in b.tokens],
        special=cat([b.special for b in batches]),
        targets=cat([b.targets for b in batches]),
        predictions={m: cat([b.predictions[m] for b in batches]) for m in b0.predictions},
        attention={
            m: {s: cat([b.attention[m][s] for b in batches]) for s in b0.attention[m]}
            for m in b0.attention
        },
        splits=[x for b in batches for x in b.splits],
        meta={c: [x for b in batches for x in b.meta[c]] for c in b0.meta},
        gold_present=None if b0.gold_present is None else cat([b.gold_present for b in batches]),
        gold=None if b0.gold_present is None else cat([b.gold for b in batches]),
    )


def test_float16_roundtrip_is_exact_for_float16_input(tmp_path):
    """Values already representable in float16 come back bit-identical."""
    spec = synthetic_spec(6, dtype="float16")
    b = synthetic_batch(spec, spec.selection_ids)
    for m in b.attention:
        for s in b.attention[m]:
            b.attention[m][s] = b.attention[m][s].astype(np.float16)
    with StoreWriter.create(tmp_path / "a.h5", spec) as w:
        w.append(b)
    with open_store(tmp_path / "a.h5") as st_:
        for m in spec.models:
            got = st_.read_site("fine_grained", np.arange(6), [m.name]).blocks[m.name].data
            want = b.attention[m.name]["fine_grained"].astype(np.float32)
            np.testing.assert_array_equal(got, want)


def test_read_site_in_any_order_and_missing_names(tmp_path):
    spec = synthetic_spec(10, sites=(SiteSpec("fine_grained", n_layers=2, n_heads=2),))
    write_synthetic_store(tmp_path / "a.h5", spec, batch_size=3)
    with open_store(tmp_path / "a.h5") as st_:
        fwd = st_.read_site("fine_grained", [1, 5, 2])
        for i, p in enumerate([1, 5, 2]):
            for m in st_.models:
                np.testing.assert_array_equal(fwd.matrix(m, i), st_.attention(m, "fine_grained", p))
        with pytest.raises(StoreError, match="no model 'nope'"):
            st_.attention("nope", "fine_grained", 0)
        with pytest.raises(StoreError, match="no attention site 'nope'"):
            st_.attention("full", "nope", 0)
        with pytest.raises(StoreError, match="no committed sample with id 'zzz'"):
            st_.sample("zzz")


def test_empty_store_is_valid_and_readable(tmp_path):
    spec = synthetic_spec(4)
    StoreWriter.create(tmp_path / "e.h5", spec).close()
    with open_store(tmp_path / "e.h5") as st_:
        assert st_.n_samples == 0 and st_.n_planned == 4 and st_.is_partial
        assert list(st_.iter_chunks("fine_grained")) == []
    assert validate_store(tmp_path / "e.h5").ok


def test_reopen_and_continue_equals_single_run(tmp_path):
    spec = synthetic_spec(12, has_gold=True)
    write_synthetic_store(tmp_path / "ref.h5", spec, batch_size=5)
    with StoreWriter.create(tmp_path / "a.h5", spec) as w:
        w.append(synthetic_batch(spec, spec.selection_ids[:4]))
    with StoreWriter.open(tmp_path / "a.h5", spec) as w:
        assert w.remaining_ids() == list(spec.selection_ids[4:])
        w.append(synthetic_batch(spec, w.remaining_ids()))
    assert_stores_equal(tmp_path / "a.h5", tmp_path / "ref.h5")


def test_failed_append_is_rolled_back_and_the_writer_continues(tmp_path, monkeypatch):
    spec = synthetic_spec(9, has_gold=True)
    ref = write_synthetic_store(tmp_path / "ref.h5", spec, batch_size=3)
    ids = spec.selection_ids
    orig = StoreWriter._put

    def failing(self, name, values):
        orig(self, name, values)
        if name == "models/no_middle/attention/fine_grained/data":
            raise OSError("No space left on device (simulated)")

    with StoreWriter.create(tmp_path / "a.h5", spec) as w:
        w.append(synthetic_batch(spec, ids[:3]))
        monkeypatch.setattr(StoreWriter, "_put", failing)
        with pytest.raises(OSError, match="simulated"):
            w.append(synthetic_batch(spec, ids[3:6]))
        monkeypatch.setattr(StoreWriter, "_put", orig)
        assert w.n_committed == 3 and w.remaining_ids() == list(ids[3:])
        w.append(synthetic_batch(spec, ids[3:6]))
        w.append(synthetic_batch(spec, ids[6:]))
    assert validate_store(tmp_path / "a.h5").ok
    assert_stores_equal(tmp_path / "a.h5", ref)


def test_bad_metadata_is_refused_before_anything_is_written(tmp_path):
    spec = synthetic_spec(4)
    with StoreWriter.create(tmp_path / "a.h5", spec) as w:
        b = synthetic_batch(spec, spec.selection_ids[:2])
        b.meta["n_rings"] = [1, None]
        with pytest.raises(StoreError, match=r"metadata column 'n_rings' \(int\)"):
            w.append(b)
        b.meta["n_rings"] = [1, 2]
        w.append(b)
    with open_store(tmp_path / "a.h5") as st_:
        assert st_.meta_column("n_rings").tolist() == [1, 2]
    assert validate_store(tmp_path / "a.h5").ok
