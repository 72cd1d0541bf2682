"""Element stamps (store/encodings.py) and read errors that name what is damaged."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from attncmp.store import SiteSpec, StoreError, StoreReadError, StoreVersionError, open_store
from attncmp.store import encodings as E
from attncmp.store.synthetic import synthetic_spec, write_synthetic_store
from attncmp.store.validate import validate_store

SITES = (SiteSpec("fine_grained", n_layers=2, n_heads=3), SiteSpec("pool", "single", "tokens"))
ATT = "models/full/attention/fine_grained"


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    path = tmp_path_factory.mktemp("enc") / "clean.h5"
    write_synthetic_store(path, synthetic_spec(12, sites=SITES, has_gold=True), batch_size=4)
    return path


@pytest.fixture
def store(clean, tmp_path):
    path = tmp_path / "s.h5"
    shutil.copy(clean, path)
    return path


# every element store_schema.md section 1.3 gives an encoding, with the one it must carry
EXPECTED = {
    "/": E.ROOT,
    "/selection/ids": E.STRING_ARRAY,
    "/samples": E.SAMPLES,
    "/samples/id": E.STRING_ARRAY,
    "/samples/split": E.STRING_ARRAY,
    "/samples/meta/formula": E.STRING_ARRAY,
    "/nodes": E.ITEMS,
    "/nodes/label": E.STRING_ARRAY,
    "/tokens": E.ITEMS,
    "/tokens/text": E.STRING_ARRAY,
    "/models/full": E.MODEL,
    "/models/no_middle": E.MODEL,
    "/models/full/attention/fine_grained": E.ATTENTION,
    "/models/full/attention/pool": E.ATTENTION,
    "/models/no_middle/attention/fine_grained": E.ATTENTION,
    "/models/no_middle/attention/pool": E.ATTENTION,
    "/gold": E.GOLD,
}


def test_writer_stamps_exactly_the_elements_of_the_spec(clean):
    found = {}
    with h5py.File(clean, "r") as f:
        found["/"] = E.read_stamp(f)

        def visit(name, obj):
            t, v = E.read_stamp(obj)
            if t is not None or v is not None:
                found["/" + name] = (t, v)

        f.visititems(visit)
    assert found == {k: tuple(v) for k, v in EXPECTED.items()}


@pytest.mark.parametrize("element", [ATT, "tokens/text", "samples", "gold", "models/no_middle"])
def test_newer_major_element_is_refused_with_upgrade_message(store, element):
    with h5py.File(store, "r+") as f:
        f[element].attrs["encoding-version"] = "2.0"
    with pytest.raises(StoreVersionError) as e:
        open_store(store)
    msg = str(e.value)
    assert f"/{element}" in msg and "2.0" in msg and "upgrade attncmp" in msg, msg
    assert "\n" not in msg
    report = validate_store(store)
    enc = [p for p in report.problems if p.kind == "encoding"]
    assert enc and all("upgrade attncmp" in p.message for p in enc), report.summary()
    assert enc[0].path == f"/{element}"


def test_newer_minor_element_is_read(store):
    with h5py.File(store, "r+") as f:
        f[ATT].attrs["encoding-version"] = "1.7"
    with open_store(store) as st:
        assert st.n_samples == 12
        st.attention("full", "fine_grained", 0)
    assert validate_store(store).ok


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda a: a.__delitem__("encoding-type"), "missing encoding-type"),
        (lambda a: a.__setitem__("encoding-type", "dense-attention"), "'dense-attention'"),
        (lambda a: a.__setitem__("encoding-version", "one"), "not 'MAJOR.MINOR'"),
    ],
)
def test_missing_foreign_or_malformed_stamp_is_one_line(store, change, words):
    with h5py.File(store, "r+") as f:
        change(f[ATT].attrs)
    with pytest.raises(StoreError) as e:
        open_store(store)
    msg = str(e.value)
    assert not isinstance(e.value, StoreVersionError)
    assert f"/{ATT}" in msg and words in msg and "attncmp store validate" in msg, msg
    assert "\n" not in msg


def test_check_and_problem_agree_on_hand_built_elements(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        g = E.create_group(f, "a", E.ATTENTION)
        assert E.read_stamp(g) == ("ragged-attention", "1.0")
        assert E.stamp_problem(g, E.ATTENTION) is None
        E.check(g, E.ATTENTION)
        p = E.stamp_problem(g, E.GOLD)
        assert p is not None and not p.newer and "'ragged-attention'" in p.message
        g.attrs["encoding-version"] = b"3.1"  # bytes attributes (other writers) are read too
        assert E.stamp_problem(g, E.ATTENTION).newer
        g.attrs["encoding-version"] = "0.9"
        assert "older" in E.stamp_problem(g, E.ATTENTION).message


def _corrupt_chunk(path, dataset, chunk=0):
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(chunk)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        b = fh.read(1)
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(bytes([b[0] ^ 0xFF]))


def test_checksum_failure_names_dataset_model_site_and_samples(store):
    _corrupt_chunk(store, f"{ATT}/data")
    with open_store(store) as st:
        st.attention("full", "pool", 3)  # other datasets still read
        with pytest.raises(StoreReadError) as e:
            list(st.iter_chunks("fine_grained", chunk_samples=5))
    msg = str(e.value)
    assert "\n" not in msg
    for part in (
        str(store),
        f"/{ATT}/data",
        "model 'full'",
        "site 'fine_grained'",
        "5 samples 's0000' .. 's0004'",
        "damaged: 's0000'",
        "Fletcher-32",
        f"attncmp store validate {store}",
    ):
        assert part in msg, (part, msg)


def test_checksum_failure_in_a_sample_column_names_the_dataset(store):
    _corrupt_chunk(store, "models/no_middle/prediction")
    with open_store(store) as st, pytest.raises(StoreReadError) as e:
        st.prediction_array("no_middle")
    assert "/models/no_middle/prediction" in str(e.value)
    assert "attncmp store validate" in str(e.value)


def test_checksum_failure_in_the_index_is_refused_at_open(store):
    _corrupt_chunk(store, "samples/n_tokens")
    with pytest.raises(StoreReadError) as e:
        open_store(store)
    assert "/samples/n_tokens" in str(e.value)
    # the sample index is what every reader needs: validate names the same dataset
    report = validate_store(store)
    assert any(p.path == "/samples/n_tokens" for p in report.problems), report.summary()


def test_damaged_samples_are_located_among_many_chunks(tmp_path):
    """With several chunks, only the samples whose blocks touch the damaged chunk are named."""
    path = tmp_path / "big.h5"
    spec = synthetic_spec(200, sites=(SiteSpec("fine_grained", n_layers=4, n_heads=16),))
    write_synthetic_store(path, spec, batch_size=50)
    with h5py.File(path, "r") as f:
        ds = f[f"{ATT}/data"]
        assert ds.id.get_num_chunks() >= 3
        off = f[f"{ATT}/offsets"][:]
        chunk = ds.chunks[0]
    _corrupt_chunk(path, f"{ATT}/data", chunk=1)
    lo, hi = chunk, 2 * chunk
    touching = np.nonzero((off[:-1] < hi) & (off[1:] > lo))[0]
    assert 0 < touching[0] and touching[-1] < 199  # a chunk in the middle
    with open_store(path) as st, pytest.raises(StoreReadError) as e:
        st.read_site("fine_grained", np.arange(200))
    msg = str(e.value)
    assert f"({len(touching)} samples)" in msg, msg
    assert f"damaged: 's{touching[0]:04d}'" in msg, msg
