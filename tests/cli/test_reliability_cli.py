"""Reliability from the command line: damaged stores, failed and killed runs, full disks and
concurrent writers end in one line, and nothing already written is lost."""

from __future__ import annotations

import h5py
import pytest
from attncmp import cli
from attncmp.store import SiteSpec
from attncmp.store.synthetic import synthetic_spec, write_synthetic_store
from click.testing import CliRunner

ATT = "models/full/attention/fine_grained"


def run(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def _one_line_error(r) -> str:
    assert r.exit_code != 0, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1, r.output
    assert lines[0].startswith("Error: "), r.output
    return lines[0]


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "store.h5"
    spec = synthetic_spec(12, sites=(SiteSpec("fine_grained", n_layers=1, n_heads=2),))
    write_synthetic_store(path, spec, batch_size=4)
    return path


def _corrupt_chunk(path, dataset, chunk=0):
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(chunk)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        b = fh.read(1)
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(bytes([b[0] ^ 0xFF]))


def test_analyze_on_a_corrupted_attention_chunk_is_one_line(store, tmp_path):
    _corrupt_chunk(store, f"{ATT}/data")
    r = run("analyze", store, "--save-dir", tmp_path / "out", "--n-boot", "100", "-q")
    line = _one_line_error(r)
    for part in (f"/{ATT}/data", "model 'full'", "site 'fine_grained'", "damaged: 's0000'"):
        assert part in line, line
    assert f"attncmp store validate {store}" in line
    # and validate lists the same dataset
    r = run("store", "validate", store)
    assert r.exit_code != 0 and f"/{ATT}/data" in r.output, r.output
