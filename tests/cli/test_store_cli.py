"""`attncmp store info / validate / merge` through click's CliRunner."""

from __future__ import annotations

import json
from dataclasses import replace

import h5py
import numpy as np
import pytest
from attncmp.cli import main
from attncmp.store import SiteSpec, open_store
from attncmp.store.synthetic import synthetic_spec, write_synthetic_store
from click.testing import CliRunner

SITES = (SiteSpec("fine_grained", n_layers=1, n_heads=2),)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    d = tmp_path_factory.mktemp("stores")
    spec = synthetic_spec(8, sites=SITES)
    single = write_synthetic_store(d / "single.h5", spec)
    shards = [
        write_synthetic_store(d / f"shard{i}.h5", replace(spec, shard_index=i, shard_count=2))
        for i in range(2)
    ]
    return d, single, shards


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_info_text_and_json(stores):
    _d, single, shards = stores
    r = run("store", "info", single)
    assert r.exit_code == 0, r.output
    assert "8 of 8 planned committed (complete)" in r.output
    assert "dense padded float32" in r.output
    r = run("store", "info", "--json", *shards)
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["n_committed"] == 8 and d["shards"] == ["0/2", "1/2"]
    assert d["ratio_vs_dense"] > 0


def test_validate_valid_store_exits_0(stores):
    r = run("store", "validate", stores[1])
    assert r.exit_code == 0, r.output
    assert "VALID: no problems found" in r.stdout


def test_validate_damaged_store_exits_1_with_summary(stores, tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(stores[1].read_bytes())
    with h5py.File(bad, "r+") as f:
        f["models/full/attention/fine_grained/data"][3] = np.nan
        del f["models/full"].attrs["provenance"]
    r = run("store", "validate", bad)
    assert r.exit_code == 1, r.output
    assert "INVALID" in r.stdout
    assert "nan 1" in r.stdout and "structure 1" in r.stdout
    assert "problem(s) found; the store is invalid" in r.stderr


def test_validate_non_store_exits_1_without_traceback(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x00" * 100)
    r = run("store", "validate", junk)
    assert r.exit_code == 1, r.output
    assert "not an HDF5 file" in r.stdout
    assert "Traceback" not in r.output


def test_info_on_a_non_store_is_one_line_error(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    r = run("store", "info", other)
    assert r.exit_code == 1, r.output
    assert r.stderr.startswith("Error: ") and "not an attncmp store" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run("store", "info", tmp_path / "missing.h5")
    assert r.exit_code == 2 and "does not exist" in r.output


def test_merge_and_its_refusals(stores, tmp_path):
    _d, single, shards = stores
    out = tmp_path / "merged.h5"
    r = run("store", "merge", out, *shards)
    assert r.exit_code == 0, r.output
    assert "merged 2 shard(s): 8 samples" in r.stdout
    with open_store(out) as a, open_store(single) as b:
        assert a.ids == b.ids
        for k in range(len(a)):
            np.testing.assert_array_equal(
                a.attention("full", "fine_grained", k), b.attention("full", "fine_grained", k)
            )
    r = run("store", "merge", out, *shards)
    assert r.exit_code == 1 and "already exists; pass --overwrite" in r.stderr
    r = run("store", "merge", "--overwrite", "--quiet", out, *shards)
    assert r.exit_code == 0, r.output
    assert "merging" not in r.stderr
    r = run("store", "merge", tmp_path / "m2.h5", shards[0])
    assert r.exit_code == 0, r.output
    assert "merged store is partial" in r.stderr
    r = run("store", "merge", tmp_path / "m3.h5", shards[0], shards[0])
    assert r.exit_code == 1 and "more than once" in r.stderr
