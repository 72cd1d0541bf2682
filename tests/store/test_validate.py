"""validate_store: each kind of damage gives its own specific problem, never a traceback."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import replace

import h5py
import numpy as np
import pytest
from attncmp.store import (
    SiteSpec,
    StoreConfigMismatch,
    StoreError,
    StoreVersionError,
    StoreWriter,
    open_store,
)
from attncmp.store.synthetic import synthetic_spec, write_synthetic_store
from attncmp.store.validate import PROBLEM_KINDS, validate_store

ATT = "/models/full/attention/fine_grained"
SITES = (SiteSpec("fine_grained", n_layers=2, n_heads=3),)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A valid closed store (10 samples, 2 models, gold); tests damage copies of it."""
    path = tmp_path_factory.mktemp("clean") / "clean.h5"
    spec = synthetic_spec(10, sites=SITES, has_gold=True)
    write_synthetic_store(path, spec, batch_size=4)
    return path, spec


@pytest.fixture
def store(clean, tmp_path):
    path = tmp_path / "s.h5"
    shutil.copy(clean[0], path)
    return path


def _only(report, kind):
    """The report's problems, all of which must be of ``kind``."""
    assert not report.ok, report.summary()
    kinds = {p.kind for p in report.problems}
    assert kinds == {kind}, report.summary()
    return report.problems


def test_clean_store_is_valid(clean):
    report = validate_store(clean[0])
    assert report.ok, report.summary()
    assert report.n_samples == 10 and report.n_planned == 10
    assert report.rows_checked > 0 and report.chunks_read > 0
    assert "VALID" in report.summary()


