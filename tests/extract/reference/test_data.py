"""The shipped FreeSolv graph file: content sanity, and exact reproducibility from the CSV."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from attncmp.extract.reference.data import (
    BOND_TYPES,
    DATA_FILE,
    FEATURE_NAMES,
    load_freesolv,
    make_split,
)

REPO = Path(__file__).resolve().parents[3]
CSV = REPO.parent / "shared" / "data" / "freesolv.csv"


def test_shipped_file_has_642_sane_molecules():
    mols = load_freesolv()
    assert len(mols) == 642
    assert [m.id for m in mols] == [f"FS{i:04d}" for i in range(642)]
    for m in mols:
        n = m.n_atoms
        assert 1 <= n <= 24, m.id
        assert (
            m.atom_features.shape == (n, len(FEATURE_NAMES)) and m.atom_features.dtype == np.float32
        )
        assert m.bonds.shape == (len(m.bond_types), 2)
        if len(m.bonds):
            assert m.bonds.min() >= 0 and m.bonds.max() < n
            assert (m.bonds[:, 0] < m.bonds[:, 1]).all()
        assert set(m.bond_types) <= set(BOND_TYPES)
        assert "H" not in m.elements  # heavy atoms only
        assert -26.0 < m.target < 4.0
        assert m.name and m.smiles
        # degree feature agrees with the bond list
        degree = np.bincount(m.bonds.ravel(), minlength=n)
        np.testing.assert_array_equal(m.atom_features[:, FEATURE_NAMES.index("degree")], degree)
    by_name = {m.name: m for m in mols}
    chloro = by_name["methanesulfonyl chloride"]
    assert chloro.elements == ["C", "S", "O", "O", "Cl"] and chloro.target == pytest.approx(-4.87)
    assert by_name["ammonia"].elements == ["N"]


def test_make_split_is_seeded_and_disjoint():
    ids = [m.id for m in load_freesolv()]
    a = make_split(ids, seed=0)
    assert a == make_split(list(reversed(ids)), seed=0)
    assert a != make_split(ids, seed=1)
    assert [len(a[k]) for k in ("train", "val", "test")] == [514, 64, 64]
    assert sorted(a["train"] + a["val"] + a["test"]) == sorted(ids)
    with pytest.raises(ValueError, match="fractions"):
        make_split(ids, fractions=(0.5, 0.5, 0.5))


def test_conversion_reproduces_shipped_file():
    pytest.importorskip("rdkit")
    if not CSV.exists():
        pytest.skip(f"source CSV not found at {CSV}")
    spec = importlib.util.spec_from_file_location(
        "convert_freesolv", REPO / "scripts" / "convert_freesolv.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    regenerated = module.serialize(module.convert(CSV))
    assert regenerated == gzip.decompress(DATA_FILE.read_bytes())
