"""store_schema.md is executable: its h5py-only examples write a store that validate accepts and
open_store reads, and read it back. Catches drift between the document and the code."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from attncmp.store import open_store
from attncmp.store.schema import (
    ENC_ATTENTION,
    ENC_GOLD,
    ENC_ITEMS,
    ENC_MODEL,
    ENC_ROOT,
    ENC_SAMPLES,
    ENC_STRING_ARRAY,
    ROW_SUM_TOL,
    SCHEMA_VERSION,
)
from attncmp.store.validate import validate_store
from attncmp.store.writer import StoreWriter

DOC = Path(__file__).resolve().parents[2] / "store_schema.md"


def _block(name: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    m = re.search(rf"<!-- doc-test: {name} -->\s*```python\n(.*?)```", text, re.S)
    assert m, f"store_schema.md lacks the '{name}' example"
    return m.group(1)


@pytest.fixture
def doc_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "doc_write"}
    exec(compile(_block("write"), "store_schema.md:write", "exec"), ns)
    return tmp_path / ns["path"], ns


def test_doc_written_store_is_valid_and_readable(doc_store):
    path, ns = doc_store
    report = validate_store(path)
    assert report.ok, report.summary()
    with open_store(path) as st:
        assert st.ids == ns["ids"]
        assert st.models == ns["models"] and st.baseline == "full"
        assert not st.is_partial and st.selection_seed == 0 and st.split == "test"
        site = st.sites()["fine_grained"]
        assert (site.query_axis, site.key_axis, site.n_layers, site.n_heads) == (
            "nodes",
            "tokens",
            1,
            2,
        )
        for m in ns["models"]:
            for k, sid in enumerate(ns["ids"]):
                want = ns["attention"][m][k].astype(np.float32)
                np.testing.assert_array_equal(st.attention(m, "fine_grained", sid), want)
        smp = st.sample("mol-1")
        assert smp.node_labels == ["C", "Cl"]
        assert smp.tokens == ["[CLS]", "chloro", "methane", "[SEP]"]
        np.testing.assert_array_equal(smp.special, [True, False, False, True])
        np.testing.assert_array_equal(st.target_array()[:, 0], [-0.5, -6.3])
        assert st.provenance("no_middle") == {"checkpoint": "no_middle.pt", "seed": 0}


def test_doc_read_example_reads_the_doc_store(doc_store, capsys):
    path, ns = doc_store
    rns: dict = {"__name__": "doc_read"}
    exec(compile(_block("read"), "store_schema.md:read", "exec"), rns)
    np.testing.assert_array_equal(rns["matrix"], ns["attention"]["full"][0].astype(np.float32))
    assert rns["tokens"] == ["[CLS]", "chloro", "methane", "[SEP]"]
    assert rns["labels"] == ["C", "Cl"]
    with open_store(path) as st:
        np.testing.assert_array_equal(rns["matrix"], st.attention("full", "fine_grained", "mol-1"))
    assert "chloro" in capsys.readouterr().out


def test_doc_written_store_can_be_continued_by_the_writer(doc_store):
    """The doc's layout is the writer's: StoreWriter.open accepts its fingerprint, finds both
    samples committed, and refuses a differently configured writer."""
    from dataclasses import replace

    from attncmp.store import StoreConfigMismatch
    from attncmp.store.merge import spec_of

    path, _ns = doc_store
    with open_store(path) as st:
        spec = spec_of(st)
    with StoreWriter.open(path, spec) as w:
        assert w.n_committed == 2 and w.remaining_ids() == []
    assert validate_store(path).ok
    with pytest.raises(StoreConfigMismatch, match="dtype"):
        StoreWriter.open(path, replace(spec, dtype="float32"))


def test_doc_mentions_every_constant():
    text = DOC.read_text(encoding="utf-8")
    assert f"schema version {SCHEMA_VERSION}" in text
    for enc in (ENC_ROOT, ENC_STRING_ARRAY, ENC_SAMPLES, ENC_ITEMS, ENC_MODEL, ENC_ATTENTION):
        assert f"`{enc[0]}` | {enc[1]}" in text, enc
    assert f"`{ENC_GOLD[0]}` | {ENC_GOLD[1]}" in text
    m = re.search(r"gives\s+`([0-9.e-]+)` \(`float32`\) or `([0-9.e-]+)` \(`float16`", text)
    assert m, "row-sum tolerances not found in store_schema.md"
    assert (float(m.group(1)), float(m.group(2))) == (
        ROW_SUM_TOL["float32"],
        ROW_SUM_TOL["float16"],
    )


def test_writer_output_matches_the_documented_layout(tmp_path):
    """Every element the doc names exists in a writer-made store with the documented dtype."""
    from attncmp.store.synthetic import synthetic_spec, write_synthetic_store

    path = write_synthetic_store(tmp_path / "w.h5", synthetic_spec(3, has_gold=True))
    with h5py.File(path, "r") as f:
        for name, dtype in [
            ("commit", np.int64),
            ("selection/ids/data", np.uint8),
            ("samples/n_nodes", np.int32),
            ("samples/target", np.float64),
            ("nodes/offsets", np.int64),
            ("tokens/special", np.uint8),
            ("models/full/prediction", np.float64),
            ("models/full/attention/fine_grained/data", np.float16),
            ("models/full/attention/fine_grained/offsets", np.int64),
            ("gold/present", np.uint8),
            ("gold/data", np.uint8),
        ]:
            assert f[name].dtype == dtype, name
        assert f["models/full/attention/fine_grained/data"].fletcher32
        assert f["models/full/attention/fine_grained"].attrs["layout"] == "layer,head,query,key"