@pytest.mark.parametrize("dataset", [f"{ATT}/data", "/tokens/text/data", "/samples/target"])
def test_flipped_bytes_inside_a_compressed_chunk_is_a_checksum_error(store, dataset):
    with h5py.File(store, "r") as f:
        info = f[dataset].id.get_chunk_info(0)
    assert info.size > 16
    with open(store, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        raw = fh.read(4)
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(bytes(b ^ 0xFF for b in raw))
    report = validate_store(store)
    (p,) = _only(report, "checksum")
    assert p.path == dataset
    assert "checksum" in p.message.lower()
    assert f"{dataset}:" in report.summary()


def test_truncated_file(store):
    os.truncate(store, os.path.getsize(store) // 2)
    (p,) = _only(validate_store(store), "open")
    assert "truncated" in p.message
    with pytest.raises(StoreError, match="truncated"):
        open_store(store)


def test_not_hdf5_and_not_a_store(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5 at all")
    (p,) = _only(validate_store(junk), "open")
    assert "not an HDF5 file" in p.message
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("x", data=[1, 2, 3])
    (p,) = _only(validate_store(other), "not-a-store")
    assert "not an attncmp store" in p.message
    with pytest.raises(StoreError, match="not an attncmp store"):
        open_store(other)
    (p,) = _only(validate_store(tmp_path / "missing.h5"), "open")
    assert "no such file" in p.message


def test_missing_dataset(store):
    with h5py.File(store, "r+") as f:
        del f["models/no_middle/prediction"]
    (p,) = _only(validate_store(store), "structure")
    assert p.path == "/models/no_middle/prediction"
    assert "missing" in p.message


def test_missing_root_attribute_and_encoding_stamp(store):
    with h5py.File(store, "r+") as f:
        del f.attrs["fingerprint"]
        del f["tokens"].attrs["encoding-type"]
    report = validate_store(store)
    kinds = sorted(p.kind for p in report.problems)
    assert kinds == ["encoding", "structure"], report.summary()
    assert any("'fingerprint'" in p.message for p in report.problems)
    assert any(p.path == "/tokens" for p in report.problems if p.kind == "encoding")


def test_offsets_that_disagree_with_the_shape(store):
    with h5py.File(store, "r+") as f:
        off = f[f"{ATT}/offsets"]
        off[3] = off[3] + 1
    (p,) = _only(validate_store(store), "offsets")
    assert p.path == f"{ATT}/offsets"
    assert p.sample_id == "s0002"
    assert p.count == 2
    assert "disagrees with their shape" in p.message


def test_decreasing_offsets_and_nonzero_start(store):
    with h5py.File(store, "r+") as f:
        f["tokens/offsets"][4] = 0
        f["nodes/offsets"][0] = 1
    report = validate_store(store)
    probs = _only(report, "offsets")
    by_path = {p.path: p for p in probs}
    assert "decrease" in by_path["/tokens/offsets"].message
    assert "offsets[0] is 1" in by_path["/nodes/offsets"].message


def test_duplicate_ids(store):
    with h5py.File(store, "r+") as f:
        data, off = f["samples/id/data"], f["samples/id/offsets"]
        first = data[off[0] : off[1]]
        data[off[1] : off[2]] = first  # sample 1 now has sample 0's id
    (p,) = _only(validate_store(store), "ids")
    assert p.sample_id == "s0000" and p.count == 1
    assert p.message == "1 sample id(s) are committed more than once (first: 's0000')"


def test_nan_rows(store):
    with h5py.File(store, "r+") as f:
        off = f[f"{ATT}/offsets"][:]
        f[f"{ATT}/data"][off[3] + 1] = np.nan
    (p,) = _only(validate_store(store), "nan")
    assert p.path == f"{ATT}/data" and p.sample_id == "s0003"
    assert p.count == 1
    assert "NaN" in p.message and "'s0003'" in p.message


def test_rows_not_summing_to_one(store, clean):
    with h5py.File(store, "r+") as f:
        off = f[f"{ATT}/offsets"][:]
        n_nodes = f["samples/n_nodes"][:]
        ds = f[f"{ATT}/data"]
        ds[off[4] : off[5]] = ds[off[4] : off[5]] * 0.5
        k = int(f["samples/n_tokens"][4])
        first = ds[off[4] : off[4] + k].astype(np.float64).sum()  # the halved first row
    (p,) = _only(validate_store(store), "row-sum")
    assert p.sample_id == "s0004"
    assert p.count == 2 * 3 * int(n_nodes[4])  # every row of the sample: layers x heads x nodes
    assert abs(first - 0.5) < 0.02
    assert "do not sum to 1" in p.message
    said = re.search(r"first row sums to ([0-9.e+-]+)", p.message)
    assert said and float(said.group(1)) == pytest.approx(first, abs=1e-4)


def test_negative_weights(store):
    with h5py.File(store, "r+") as f:
        off = f[f"{ATT}/offsets"][:]
        ds = f[f"{ATT}/data"]
        block = ds[off[6] : off[7]]
        k = f["samples/n_tokens"][6]
        block[0], block[1 % k] = -block[0], block[1 % k] + 2 * block[0]  # same row sum
        ds[off[6] : off[7]] = block
    report = validate_store(store)
    probs = [p for p in report.problems if p.kind == "negative"]
    assert len(probs) == 1 and probs[0].sample_id == "s0006", report.summary()


def test_gold_values_and_sizes(store):
    with h5py.File(store, "r+") as f:
        f["gold/present"][1] = 2
    report = validate_store(store)
    assert {p.kind for p in report.problems} >= {"gold"}, report.summary()


def test_short_prediction_dataset_names_the_model(store):
    with h5py.File(store, "r+") as f:
        f["models/no_middle/prediction"].resize(7, axis=0)
    (p,) = _only(validate_store(store), "count")
    assert "'no_middle'" in p.message and "every model must cover every sample" in p.message


def test_newer_major_schema_version_names_both_versions(store):
    with h5py.File(store, "r+") as f:
        f.attrs["schema_version"] = "2.0"
    (p,) = _only(validate_store(store), "version")
    assert "2.0" in p.message and "1.0" in p.message
    with pytest.raises(StoreVersionError, match=r"2\.0.*newer.*1\.0.*upgrade attncmp"):
        open_store(store)


def test_newer_minor_version_is_accepted(store):
    with h5py.File(store, "r+") as f:
        f.attrs["schema_version"] = "1.7"
    assert validate_store(store).ok
    with open_store(store) as st:
        assert st.n_samples == 10


def test_appending_with_a_different_configuration_names_the_setting(store, clean):
    spec = clean[1]
    with pytest.raises(StoreConfigMismatch, match=r"dtype is 'float16' in the store but 'float32'"):
        StoreWriter.open(store, replace(spec, dtype="float32"))
    with pytest.raises(StoreConfigMismatch, match=r"config\.batch_size"):
        StoreWriter.open(store, replace(spec, config={**spec.config, "batch_size": 64}))
    with pytest.raises(StoreConfigMismatch, match=r"sites"):
        StoreWriter.open(store, replace(spec, sites=(SiteSpec("fine_grained", n_heads=8),)))
    # nothing was lost by the refused attempts
    assert validate_store(store).ok


def test_shards_validated_together(tmp_path):
    spec = synthetic_spec(9, sites=SITES)
    paths = []
    for i in range(3):
        p = tmp_path / f"shard{i}.h5"
        write_synthetic_store(p, replace(spec, shard_index=i, shard_count=3))
        paths.append(p)
    report = validate_store(paths)
    assert report.ok, report.summary()
    assert report.n_samples == 9 and report.n_planned == 9
    # two shards only: valid but partial
    report = validate_store(paths[:2])
    assert report.ok and report.n_samples == 6
    assert any("partial" in n for n in report.notes)
    # the same shard twice: overlapping ids
    twin = tmp_path / "twin.h5"
    shutil.copy(paths[0], twin)
    report = validate_store([paths[0], twin])
    assert {p.kind for p in report.problems} == {"shard"}
    assert any("more than one file" in p.message for p in report.problems)
    # a shard of another run
    other = tmp_path / "other.h5"
    write_synthetic_store(other, replace(spec, shard_index=1, shard_count=3, dtype="float32"))
    report = validate_store([paths[0], other])
    (p,) = _only(report, "shard")
    assert "dtype" in p.message


def test_ids_outside_the_shard_block(tmp_path):
    spec = replace(synthetic_spec(9, sites=SITES), shard_index=0, shard_count=3)
    p = tmp_path / "s.h5"
    write_synthetic_store(p, spec, ids=spec.selection_ids[:4])  # block 0 is s0000..s0002
    (prob,) = _only(validate_store(p), "shard")
    assert prob.sample_id == "s0003"


def test_report_summary_counts_problems_by_kind(store):
    with h5py.File(store, "r+") as f:
        off = f[f"{ATT}/offsets"][:]
        ds = f[f"{ATT}/data"]
        for s in (1, 2, 8):
            ds[off[s]] = np.nan
    report = validate_store(store)
    (p,) = _only(report, "nan")
    assert p.count == 3
    text = report.summary()
    assert "INVALID: 1 problem(s): nan 1" in text
    assert "3 attention row(s) in 3 sample(s)" in text
    assert report.counts_by_kind() == {"nan": 1}


def test_random_byte_corruption_never_raises(clean, tmp_path):
    """Damage anywhere in the file (metadata or data) gives a report, never a traceback; the
    reader either opens the file or raises a one-line StoreError."""
    rng = np.random.default_rng(7)
    size = os.path.getsize(clean[0])
    invalid = 0
    for trial in range(25):
        path = tmp_path / f"fuzz{trial}.h5"
        shutil.copy(clean[0], path)
        with open(path, "r+b") as fh:
            for _ in range(3):
                fh.seek(int(rng.integers(0, size)))
                fh.write(bytes([int(rng.integers(0, 256))]))
        report = validate_store(path)
        invalid += not report.ok
        assert all(p.kind in PROBLEM_KINDS for p in report.problems)
        try:
            open_store(path).close()
        except StoreError as e:
            assert "\n" not in str(e)
    assert invalid >= 15  # most random damage is detected (the rest hits unused bytes)


def test_models_disagreeing_on_a_site_shape(store):
    with h5py.File(store, "r+") as f:
        f["models/no_middle/attention/fine_grained"].attrs["n_heads"] = 6
    report = validate_store(store)
    kinds = {p.kind for p in report.problems}
    assert "structure" in kinds and "offsets" in kinds, report.summary()
    assert any("'no_middle' has" in p.message and "n_heads=6" in p.message for p in report.problems)
